"""Calling the backend safely: deadline, retries, circuit breaker, bisection.

- Every call carries the client deadline (`TritonSettings.timeout_s`, set on
  the backend); UNAVAILABLE and DEADLINE_EXCEEDED (`retriable` errors) are
  retried with jittered exponential backoff, at most `attempts` times while
  the breaker stays closed. INVALID_ARGUMENT-like refusals are never retried.
- Retriable failures feed the model's :class:`CircuitBreaker`. While it is
  open, batches wait (one probe at a time) instead of failing, for at most
  `outage_s`; then they are answered `backend_unavailable`.
- A batch the backend refuses is bisected, so one poison request fails alone
  and its neighbours still get their outputs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import NoReturn

from .backends.base import InferenceBackend, ModelInputs, Outputs
from .breaker import CircuitBreaker
from .config import TritonSettings
from .errors import BackendError
from .variants import Variant

log = logging.getLogger("sluicegate.worker.resilience")


class Resilient:
    """Wraps one backend for one model; shared by every batch of a worker."""

    def __init__(self, *, backend: InferenceBackend, model: str, settings: TritonSettings) -> None:
        self._backend = backend
        self._model = model
        self._settings = settings
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s
        )

    async def infer(
        self, inputs: list[ModelInputs], *, variant: Variant | None = None
    ) -> list[Outputs | BackendError]:
        """One outcome per input, in order: outputs, or the error that input alone gets.

        `variant`: the version and precision build to run (None: the backend's default).
        """
        try:
            return list(await self._retrying(inputs, variant))
        except BackendError as exc:
            if exc.retriable or len(inputs) == 1:
                return [exc] * len(inputs)
        mid = len(inputs) // 2
        left = await self.infer(inputs[:mid], variant=variant)
        return left + await self.infer(inputs[mid:], variant=variant)

    async def _retrying(self, inputs: list[ModelInputs], variant: Variant | None) -> list[Outputs]:
        s, breaker = self._settings, self.breaker
        give_up = time.monotonic() + s.outage_s
        failed = 0
        while True:
            while not breaker.allow():
                if time.monotonic() > give_up:
                    raise_unavailable(s.outage_s)
                await asyncio.sleep(breaker.retry_in())
            try:
                if variant is None:
                    outputs = await self._backend.infer(self._model, inputs)
                else:
                    outputs = await self._backend.infer(
                        variant.triton_model, inputs, version=variant.version
                    )
            except BackendError as exc:
                if not exc.retriable:
                    breaker.release()
                    raise
                breaker.failure()
                failed += 1
                if breaker.opened and breaker.is_open:
                    log.warning("circuit breaker for %s is open: %s", self._model, exc)
                if (failed >= s.attempts and not breaker.is_open) or time.monotonic() > give_up:
                    raise
                if not breaker.is_open:  # an open breaker paces the retries itself
                    # Full jitter, 0.2 s doubling up to 5 s ("exponential backoff and jitter").
                    await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2 ** min(failed, 5))))
                continue
            breaker.success()
            if len(outputs) != len(inputs):
                raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(inputs)}")
            return outputs


def raise_unavailable(outage_s: float) -> NoReturn:
    from .errors import BackendUnavailable

    raise BackendUnavailable(
        f"the backend stayed unavailable for {outage_s:.0f} s (circuit breaker open); "
        "check `sluicegate status` and the Triton log"
    )
