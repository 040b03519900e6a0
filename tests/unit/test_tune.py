"""`sluicegate tune`'s pure half and its file: the ladder, the knee, the round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluicegate.ops.tune.knee import Rung, Timing, cover, knee, ladder, tuned_budget
from sluicegate.workers.batcher import BatchPolicy
from sluicegate.workers.config import BatchSettings, WorkerSettings
from sluicegate.workers.tuned import TunedBudget, TunedFile, load, save

POLICY = BatchPolicy(max_batch_size=8, budget=512, hard_limit=1024, bucket_spread=0)


def timing(n: int, width: int, latency_ms: float) -> Timing:
    rung = Rung(members=tuple(range(n)), costs=(width,) * n)
    return Timing(
        rung=rung,
        latencies_s=(latency_ms / 1000,) * 3,
        real_cost=3 * rung.real_cost,
        seconds=3 * latency_ms / 1000,
    )


def test_the_ladder_doubles_within_the_commonest_bucket_up_to_the_size_limit() -> None:
    costs = [10, 120, 121, 11, 500, 122]  # 120..122 share the commonest bucket
    rungs = ladder(costs, POLICY)
    assert [len(r.costs) for r in rungs] == [1, 2, 4, 8]
    assert all(c in (120, 121, 122) for r in rungs for c in r.costs)  # one bucket, cycled
    assert rungs[-1].padded_cost <= POLICY.hard_limit


def test_a_one_item_policy_is_measured_again_up_to_four() -> None:
    one = BatchPolicy(max_batch_size=1, budget=512, hard_limit=4096, bucket_spread=0)
    assert [len(r.costs) for r in ladder([1000, 1001], one)] == [1, 2, 4]


def test_the_ladder_stops_where_a_rung_would_pass_the_hard_limit() -> None:
    rungs = ladder([300], POLICY, sizes=[1, 2, 3, 4])
    assert [len(r.costs) for r in rungs] == [1, 2, 3]  # 4 x 300 > 1024


def test_the_ladder_refuses_an_empty_mix_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="empty"):
        ladder([], POLICY)
    with pytest.raises(ValueError, match=">= 1"):
        ladder([100], POLICY, sizes=[0, 1])


def test_every_rung_covers_the_same_items() -> None:
    rungs = ladder([100, 101, 102, 103], POLICY, sizes=[1, 2, 3, 4])
    items = rungs[-1].members
    assert cover(rungs[0], items) == [(0,), (1,), (2,), (3,)]
    assert cover(rungs[1], items) == [(0, 1), (2, 3)]
    assert cover(rungs[2], items) == [(0, 1, 2), (3, 0, 1)]  # the short last one filled up
    assert cover(rungs[3], items) == [(0, 1, 2, 3)]


def test_the_knee_is_the_smallest_cost_near_the_best_throughput() -> None:
    timings = [
        timing(1, 100, 10),  # 10,000/s
        timing(2, 100, 12),  # 16,667/s
        timing(4, 100, 16),  # 25,000/s: >= 0.9 x best
        timing(8, 100, 30),  # 26,667/s: the best
    ]
    found = knee(timings)
    assert found.rung.padded_cost == 400
    tuned = tuned_budget(timings, POLICY)
    assert tuned.budget == 400 and tuned.max_batch_size == POLICY.max_batch_size
    assert tuned.max_queue_delay_microseconds == 8_000  # half the knee batch's 16 ms
    assert [r["batch_size"] for r in tuned.measured["rungs"]] == [1, 2, 4, 8]


def test_flat_or_falling_throughput_means_one_item_per_batch() -> None:
    # The CPU OCR shape: a second image costs as long as the first.
    timings = [timing(1, 1000, 500), timing(2, 1000, 1050), timing(3, 1000, 1600)]
    tuned = tuned_budget(timings, POLICY)
    assert tuned.max_batch_size == 1 and tuned.budget == 1000
    assert tuned.max_queue_delay_microseconds == 0


def test_the_knee_needs_timings_and_a_sane_fraction() -> None:
    with pytest.raises(ValueError):
        knee([])
    with pytest.raises(ValueError, match="fraction"):
        knee([timing(1, 1, 1)], fraction=1.5)


def test_the_file_round_trips_and_keeps_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    one = TunedBudget(budget=1000, max_batch_size=1, max_queue_delay_microseconds=0)
    two = TunedBudget(budget=512, max_batch_size=16, max_queue_delay_microseconds=2000)
    save(path, TunedFile().with_budget("ocr", "cpu", one))
    save(path, load(path).with_budget("text-embed", "cpu", two))
    again = load(path)
    assert again.budgets == {"ocr/cpu": one, "text-embed/cpu": two}
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps(
            {
                "budgets": {
                    "ocr/cpu": {"budget": 0, "max_batch_size": 1, "max_queue_delay_microseconds": 0}
                }
            }
        ),
        json.dumps({"budgets": {}, "surprise": 1}),
        json.dumps({"version": 2, "budgets": {}}),
    ],
    ids=["malformed", "zero-budget", "unknown-key", "future-version"],
)
def test_an_invalid_file_is_refused_naming_the_file_and_the_fix(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "tuned.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"tuned\.json is invalid.*sluicegate tune"):
        load(path)
    settings = WorkerSettings(model="ocr", batch=BatchSettings(tuned_file=path))
    with pytest.raises(ValueError, match="invalid"):
        settings.policy()


def test_a_missing_named_file_is_an_error_but_a_missing_default_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"does not exist.*sluicegate tune"):
        load(tmp_path / "absent.json")
    monkeypatch.setenv("SLUICEGATE_STATE_DIR", str(tmp_path))
    assert WorkerSettings(model="ocr").policy().budget == 6_000_000  # the default


def test_the_worker_policy_reads_the_tuned_file_and_env_overrides_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICEGATE_STATE_DIR", str(tmp_path))
    tuned = TunedBudget(budget=20_000_000, max_batch_size=1, max_queue_delay_microseconds=0)
    save(tmp_path / "tuned-budgets.json", TunedFile().with_budget("ocr", "cpu", tuned))
    policy = WorkerSettings(model="ocr").policy()  # the default path, under the state dir
    assert (policy.budget, policy.max_batch_size, policy.max_queue_delay_microseconds) == (
        20_000_000,
        1,
        0,
    )
    assert policy.hard_limit == 20_000_000  # raised with the budget
    assert WorkerSettings(model="text-embed").policy().budget == 2_048  # other models keep theirs
    monkeypatch.setenv("SLUICEGATE_BATCH__MAX_BATCH_SIZE", "4")
    assert WorkerSettings(model="ocr").policy().max_batch_size == 4
