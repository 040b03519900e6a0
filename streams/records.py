"""Records the telemetry rollup process publishes on `sg.telemetry.rollup`.

Three kinds share the topic, told apart by `kind`: a window of one model x
pool x version (`window`), a shadow-vs-primary comparison (`shadow_diff`)
and an input drift alarm (`drift`). msgpack maps, like every other record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from sluicegate.schemas.codec import _unpack, _validate


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Quantiles(_Out):
    # Milliseconds; from a DDSketch with 1 % relative accuracy.
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0


class WindowRollup(_Out):
    """One tumbling window of one model x pool x version."""

    kind: Literal["window"] = "window"
    model: str
    pool: str
    version: str
    window_s: int
    start_ms: int
    end_ms: int
    requests: int = 0
    ok: int = 0
    errors: int = 0
    expired: int = 0
    rejected: int = 0
    batches: int = 0
    # Requests answered per second over the window.
    throughput_rps: float = 0.0
    # Real cost (tokens or pixels, the model's unit) the pool got through per second.
    cost_per_s: float = 0.0
    mean_batch_size: float = 0.0
    # 1 - real cost / padded cost, over the window's batches.
    padding_waste: float = 0.0
    # Per request: queue wait + compute, and queue wait alone.
    latency_ms: Quantiles = Quantiles()
    queue_ms: Quantiles = Quantiles()
    error_rate: float = 0.0
    expired_rate: float = 0.0
    rejected_rate: float = 0.0
    # Requests on the pool's work topic not yet consumed, times the window's mean
    # cost per request (the model's unit); -1 when it could not be read.
    lag_cost: float = -1.0


class ShadowDiff(_Out):
    """Primary vs shadow results of the same requests, over one window."""

    kind: Literal["shadow_diff"] = "shadow_diff"
    model: str
    primary_version: str
    shadow_version: str
    start_ms: int
    end_ms: int
    pairs: int
    # Pairs whose statuses agree.
    status_agreement: float
    # Embeddings: mean cosine similarity; texts: mean similarity ratio in [0, 1].
    mean_similarity: float
    min_similarity: float
    # Shadow latency minus primary latency, mean, milliseconds (compute + queue).
    mean_latency_delta_ms: float


class DriftEvent(_Out):
    """An input statistic moved away from its baseline by more than the threshold."""

    kind: Literal["drift"] = "drift"
    model: str
    statistic: str  # e.g. text_tokens, image_pixels, image_aspect
    # Population stability index of the recent window against the baseline.
    psi: float
    threshold: float
    baseline_median: float
    recent_median: float
    baseline_count: int
    recent_count: int
    ts_ms: int


class RollbackEvent(_Out):
    """A route guard tripped and the rollups rolled the route back by themselves."""

    kind: Literal["rollback"] = "rollback"
    model: str
    version: str  # the canary (or shadow) version that broke the guard
    guard: Literal["error_rate", "p99_ratio", "shadow_similarity"]
    observed: float
    threshold: float
    from_revision: int  # the route that was live
    to_revision: int  # the rollback the rollups published
    pool: str = ""  # the window's pool ("" for a shadow diff)
    window_start_ms: int
    window_end_ms: int
    ts_ms: int
    reason: str  # one line for people: what broke, by how much


RollupRecord = WindowRollup | ShadowDiff | DriftEvent | RollbackEvent
_KINDS: dict[str, type[RollupRecord]] = {
    "window": WindowRollup,
    "shadow_diff": ShadowDiff,
    "drift": DriftEvent,
    "rollback": RollbackEvent,
}


def decode_rollup(
    value: bytes | None, hdrs: Sequence[tuple[str, bytes]] | None = None
) -> RollupRecord:
    """Decode one `sg.telemetry.rollup` record; raises `WireError`, or ValueError on a bad kind."""
    obj = _unpack(value, hdrs)
    kind = obj.get("kind")
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"unknown rollup kind {kind!r}; expected one of {sorted(_KINDS)}")
    return _validate(model, obj)
