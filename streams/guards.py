"""Route guards: which closed windows and shadow diffs break a live route's thresholds.

The telemetry rollups feed every `WindowRollup` and `ShadowDiff` they publish
to `GuardWatch.check` with the current route table; it answers the rollbacks
to make (`Trip`), at most one per route revision. The canary versions of a
route are the ones its `previous` spec did not serve (what a rollback takes
away); the primary versions are the ones both serve. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sluicegate.schemas.control import RouteSpec

from .records import RollbackEvent, RollupRecord, ShadowDiff, WindowRollup

__all__ = ["GuardWatch", "Trip", "rolled_back"]


@dataclass(frozen=True)
class Trip:
    """A guard of `spec` broke: publish `rolled_back(spec)` and `event`."""

    spec: RouteSpec
    event: RollbackEvent


def rolled_back(spec: RouteSpec, *, ts_ms: int) -> RouteSpec:
    """The spec a rollback of `spec` publishes: its `previous`, as the next revision."""
    assert spec.previous is not None, "only a route with a previous spec has guards that act"
    return spec.previous.model_copy(
        update={
            "revision": spec.revision + 1,
            "ts_ms": ts_ms,
            "previous": spec.model_copy(update={"previous": None}),
        }
    )


@dataclass
class GuardWatch:
    # (model, pool) -> the primary versions' latest p99 (ms) over a window with evidence.
    _primary_p99: dict[tuple[str, str], float] = field(default_factory=dict)
    # model -> the route revision already rolled back (one trip per revision).
    _tripped: dict[str, int] = field(default_factory=dict)

    def check(
        self, routes: Mapping[str, RouteSpec], records: Iterable[RollupRecord], *, now_ms: int
    ) -> list[Trip]:
        trips: list[Trip] = []
        for record in records:
            if not isinstance(record, WindowRollup | ShadowDiff):
                continue
            spec = routes.get(record.model)
            if spec is None or spec.guards is None or spec.previous is None:
                continue
            if self._tripped.get(spec.model) == spec.revision:
                continue
            event = (
                self._window(spec, record, now_ms)
                if isinstance(record, WindowRollup)
                else self._shadow(spec, record, now_ms)
            )
            if event is not None:
                self._tripped[spec.model] = spec.revision
                trips.append(Trip(spec, event))
        return trips

    def _window(self, spec: RouteSpec, w: WindowRollup, now_ms: int) -> RollbackEvent | None:
        g = spec.guards
        assert g is not None and spec.previous is not None
        if w.requests < g.min_requests:
            return None
        old = set(spec.previous.versions)
        if w.version in old:
            if w.latency_ms.p99 > 0:
                self._primary_p99[(w.model, w.pool)] = w.latency_ms.p99
            return None
        if w.version not in spec.versions:
            return None  # a window of a version this route no longer sends to
        if g.max_error_rate is not None and w.error_rate > g.max_error_rate:
            return _event(spec, w, "error_rate", w.error_rate, g.max_error_rate, now_ms)
        primary = self._primary_p99.get((w.model, w.pool))
        if g.max_p99_ratio is not None and primary:
            ratio = w.latency_ms.p99 / primary
            if ratio > g.max_p99_ratio:
                return _event(spec, w, "p99_ratio", ratio, g.max_p99_ratio, now_ms)
        return None

    def _shadow(self, spec: RouteSpec, d: ShadowDiff, now_ms: int) -> RollbackEvent | None:
        g = spec.guards
        assert g is not None
        floor = g.min_shadow_similarity
        if floor is None or d.shadow_version != spec.shadow or d.pairs < g.min_requests:
            return None
        if d.mean_similarity >= floor:
            return None
        return _event(spec, d, "shadow_similarity", d.mean_similarity, floor, now_ms)


def _event(
    spec: RouteSpec,
    source: WindowRollup | ShadowDiff,
    guard: str,
    observed: float,
    threshold: float,
    now_ms: int,
) -> RollbackEvent:
    if isinstance(source, WindowRollup):
        version, pool, n = source.version, source.pool, source.requests
        what = f"{n} requests on {pool}"
    else:
        version, pool, n = source.shadow_version, "", source.pairs
        what = f"{n} shadow pairs vs version {source.primary_version}"
    above = guard != "shadow_similarity"
    reason = (
        f"{spec.model} version {version}: {guard} {observed:.4g} "
        f"{'above' if above else 'below'} the guard's {threshold:.4g} over {what}; "
        f"route revision {spec.revision} rolled back to revision {spec.revision + 1} "
        f"(versions {', '.join(sorted(spec.previous.versions)) if spec.previous else '?'})"
    )
    return RollbackEvent(
        model=spec.model,
        version=version,
        guard=guard,
        observed=round(observed, 6),
        threshold=threshold,
        from_revision=spec.revision,
        to_revision=spec.revision + 1,
        pool=pool,
        window_start_ms=source.start_ms,
        window_end_ms=source.end_ms,
        ts_ms=now_ms,
        reason=reason,
    )
