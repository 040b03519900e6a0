"""The routing decision, shared by the ingress router and the client SDK.

`decide()` picks, for one request: the pool (by the model's allowed pools,
pool health and observed capacity from the telemetry rollups, and the
request's size: small requests go to CPU, as hybrid CPU/GPU scheduling
does), the precision the pool runs it at, the model version (weighted,
sticky canary) and the shadow version that gets a copy. Pure: no I/O, no
clock of its own. The router calls it for every record of `sg.requests`; a
producer that wants to skip the router calls `route()` and writes straight
to the work topic it names.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.control import RouteSpec
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import POOLS, Pool

from .canary import pick_version, shadow_version, unit_point
from .health import PoolHealth, PoolState

Precision = Literal["fp32", "fp16", "bf16", "int8"]
_BY_POOL: dict[str, Precision] = {"a100": "fp16", "mi200": "bf16", "cpu": "fp32"}
_LONG_INPUTS: dict[str, Precision] = {"a100": "bf16"}


class PrecisionPolicy(BaseModel):
    """The numeric precision a pool runs a request at.

    Each pool has a default (fp16 on A100, bf16 on MI200, fp32 on CPU).
    Requests of at least `long_input_tokens` tokens switch to the pool's
    `long_inputs` precision where one is set: fp16's narrow exponent range
    overflows in attention over long sequences, bf16 keeps fp32's range.
    """

    model_config = ConfigDict(frozen=True)

    by_pool: dict[str, Precision] = Field(default_factory=lambda: dict(_BY_POOL))
    long_input_tokens: int = Field(default=192, ge=1)
    long_inputs: dict[str, Precision] = Field(default_factory=lambda: dict(_LONG_INPUTS))

    def choose(self, pool: str, cost: Cost | None) -> Precision:
        if cost is not None and cost.tokens >= self.long_input_tokens and pool in self.long_inputs:
            return self.long_inputs[pool]
        return self.by_pool.get(pool, "fp32")


class RoutingSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Pools that exist, in preference order when nothing else decides.
    pools: tuple[Pool, ...] = ("cpu",)
    # Model capability: the pools a model is deployed on (absent: every pool).
    capable: dict[str, tuple[Pool, ...]] = Field(default_factory=dict)
    # Per model: requests costing at most this (the model's unit) are "small"
    # and run on CPU when a healthy CPU pool is offered.
    small_cost: dict[str, int] = Field(
        default_factory=lambda: {"text-embed": 48, "ocr": 160_000, "doc-match": 200_000}
    )
    # A pool with more errors + expiries than this share of its last window is unhealthy.
    max_error_rate: float = Field(default=0.2, ge=0, le=1)
    # Rollups older than this say nothing about a pool's health.
    health_ttl_s: float = Field(default=60.0, gt=0)
    # Capacity credited to a pool with no rollups yet, so it still gets traffic
    # (and so produces the telemetry that tells how healthy it is).
    unknown_capacity: float = Field(default=1.0, gt=0)
    precision: PrecisionPolicy = PrecisionPolicy()
    # The router describes the consumer groups this often to learn which pools
    # have a live consumer (streams/failover.py); 0 turns the watch off.
    watch_interval_s: float = Field(default=1.0, ge=0)
    # A consumer census older than this says nothing (the watch is failing).
    liveness_ttl_s: float = Field(default=30.0, gt=0)


@dataclass(frozen=True, kw_only=True)
class Decision:
    topic: str
    pool: Pool
    version: str
    precision: Precision
    # Version that also gets a copy (answered on sg.shadow.results), or None.
    shadow: str | None = None


@functools.lru_cache(maxsize=64)
def default_spec(model: str) -> RouteSpec:
    """The route of a model nobody has configured: its catalog version, no canary."""
    return RouteSpec(model=model, versions={lookup(model).version: 1.0})


_UNKNOWN = PoolState(health="unknown")


def choose_pool(
    model: str,
    *,
    key: str,
    cost: Cost | None,
    candidates: Sequence[Pool],
    states: Mapping[Pool, PoolState],
    settings: RoutingSettings,
) -> Pool:
    """Small requests to a healthy CPU pool; the rest to healthy GPU pools, weighted
    by observed capacity (sticky per key); if nothing is healthy, the first candidate.

    A pool whose work topic has no live consumer is never chosen while
    another candidate has one (or is not known to lack one): with no pool
    consumed at all, the choice falls back to the rollups alone.
    """
    served = [p for p in candidates if states[p].consumers != "dead"]
    candidates = served or candidates
    healthy = [p for p in candidates if states[p].health != "unhealthy"]
    if not healthy:
        return candidates[0]  # degrade rather than drop: the worker answers every request
    small = cost is not None and cost.units <= settings.small_cost.get(model, 0)
    if "cpu" in healthy and (small or healthy == ["cpu"]):
        return "cpu"
    accelerated = [p for p in healthy if p != "cpu"] or healthy
    weights = [
        states[p].capacity if states[p].health == "healthy" else settings.unknown_capacity
        for p in accelerated
    ]
    total = sum(weights)
    if total <= 0:
        return accelerated[0]
    point = unit_point(key, salt=f"pool/{model}") * total
    edge = 0.0
    for pool, weight in zip(accelerated, weights, strict=True):
        edge += weight
        if point < edge:
            return pool
    return accelerated[-1]


def decide(
    request: InferenceRequest,
    *,
    key: str | None = None,
    cost: Cost | None = None,
    spec: RouteSpec | None = None,
    health: PoolHealth | None = None,
    now_ms: int = 0,
    settings: RoutingSettings | None = None,
    topics: TopicSettings | None = None,
) -> Decision:
    """Where `request` goes. Raises `UnknownModelError` for a model not in the catalog."""
    s = settings or RoutingSettings()
    model = lookup(request.model).name
    spec = spec or default_spec(model)
    sticky = key or request.request_id
    capable = s.capable.get(model, s.pools)
    offered = [p for p in s.pools if p in capable and (spec.pools is None or p in spec.pools)]
    candidates: list[Pool] = offered or [p for p in s.pools if p in capable] or list(s.pools)
    states = {
        p: health.state(model, p, now_ms=now_ms) if health is not None else _UNKNOWN
        for p in candidates
    }
    pool = choose_pool(
        model, key=sticky, cost=cost, candidates=candidates, states=states, settings=s
    )
    return Decision(
        topic=(topics or TopicSettings()).work(model, pool),
        pool=pool,
        version=pick_version(spec, sticky),
        precision=s.precision.choose(pool, cost),
        shadow=shadow_version(spec, sticky),
    )


def route(
    request: InferenceRequest,
    *,
    topics: TopicSettings | None = None,
    pools: Sequence[Pool] = ("cpu",),
) -> str:
    """The work topic for `request` when a producer routes it itself.

    Same policy as the router, without what only the router knows (the
    request's cost, pool health, the route table): the first offered pool
    unless a GPU pool is offered too, then the GPU pools by key.
    """
    if not pools:
        raise ValueError("route() needs at least one pool")
    unknown = [p for p in pools if p not in POOLS]
    if unknown:
        raise ValueError(f"unknown pool(s) {unknown}; pools are {', '.join(POOLS)}")
    return decide(request, settings=RoutingSettings(pools=tuple(pools)), topics=topics).topic
