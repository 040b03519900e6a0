"""`sluicegate top` renders the latest rollups, shadow diffs and drift alarms."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from sluicegate.ops.top import TopView
from sluicegate.schemas.codec import encode
from sluicegate.streams.records import DriftEvent, Quantiles, ShadowDiff, WindowRollup


@dataclass
class Rec:
    value: bytes
    topic: str = "sg.telemetry.rollup"
    partition: int = 0
    offset: int = 0
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def test_top_shows_the_chosen_window_shadow_and_drift() -> None:
    view = TopView(window_s=10, clock=lambda: 10_000)  # the records below end near 0
    for window_s, rps in ((10, 42.5), (60, 7.0)):
        view.handle(Rec(encode(WindowRollup(
            model="ocr", pool="cpu", version="1", window_s=window_s, start_ms=0,
            end_ms=window_s * 1000, throughput_rps=rps, latency_ms=Quantiles(p99=812.0),
        ))))  # fmt: skip
    view.handle(Rec(encode(ShadowDiff(
        model="ocr", primary_version="1", shadow_version="2", start_ms=0, end_ms=1, pairs=9,
        status_agreement=1.0, mean_similarity=0.9731, min_similarity=0.9, mean_latency_delta_ms=3,
    ))))  # fmt: skip
    view.handle(Rec(encode(DriftEvent(
        model="ocr", statistic="image_pixels", psi=0.61, threshold=0.25, baseline_median=1e5,
        recent_median=4e5, baseline_count=1000, recent_count=300, ts_ms=0,
    ))))  # fmt: skip
    view.handle(Rec(b"not msgpack"))
    console = Console(width=200, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "42.5" in text and "7.0" not in text and "812" in text
    assert "0.9731" in text and "image_pixels" in text and "0.610" in text


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _window(model: str, end_ms: int) -> Rec:
    return Rec(encode(WindowRollup(
        model=model, pool="cpu", version="1", window_s=10, start_ms=end_ms - 10_000,
        end_ms=end_ms, throughput_rps=12.5,
    )))  # fmt: skip


def _text(view: TopView) -> str:
    console = Console(width=220, record=True)
    console.print(view.render())
    return console.export_text()


def test_top_marks_a_row_stale_when_its_windows_stop_and_clears_it_later() -> None:
    clock = Clock(1_000_000)
    view = TopView(window_s=10, stale_after_s=30, clear_after_s=100, clock=clock)
    view.handle(_window("ocr", end_ms=1_000_000))
    view.handle(_window("text-embed", end_ms=1_000_000))
    assert "stale" not in _text(view)

    clock.ms += 20_000  # text-embed keeps reporting, ocr stopped
    view.handle(_window("text-embed", end_ms=clock.ms))
    assert "stale" not in _text(view)

    clock.ms += 20_000  # ocr's last window ended 40 s ago
    rows = {line.split("│")[1].strip(): line for line in _text(view).splitlines() if "cpu" in line}
    assert "stale 40 s" in rows["ocr"], rows
    assert "stale" not in rows["text-embed"], rows

    clock.ms += 70_000  # 110 s: ocr is cleared; text-embed (90 s) is stale, still shown
    text = _text(view)
    assert "ocr" not in text
    assert "text-embed" in text and "stale 90 s" in text
