"""DriftMonitor: the baseline's bins are fixed once, and each check still scores the
population stability index of the last `recent_size` values against the whole baseline."""

from __future__ import annotations

from sluicegate.streams.drift import DriftMonitor, DriftSettings, psi


def _deciles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    return sorted({ordered[int(len(ordered) * k / 10)] for k in range(1, 10)})


def test_an_alarm_scores_the_last_window_against_the_whole_baseline() -> None:
    settings = DriftSettings(baseline_size=200, recent_size=60, check_every=20)
    monitor = DriftMonitor(settings=settings)
    baseline = [float(i % 40) for i in range(200)]
    for value in baseline:
        assert monitor.observe("text-embed", "text_chars", value, now_ms=1) is None
    fed: list[float] = []
    events = []
    for i in range(300):
        value = float(25 + i % 40)  # the distribution moved up by 25
        fed.append(value)
        event = monitor.observe("text-embed", "text_chars", value, now_ms=2)
        if event is not None:
            events.append((len(fed), event))
    assert len(events) == 1, "one shift is one alarm"
    at, event = events[0]
    recent = fed[at - 60 : at]
    assert at == 60  # the first check with a full window
    assert event.psi == round(psi(baseline, recent, _deciles(baseline)), 4)
    assert event.baseline_count == 200 and event.recent_count == 60


def test_a_restored_baseline_scores_as_one_observed() -> None:
    settings = DriftSettings(baseline_size=200, recent_size=60, check_every=20)
    baseline = [float(i % 40) for i in range(200)]
    observed, restored = DriftMonitor(settings=settings), DriftMonitor(settings=settings)
    for value in baseline:
        observed.observe("m", "s", value, now_ms=1)
    assert restored.restore("m", "s", baseline)
    shifted = [float(25 + i % 40) for i in range(120)]
    a = [observed.observe("m", "s", v, now_ms=2) for v in shifted]
    b = [restored.observe("m", "s", v, now_ms=2) for v in shifted]
    assert [e is not None for e in a] == [e is not None for e in b]
    assert [e.psi for e in a if e] == [e.psi for e in b if e] and any(a)
