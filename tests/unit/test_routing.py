"""Routing policy: pool by size/health/capacity, precision, canary, shadow."""

from __future__ import annotations

from collections import Counter

import pytest

from sluicegate.schemas.control import RouteSpec
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.errors import UnknownModelError
from sluicegate.schemas.models import InferenceRequest
from sluicegate.streams.canary import pick_version, shadow_version
from sluicegate.streams.health import PoolHealth
from sluicegate.streams.records import WindowRollup
from sluicegate.streams.routing import PrecisionPolicy, RoutingSettings, decide, route

ALL = RoutingSettings(pools=("a100", "mi200", "cpu"), small_cost={"text-embed": 32})
NOW = 1_000_000


def req(i: int = 0, model: str = "text-embed") -> InferenceRequest:
    return InferenceRequest(request_id=f"r{i}", model=model, texts=["x"])


def tokens(n: int) -> Cost:
    return Cost(tokens=n, pixels=0, units=n)


def health(**pools: tuple[int, int, float]) -> PoolHealth:
    h = PoolHealth(max_error_rate=0.2, ttl_s=60)
    for pool, (requests, errors, capacity) in pools.items():
        h.observe(
            WindowRollup(
                model="text-embed", pool=pool, version="1", window_s=10, start_ms=NOW - 10_000,
                end_ms=NOW, requests=requests, errors=errors, cost_per_s=capacity,
            )
        )  # fmt: skip
    return h


def test_precision_policy_by_pool_and_input_length() -> None:
    policy = PrecisionPolicy()
    assert policy.choose("a100", tokens(50)) == "fp16"
    assert policy.choose("a100", tokens(192)) == "bf16"
    assert policy.choose("mi200", tokens(50)) == "bf16" == policy.choose("mi200", tokens(500))
    assert policy.choose("cpu", tokens(500)) == "fp32"
    custom = PrecisionPolicy(long_input_tokens=64, long_inputs={"a100": "bf16", "mi200": "fp32"})
    assert custom.choose("mi200", tokens(64)) == "fp32"
    assert custom.choose("a100", None) == "fp16"


def test_small_requests_go_to_cpu_large_to_gpu_by_capacity() -> None:
    h = health(a100=(100, 0, 3000.0), mi200=(100, 0, 1000.0))
    small = decide(req(), cost=tokens(20), health=h, now_ms=NOW, settings=ALL)
    assert small.pool == "cpu" and small.precision == "fp32"
    pools = Counter(
        decide(req(i), cost=tokens(100), health=h, now_ms=NOW, settings=ALL).pool
        for i in range(4000)
    )
    assert set(pools) == {"a100", "mi200"}
    assert 0.70 < pools["a100"] / 4000 < 0.80  # capacity 3:1


def test_unhealthy_pools_are_skipped_and_stale_reports_forgotten() -> None:
    h = health(a100=(100, 50, 3000.0), mi200=(100, 0, 1000.0))
    d = decide(req(), cost=tokens(100), health=h, now_ms=NOW, settings=ALL)
    assert d.pool == "mi200" and d.precision == "bf16"
    assert h.state("text-embed", "a100", now_ms=NOW + 61_000).health == "unknown"
    cpu_sick = health(cpu=(100, 90, 10.0))
    only_cpu = RoutingSettings(pools=("cpu",))
    assert decide(req(), health=cpu_sick, now_ms=NOW, settings=only_cpu).pool == "cpu"


def test_route_spec_restricts_pools_and_picks_versions() -> None:
    spec = RouteSpec(model="text-embed", versions={"1": 1}, pools=("mi200",))
    d = decide(req(), cost=tokens(100), spec=spec, settings=ALL)
    assert d.pool == "mi200" and d.topic == "sg.work.text-embed.mi200" and d.version == "1"
    only_a100 = ALL.model_copy(update={"capable": {"text-embed": ("a100",)}})
    assert decide(req(), cost=tokens(5), settings=only_a100).pool == "a100", "capability wins"
    with pytest.raises(UnknownModelError):
        decide(req(model="nope"))


def test_canary_weights_are_sticky_and_monotone() -> None:
    spec = RouteSpec(model="text-embed", versions={"1": 0.9, "2": 0.1})
    keys = [f"user-{i}" for i in range(20_000)]
    before = {k: pick_version(spec, k) for k in keys}
    share = sum(v == "2" for v in before.values()) / len(keys)
    assert abs(share - 0.1) < 0.01
    assert all(pick_version(spec, k) == before[k] for k in keys[:500])
    wider = RouteSpec(model="text-embed", versions={"1": 0.7, "2": 0.3})
    after = {k: pick_version(wider, k) for k in keys}
    assert all(after[k] == "2" for k in keys if before[k] == "2"), "growing a canary moved keys off"


def test_shadow_fraction() -> None:
    spec = RouteSpec(model="ocr", versions={"1": 1}, shadow="2", shadow_fraction=0.25)
    copies = sum(shadow_version(spec, f"k{i}") == "2" for i in range(8000))
    assert abs(copies / 8000 - 0.25) < 0.02
    assert shadow_version(RouteSpec(model="ocr", versions={"1": 1}), "k") is None


def test_client_side_route_uses_the_same_policy() -> None:
    assert route(req()) == "sg.work.text-embed.cpu"
    assert route(req(), pools=("a100", "cpu")) == "sg.work.text-embed.a100"
    with pytest.raises(ValueError, match="unknown pool"):
        route(req(), pools=("tpu",))  # type: ignore[arg-type]
