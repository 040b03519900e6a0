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
    view = TopView(window_s=10)
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
