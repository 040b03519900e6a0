"""Budgets per model x pool, overridable through SLUICEGATE_* variables."""

from __future__ import annotations

import pytest

from sluicegate.workers.budgets import DEFAULTS, default_policy
from sluicegate.workers.config import WorkerSettings


def test_every_model_has_a_budget_on_every_pool() -> None:
    for model in ("text-embed", "ocr", "doc-match"):
        policies = [default_policy(model, pool) for pool in ("cpu", "mi200", "a100")]
        assert all(p.hard_limit >= p.budget for p in policies)
        # a bigger accelerator never gets a smaller budget than the CPU
        assert policies[0].budget <= policies[1].budget <= policies[2].budget


def test_environment_overrides_one_knob_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_BATCH__BUDGET", "512")
    monkeypatch.setenv("SLUICEGATE_BATCH__MAX_BATCH_SIZE", "4")
    policy = WorkerSettings(model="text-embed", pool="cpu").policy()
    base = DEFAULTS[("text-embed", "cpu")]
    assert (policy.budget, policy.max_batch_size) == (512, 4)
    assert policy.max_queue_delay_microseconds == base.max_queue_delay_microseconds
    assert policy.hard_limit == base.hard_limit


def test_a_budget_above_the_default_hard_limit_raises_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEGATE_BATCH__BUDGET", "100000")
    policy = WorkerSettings(model="text-embed", pool="cpu").policy()
    assert policy.hard_limit == 100_000


def test_unknown_pool_names_the_fix() -> None:
    with pytest.raises(ValueError, match="SLUICEGATE_BATCH__BUDGET"):
        default_policy("text-embed", "tpu")
