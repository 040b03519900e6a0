"""The simulated accelerator: latency model, counters, and one card shared across processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sluicegate.inference.io import ModelInputs
from sluicegate.ops.bench.simulated import needed_processes, steady_rates
from sluicegate.workers.backends.simulated import (
    LATENCY,
    DeviceCounters,
    LatencyModel,
    SimulatedBackend,
    SimulatedDevice,
    approx_tokens,
    padded_cost,
    utilisation,
)
from sluicegate.workers.errors import BackendRejected


def test_latency_is_a_plus_b_times_padded_cost() -> None:
    model = LatencyModel(a_ms=0.5, b_ms=0.001)
    assert model.seconds(0) == pytest.approx(0.0005)
    assert model.seconds(4096) == pytest.approx((0.5 + 4.096) / 1000)


def test_padded_cost_pads_every_member_to_the_largest() -> None:
    assert padded_cost([3, 10, 7]) == 30
    assert padded_cost([]) == 0


def test_every_model_has_figures_for_both_cards_and_the_h100_is_faster() -> None:
    for model in ("text-embed", "ocr", "doc-match"):
        a100, h100 = LATENCY[(model, "a100")], LATENCY[(model, "h100")]
        assert h100.seconds(10_000) < a100.seconds(10_000)
        assert a100.a_ms > 0 and a100.b_ms > 0
    # A MiniLM batch of 256 x 64 tokens: a few milliseconds on an A100, not seconds.
    assert 0.5e-3 < LATENCY[("text-embed", "a100")].seconds(256 * 64) < 10e-3


def test_counters_round_trip_and_queue_batches_one_after_another() -> None:
    assert DeviceCounters.unpack(b"") == DeviceCounters()
    card = DeviceCounters().reserve(now_ns=1_000, duration_ns=500, items=3)
    assert (card.free_at_ns, card.busy_ns, card.batches, card.items) == (1_500, 500, 1, 3)
    # Asked for while busy: starts when the card is free, not now.
    card = card.reserve(now_ns=1_200, duration_ns=100, items=1)
    assert card.free_at_ns == 1_600 and card.busy_ns == 600
    # Asked for after an idle gap: starts now; the gap is not busy time.
    card = card.reserve(now_ns=5_000, duration_ns=100, items=1).plus_late(7).plus_late(-3)
    assert card.free_at_ns == 5_100 and card.busy_ns == 700 and card.late_ns == 7
    assert DeviceCounters.unpack(card.pack()) == card


def test_utilisation_is_busy_time_over_wall_time() -> None:
    before = DeviceCounters(busy_ns=1_000_000_000)
    after = DeviceCounters(busy_ns=1_900_000_000)
    assert utilisation(before, after, 1.0) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="positive"):
        utilisation(before, after, 0.0)


def test_the_device_file_keeps_the_timeline(tmp_path: Path) -> None:
    device = SimulatedDevice(path=tmp_path / "gpu0.dev")
    start, end = device.reserve(0.002, items=8)
    start2, end2 = device.reserve(0.001, items=2)
    assert end - start == 2_000_000 and start2 == end and end2 - start2 == 1_000_000
    again = SimulatedDevice(path=tmp_path / "gpu0.dev")  # another opener sees the same card
    counters = again.counters()
    assert counters.batches == 2 and counters.items == 10
    assert counters.busy_ns == 3_000_000 and counters.free_at_ns == end2
    device.close()
    again.close()


_HOLDER = """
import json, sys, time
from pathlib import Path
from sluicegate.workers.backends.simulated import SimulatedDevice
device = SimulatedDevice(path=Path(sys.argv[1]))
spans = []
for _ in range(10):
    start, end = device.reserve(0.01, items=1)
    time.sleep(max(0, end - time.monotonic_ns()) / 1e9)  # wait for it, as a worker does
    spans.append((start, end))
print(json.dumps(spans))
"""


def test_two_processes_on_one_card_never_overlap(tmp_path: Path) -> None:
    path = tmp_path / "shared.dev"
    procs = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        spans.extend(tuple(s) for s in json.loads(out))
    spans.sort()
    assert len(spans) == 20
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two processes had the simulated card at once"
    device = SimulatedDevice(path=path)
    counters = device.counters()
    device.close()
    assert counters.batches == 20 and counters.busy_ns == 20 * 10_000_000
    # Serialized: the card's busy time never exceeds the wall time it covered.
    assert counters.busy_ns <= spans[-1][1] - spans[0][0]


def test_token_estimate_counts_words_and_the_two_markers() -> None:
    assert approx_tokens("a short text") == 5
    assert approx_tokens("word " * 1000) == 256  # truncated like the model


def test_backend_answers_right_shaped_outputs(tmp_path: Path) -> None:
    backend = SimulatedBackend(device=SimulatedDevice(path=tmp_path / "g.dev"), kind="h100")

    async def run() -> None:
        texts = [ModelInputs(texts=("a short text",)), ModelInputs(texts=("a bit longer text",))]
        out = await backend.infer("text-embed", texts)
        assert [len(o["embedding"]) for o in out] == [384, 384]
        assert sum(x * x for x in out[0]["embedding"]) == pytest.approx(1.0)
        assert all(o["tokens"] > 2 for o in out)
        with pytest.raises(BackendRejected, match="no latency figures"):
            await backend.infer("no-such-model", texts)
        served = await backend.variants("text-embed")
        assert served.default_version == "1" and served.versions == ["1", "2"]
        assert {v.device_kind for v in served.variants} == {"simulated-h100"}
        await backend.close()

    asyncio.run(run())


def test_steady_rates_leave_out_the_start_and_the_tail() -> None:
    # Idle while workers start, then 90 % busy at 1,000 records/s for 2 s, then the tail.
    ms = 1_000_000
    samples = [(0.0, 0, 0), (1.0, 0, 0), (1.5, 100 * ms, 10), (2.5, 1000 * ms, 1010)]
    samples += [(3.5, 1900 * ms, 2010), (4.0, 2000 * ms, 2100), (5.0, 2000 * ms, 2100)]
    util, rps = steady_rates(samples)
    assert util == pytest.approx(0.9) and rps == pytest.approx(1000)
    # Too short to leave anything out: the whole span.
    assert steady_rates([(0.0, 0, 0), (2.0, 1000 * ms, 50)]) == pytest.approx((0.5, 25))
    with pytest.raises(ValueError, match="two samples"):
        steady_rates([(0.0, 0, 0)])


def test_processes_needed_to_fill_a_card() -> None:
    assert needed_processes(card_rps=10_000, process_rps=1_000) == 9  # 90 % of 10 x
    assert needed_processes(card_rps=500, process_rps=1_000) == 1
    with pytest.raises(ValueError, match="answers nothing"):
        needed_processes(card_rps=10_000, process_rps=0)
