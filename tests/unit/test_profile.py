"""`ops.bench.profile.top_frames`: shares of collapsed py-spy stacks."""

from __future__ import annotations

import pytest

from sluicegate.ops.bench.profile import top_frames

_ROOT = 'process 1:"python -m sluicegate worker";_run_module_as_main (<frozen runpy>)'
FOLDED = "\n".join(
    [
        f"{_ROOT};loop (workers/engine.py);count (schemas/cost.py) 6",
        f"{_ROOT};loop (workers/engine.py);send (aiokafka/producer.py) 3",
        f"{_ROOT};walk (a.py);walk (a.py) 1",
        "not a stack line",
    ]
)


def test_own_and_cumulative_shares() -> None:
    samples, own, cumulative = top_frames(FOLDED)
    assert samples == 10
    assert own[0] == ("count (schemas/cost.py)", pytest.approx(0.6))
    assert dict(own)["send (aiokafka/producer.py)"] == pytest.approx(0.3)
    total = dict(cumulative)
    assert total["loop (workers/engine.py)"] == pytest.approx(0.9)
    # Recursion counts once per stack; the thread label and runpy's frame are left out.
    assert total["walk (a.py)"] == pytest.approx(0.1)
    assert not any("runpy" in frame or "process 1" in frame for frame in total)


def test_limit_and_empty() -> None:
    _, own, cumulative = top_frames(FOLDED, n=1)
    assert len(own) == len(cumulative) == 1
    assert top_frames("") == (0, [], [])
