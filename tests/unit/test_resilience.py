"""Circuit breaker states (fake clock) and the retry / wait / bisect policy (fake backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from sluicegate.workers.backends.base import ModelInputs, Outputs
from sluicegate.workers.breaker import BreakerState, CircuitBreaker
from sluicegate.workers.config import TritonSettings
from sluicegate.workers.errors import BackendRejected, BackendUnavailable
from sluicegate.workers.resilience import Resilient
from sluicegate.workers.variants import ServedVariants, Variant


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=2.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and breaker.is_open
    assert not breaker.allow() and breaker.retry_in() == pytest.approx(2.0)
    clock.now = 2.0
    assert breaker.allow(), "one probe after the cooldown"
    assert not breaker.allow(), "only one probe at a time"
    breaker.failure()  # the probe failed: open again, cooldown doubled
    assert breaker.state is BreakerState.OPEN
    clock.now = 5.9
    assert not breaker.allow()
    clock.now = 6.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and not breaker.is_open and breaker.opened == 2


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=1.0, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED


class FakeBackend:
    """Fails while `down`; refuses any batch holding a text equal to `poison`."""

    def __init__(self, *, down_calls: int = 0, poison: str | None = None) -> None:
        self.down_calls = down_calls
        self.poison = poison
        self.calls: list[int] = []

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]:
        self.calls.append(len(batch))
        if self.down_calls > 0:
            self.down_calls -= 1
            raise BackendUnavailable("down")
        if any(item.texts[0] == self.poison for item in batch):
            raise BackendRejected("poison")
        return [{"echo": item.texts[0]} for item in batch]

    async def model_version(self, model: str) -> str:
        return "1"

    async def variants(self, model: str) -> ServedVariants:
        one = Variant(version="1", precision="fp32", triton_model=model)
        return ServedVariants(model=model, variants=[one], default_version="1")

    async def close(self) -> None:
        return None


def inputs(*texts: str) -> list[ModelInputs]:
    return [ModelInputs(texts=(t,)) for t in texts]


FAST = TritonSettings(attempts=4, breaker_failures=3, breaker_cooldown_s=0.01, outage_s=30)


async def test_a_poison_request_is_bisected_out_and_its_neighbours_succeed() -> None:
    backend = FakeBackend(poison="bad")
    outcomes = await Resilient(backend=backend, model="m", settings=FAST).infer(
        inputs("a", "b", "bad", "c", "d")
    )
    assert [o["echo"] if isinstance(o, dict) else o.code for o in outcomes] == [
        "a",
        "b",
        "backend_rejected",
        "c",
        "d",
    ]


async def test_batches_wait_out_an_outage_once_the_breaker_opens() -> None:
    backend = FakeBackend(down_calls=6)  # more failures than `attempts`
    resilient = Resilient(backend=backend, model="m", settings=FAST)
    outcomes = await resilient.infer(inputs("a", "b"))
    assert outcomes == [{"echo": "a"}, {"echo": "b"}]
    assert resilient.breaker.opened >= 1 and not resilient.breaker.is_open
    assert len(backend.calls) == 7


async def test_a_short_failure_is_retried_then_answered_unavailable_when_it_persists() -> None:
    settings = TritonSettings(attempts=2, breaker_failures=5, breaker_cooldown_s=0.01, outage_s=30)
    backend = FakeBackend(down_calls=2)  # two failures: attempts exhausted, breaker still closed
    outcomes = await Resilient(backend=backend, model="m", settings=settings).infer(inputs("a"))
    assert isinstance(outcomes[0], BackendUnavailable) and backend.calls == [1, 1]


async def test_the_outage_budget_bounds_the_wait() -> None:
    settings = TritonSettings(attempts=1, breaker_failures=1, breaker_cooldown_s=0.05, outage_s=0.3)
    backend = FakeBackend(down_calls=10_000)
    async with asyncio.timeout(10):
        outcomes = await Resilient(backend=backend, model="m", settings=settings).infer(inputs("a"))
    assert isinstance(outcomes[0], BackendUnavailable)


def test_the_admin_key_comes_from_the_setting_or_the_shared_file(tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    assert TritonSettings(admin_key_file=key_file).key() is None  # not written: no key
    key_file.write_text("s3cret\n")
    assert TritonSettings(admin_key_file=key_file).key() == "s3cret"
    assert TritonSettings(admin_key="given", admin_key_file=key_file).key() == "given"
    assert TritonSettings().key() is None
