"""Settings of one worker process (`sluicegate worker`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime.image_refs import ImageSourceSettings
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings

from .batcher import BatchPolicy
from .budgets import default_policy
from .tuned import tuned_for


class TritonSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str = "127.0.0.1:8001"
    # Client deadline of one inference call, seconds.
    timeout_s: float = 60.0
    # Attempts per batch on UNAVAILABLE / DEADLINE_EXCEEDED before answering an error.
    attempts: int = Field(default=4, ge=1)
    # How inputs reach Triton: "shm" (system shared memory; Triton on this
    # host) or "grpc" (in the request message; any host).
    transport: Literal["grpc", "shm"] = "grpc"
    # Triton's admin key (its shared-memory API is restricted, docs/security.md):
    # needed by the shm transport to register regions.
    admin_key: SecretStr | None = None
    # Or a file holding it, read at start: compose shares the Triton container's
    # key through a read-only volume (the worker also reads which versions and
    # precisions Triton serves from its model-config API, restricted too).
    admin_key_file: Path | None = None

    def key(self) -> str | None:
        """The admin key: `admin_key`, else the contents of `admin_key_file`, else None."""
        if self.admin_key is not None:
            return self.admin_key.get_secret_value()
        if self.admin_key_file is None:
            return None
        try:
            return self.admin_key_file.read_text().strip() or None
        except FileNotFoundError:
            # A Triton that restricts nothing writes no key (the GPU images); one
            # that does is refused with a message naming these settings.
            return None

    # Consecutive retriable failures that open the model's circuit breaker; while
    # open the worker stops fetching and batches wait for Triton instead of failing.
    # Fewer than `attempts`, so a batch that meets a dead server waits for it.
    breaker_failures: int = Field(default=3, ge=1)
    # Seconds the breaker stays open before one probe call (doubles up to 30 s).
    breaker_cooldown_s: float = Field(default=1.0, gt=0)
    # Longest a batch waits out an outage (breaker open) before it is answered an error.
    outage_s: float = Field(default=300.0, gt=0)


class BatchSettings(BaseModel):
    """Overrides of the model x pool defaults in `workers.budgets`; None keeps the default."""

    model_config = ConfigDict(frozen=True)

    max_batch_size: int | None = Field(default=None, ge=1)
    max_queue_delay_microseconds: int | None = Field(default=None, ge=0)
    # Padded cost per batch, in the model's cost unit (tokens or pixels).
    budget: int | None = Field(default=None, ge=1)
    hard_limit: int | None = Field(default=None, ge=1)
    # Half-octave size buckets a batch member may lie from the batch's head.
    bucket_spread: int | None = Field(default=None, ge=0)
    # "budget" (default) or "count": max_batch_size + delay only, the
    # dynamic-batcher baseline the benchmark compares against.
    strategy: Literal["budget", "count"] | None = None
    # Start a partial batch at once while the backend is idle (workers/scheduler.py).
    idle_dispatch: bool | None = None
    # `sluicegate tune`'s file (workers/tuned.py); None: <state dir>/tuned-budgets.json
    # when it exists. Its values sit between the defaults and these overrides.
    tuned_file: Path | None = None


class SimulatedSettings(BaseModel):
    """The simulated accelerator (`backend: simulated`, workers/backends/simulated.py)."""

    model_config = ConfigDict(frozen=True)

    # Which card's published latency figures to run at.
    device: Literal["a100", "h100"] = "h100"
    # The file that is one simulated GPU: workers naming the same file share it
    # (their batches serialize). None: a card of this process alone.
    device_file: Path | None = None
    # Multiplies every batch's latency: a slower card for what-if sizing, or
    # batches long enough for a test to see them queue for the card.
    time_scale: float = Field(default=1.0, gt=0)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    model: str = "text-embed"
    pool: str = "cpu"
    # What runs the model: Triton over gRPC, ONNX Runtime inside this process
    # (no server), "null" (answers at once; measures the engine itself) or
    # "simulated" (a GPU modelled from published latencies; capacity planning).
    backend: Literal["triton", "onnxruntime", "null", "simulated"] = "triton"
    simulated: SimulatedSettings = SimulatedSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    triton: TritonSettings = TritonSettings()
    batch: BatchSettings = BatchSettings()
    # Consumer group; defaults to sg.worker.<model>.<pool>.
    group_id: str | None = None
    # Batches in flight to the backend at once.
    max_in_flight_batches: int = Field(default=2, ge=1)
    # Pause fetching when this many requests wait in the batcher...
    max_pending_requests: int = Field(default=256, ge=1)
    # ...or when pending plus running cost reaches this (default: 8 budgets).
    max_in_flight_cost: int | None = Field(default=None, ge=1)
    # Commit answered offsets at most this often (seconds); also on rebalance
    # and shutdown. A commit is a broker round trip: once per poll was the
    # engine's bottleneck at high rates. Bounds redelivery after a crash.
    commit_interval_s: float = Field(default=0.1, ge=0)
    # Seconds to finish in-flight batches after SIGTERM.
    shutdown_grace_s: float = 30.0
    # `file://` images must lie under this directory (None: any readable path).
    image_root: str | None = None
    # s3:// and https:// images: store, allow-list per tenant, limits (SLUICEGATE_IMAGES__*).
    images: ImageSourceSettings = ImageSourceSettings()
    # Threads for decoding, tokenizing and reading image headers.
    preprocess_threads: int = Field(default=2, ge=1)
    # at_least_once: results may repeat after a crash (same request_id, same bytes
    # but produced_ms); exactly_once: transactional, read results `read_committed`.
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # exactly_once: the broker aborts a transaction left open this long (a dead worker's).
    transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    # The consumer leaves its group if the poll loop stalls this long (batches run
    # beside the loop, so a slow batch does not stall it).
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    # A worker that dies without leaving (kill -9, a lost host) stays in its group
    # this long; the router stops routing to a pool with no member left
    # (streams/failover.py). aiokafka's default; the a100 stand-in runs 6 s
    # (the brokers' default minimum) for a faster failover.
    session_timeout_ms: int = Field(default=10_000, ge=1000)

    # Crash-loop quarantine: a record that was running each time this many workers
    # died is answered `poison` and dead-lettered instead of run (0: off).
    quarantine_after: int = Field(default=3, ge=0)

    def policy(self) -> BatchPolicy:
        """The model x pool default, then `sluicegate tune`'s file, then these overrides."""
        base = default_policy(self.model, self.pool)
        tuned = tuned_for(self.model, self.pool, self.batch.tuned_file)
        if tuned is not None:
            base = replace(
                base,
                budget=tuned.budget,
                hard_limit=max(base.hard_limit, tuned.budget),
                max_batch_size=tuned.max_batch_size,
                max_queue_delay_microseconds=tuned.max_queue_delay_microseconds,
            )
        overrides = {
            k: v for k, v in self.batch.model_dump(exclude={"tuned_file"}).items() if v is not None
        }
        if "hard_limit" not in overrides:
            # A budget raised past the default hard limit raises the limit with it.
            overrides["hard_limit"] = max(base.hard_limit, overrides.get("budget", 0))
        return replace(base, **overrides)

    def group(self) -> str:
        return self.group_id or f"sg.worker.{self.model}.{self.pool}"
