"""Control records on the compacted `sg.control` topic.

Keys say what a record is about, so compaction keeps the latest of each:

    route/<model>         RouteSpec   which versions serve a model, canary weights, shadow
    cancel/<request_id>   Cancel      drop the request if it has not run yet

Routers and workers read the topic from the beginning and keep the latest
value per key; an empty value (a tombstone) deletes the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .codec import _unpack, _validate
from .models import ModelName, RequestId
from .topics import Pool

ROUTE_PREFIX = "route/"
CANCEL_PREFIX = "cancel/"
Weight = Annotated[float, Field(gt=0, le=1_000_000)]


class _Control(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouteGuards(_Control):
    """Thresholds the telemetry rollups watch per window while a route is live.

    A guard trips when a canary version (one the route's `previous` did not
    serve) breaks it over a window with at least `min_requests` requests (or
    shadow pairs); the rollups then publish the rollback (the `previous`
    spec, as `sluicegate route rollback` would) and a `rollback` event saying why.
    """

    # Errors / requests of a canary version in one window.
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    # Canary p99 latency / the primary version's p99, same model and pool.
    max_p99_ratio: float | None = Field(default=None, gt=0)
    # Mean similarity of shadow results to their primaries (cosine, text ratio).
    min_shadow_similarity: float | None = Field(default=None, ge=0, le=1)
    # Evidence a window needs before a guard may trip on it.
    min_requests: int = Field(default=20, ge=1)


class RouteSpec(_Control):
    """How the router serves one model. Weights are relative, not percentages."""

    model: ModelName
    # version -> weight; a request goes to a version with probability weight / sum.
    versions: dict[str, Weight] = Field(min_length=1)
    # A version that gets a copy of (a fraction of) the traffic; its results go
    # to sg.shadow.results, never to the client.
    shadow: str | None = None
    shadow_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    # Pools this model may run on; None: every pool the router knows.
    pools: tuple[Pool, ...] | None = None
    # Increases with every change; rollback restores `previous` with a new revision.
    revision: int = Field(default=1, ge=1)
    # Unix epoch ms when the spec was written.
    ts_ms: int = Field(default=0, ge=0)
    # The spec this one replaced: what `sluicegate route rollback` restores.
    previous: RouteSpec | None = None
    # Automatic rollback thresholds (watched by the telemetry rollups); None: none.
    guards: RouteGuards | None = None

    @field_validator("versions")
    @classmethod
    def _version_names(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if not name or len(name) > 32 or not name.replace(".", "").replace("-", "").isalnum():
                raise ValueError(f"version {name!r}: use 1-32 letters, digits, '.' or '-'")
        return value

    def key(self) -> bytes:
        return (ROUTE_PREFIX + self.model).encode()


class Cancel(_Control):
    """Answer `request_id` with `rejected: cancelled` wherever it has not run yet."""

    request_id: RequestId
    # Unix epoch ms of the cancel; readers forget cancels older than their TTL.
    ts_ms: int = Field(ge=0)

    def key(self) -> bytes:
        return (CANCEL_PREFIX + self.request_id).encode()


def decode_control(
    key: bytes | None, value: bytes | None, hdrs: Sequence[tuple[str, bytes]] | None = None
) -> tuple[str, RouteSpec | Cancel | None]:
    """(key, record) of one control record; record is None for a tombstone.

    Raises `WireError` for a value that is not a valid control record and
    `ValueError` for a key with an unknown prefix.
    """
    name = (key or b"").decode(errors="replace")
    if name.startswith(ROUTE_PREFIX):
        model: type[RouteSpec] | type[Cancel] = RouteSpec
    elif name.startswith(CANCEL_PREFIX):
        model = Cancel
    else:
        raise ValueError(f"control key {name!r} is neither route/<model> nor cancel/<id>")
    if not value:
        return name, None
    return name, _validate(model, _unpack(value, hdrs))


# Headers the router adds to what it forwards to a work topic: the version the
# worker should run (a worker serving several versions picks by it), the pool
# and precision chosen, and on a shadow copy the primary version it shadows.
VERSION_HEADER = "sg-model-version"
POOL_HEADER = "sg-pool"
PRECISION_HEADER = "sg-precision"
SHADOW_OF_HEADER = "sg-shadow-of"
