"""Route guards (`streams.guards`): which windows and shadow diffs roll a route back."""

from __future__ import annotations

from sluicegate.schemas.control import RouteGuards, RouteSpec
from sluicegate.streams.guards import GuardWatch, rolled_back
from sluicegate.streams.records import Quantiles, ShadowDiff, WindowRollup

PREVIOUS = RouteSpec(model="text-embed", versions={"1": 1.0}, revision=1)
GUARDS = RouteGuards(max_error_rate=0.2, max_p99_ratio=3.0, min_shadow_similarity=0.9)
CANARY = RouteSpec(
    model="text-embed",
    versions={"1": 1.0, "3": 1.0},
    shadow="2",
    revision=2,
    previous=PREVIOUS,
    guards=GUARDS,
)


def window(version: str, *, requests: int = 40, errors: int = 0, p99: float = 10.0) -> WindowRollup:
    return WindowRollup(
        model="text-embed",
        pool="cpu",
        version=version,
        window_s=10,
        start_ms=0,
        end_ms=10_000,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        latency_ms=Quantiles(p50=p99 / 2, p95=p99, p99=p99),
    )


def diff(similarity: float, pairs: int = 30) -> ShadowDiff:
    return ShadowDiff(
        model="text-embed",
        primary_version="1",
        shadow_version="2",
        start_ms=0,
        end_ms=10_000,
        pairs=pairs,
        status_agreement=1.0,
        mean_similarity=similarity,
        min_similarity=similarity,
        mean_latency_delta_ms=0.0,
    )


def test_a_canary_over_its_error_rate_trips_once_per_revision() -> None:
    watch = GuardWatch()
    routes = {"text-embed": CANARY}
    [trip] = watch.check(routes, [window("1"), window("3", errors=20)], now_ms=5)
    assert trip.event.guard == "error_rate" and trip.event.version == "3"
    assert trip.event.observed == 0.5 and trip.event.threshold == 0.2
    assert "rolled back to revision 3" in trip.event.reason
    assert watch.check(routes, [window("3", errors=30)], now_ms=6) == []
    back = rolled_back(CANARY, ts_ms=7)
    assert back.versions == {"1": 1.0} and back.revision == 3
    assert back.previous is not None and back.previous.versions == CANARY.versions


def test_the_primary_errors_and_thin_windows_trip_nothing() -> None:
    watch = GuardWatch()
    routes = {"text-embed": CANARY}
    assert (
        watch.check(routes, [window("1", errors=30), window("3", requests=5, errors=5)], now_ms=1)
        == []
    )


def test_p99_ratio_against_the_primary_in_the_same_pool() -> None:
    watch = GuardWatch()
    [trip] = watch.check(
        {"text-embed": CANARY}, [window("1", p99=10), window("3", p99=45)], now_ms=1
    )
    assert trip.event.guard == "p99_ratio" and trip.event.observed == 4.5


def test_shadow_agreement_floor() -> None:
    watch = GuardWatch()
    routes = {"text-embed": CANARY}
    assert watch.check(routes, [diff(0.95)], now_ms=1) == []
    [trip] = watch.check(routes, [diff(0.5)], now_ms=2)
    assert trip.event.guard == "shadow_similarity" and trip.event.version == "2"


def test_a_route_without_guards_or_history_is_left_alone() -> None:
    bare = CANARY.model_copy(update={"guards": None})
    orphan = CANARY.model_copy(update={"previous": None})
    for spec in (bare, orphan):
        assert GuardWatch().check({"text-embed": spec}, [window("3", errors=40)], now_ms=1) == []
