"""Settings of the ingress router process (`sluicegate router`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime.image_refs import ImageSourceSettings
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings

from .drift import DriftSettings
from .pii import PiiSettings
from .quota import QuotaSettings
from .routing import RoutingSettings


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    routing: RoutingSettings = RoutingSettings()
    pii: PiiSettings = PiiSettings()
    quota: QuotaSettings = QuotaSettings()
    drift: DriftSettings = DriftSettings()
    router_group_id: str = "sg.router"
    # Cancels older than this are forgotten (and tombstoned on the control topic).
    cancel_ttl_s: float = Field(default=600.0, gt=0)
    # Answer identical requests (model + inputs + parameters) from the cache for this long.
    cache_ttl_s: float = Field(default=300.0, ge=0)
    # Records taken per poll; their offsets are committed together.
    router_max_records: int = Field(default=500, ge=1)
    # `file://` images must lie under this directory (None: any readable path),
    # as for the workers (SLUICEGATE_IMAGE_ROOT sets both).
    image_root: str | None = None
    # at_least_once: idempotent producer, offsets committed after the acks;
    # exactly_once: per-partition transactions (streams/router_output.py).
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    # Transactions a record that can never be written gets before it is dead-lettered.
    max_produce_attempts: int = Field(default=3, ge=1)
    # s3:// and https:// images, as for the workers (SLUICEGATE_IMAGES__* sets both).
    images: ImageSourceSettings = ImageSourceSettings()
    # Threads for decoding, masking and tokenizing.
    router_threads: int = Field(default=1, ge=1)
