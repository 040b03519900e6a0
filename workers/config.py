"""Settings of one worker process (`sluicegate worker`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.schemas.settings import KafkaSettings, TopicSettings

from .batcher import BatchPolicy


class TritonSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str = "127.0.0.1:8001"
    # Client deadline of one inference call, seconds.
    timeout_s: float = 60.0
    # Attempts per batch on UNAVAILABLE / DEADLINE_EXCEEDED before answering an error.
    attempts: int = Field(default=4, ge=1)


class BatchSettings(BaseModel):
    """Per-model budgets; defaults below are for the local CPU pool."""

    model_config = ConfigDict(frozen=True)

    max_batch_size: int = Field(default=16, ge=1)
    max_queue_delay_microseconds: int = Field(default=20_000, ge=0)
    # Padded cost per batch; None means the model's default for this pool.
    budget: int | None = Field(default=None, ge=1)
    hard_limit: int | None = Field(default=None, ge=1)


# Budgets for the local CPU pool (padded tokens / padded pixels per batch).
CPU_BUDGETS: dict[str, tuple[int, int]] = {
    "text-embed": (4_096, 8_192),
    "ocr": (8_000_000, 16_000_000),
    "doc-match": (8_000_000, 16_000_000),
}


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    model: str = "text-embed"
    pool: str = "cpu"
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    triton: TritonSettings = TritonSettings()
    batch: BatchSettings = BatchSettings()
    # Consumer group; defaults to sg.worker.<model>.<pool>.
    group_id: str | None = None
    # Batches in flight to the backend at once.
    max_in_flight_batches: int = Field(default=2, ge=1)
    # Pause fetching when this many requests wait in the batcher.
    max_pending_requests: int = Field(default=256, ge=1)
    # Seconds to finish in-flight batches after SIGTERM.
    shutdown_grace_s: float = 30.0
    # Threads for decoding, tokenizing and reading image headers.
    preprocess_threads: int = Field(default=2, ge=1)

    def policy(self) -> BatchPolicy:
        budget, hard = CPU_BUDGETS.get(self.model, (4_096, 8_192))
        budget = self.batch.budget or budget
        return BatchPolicy(
            max_batch_size=self.batch.max_batch_size,
            max_queue_delay_microseconds=self.batch.max_queue_delay_microseconds,
            budget=budget,
            hard_limit=max(self.batch.hard_limit or hard, budget),
        )

    def group(self) -> str:
        return self.group_id or f"sg.worker.{self.model}.{self.pool}"
