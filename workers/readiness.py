"""A worker started before its backend waits for it, with backoff, instead of exiting.

`wait_for_backend` asks the backend for the model's version (Triton: model
metadata, which only a live server with the model loaded answers) until it
answers, sleeping with capped exponential backoff (tenacity) between tries.
Each failed try is logged and reported through `on_waiting(attempt, reason)`
(`sluicegate worker` writes it to a file `sluicegate status` shows as
`waiting-for-triton`). It never gives up on its own: the process supervisor
or Kubernetes decides how long a pod may stay unready. CancelledError (a
stop while waiting) passes through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from .backends.base import InferenceBackend

__all__ = ["wait_for_backend"]

log = logging.getLogger(__name__)


async def wait_for_backend(
    backend: InferenceBackend,
    model: str,
    *,
    on_waiting: Callable[[int, str], object] = lambda _attempt, _reason: None,
    max_wait_s: float = 10.0,
) -> str:
    """Return the model's version once the backend serves it; retry every failure until then."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "not ready"
        log.warning(
            "waiting for the backend to serve %s (attempt %d, next in %.1f s): %s",
            model,
            state.attempt_number,
            state.upcoming_sleep,
            reason,
        )
        on_waiting(state.attempt_number, reason)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential(multiplier=0.25, min=0.25, max=max_wait_s),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await backend.model_version(model)
    raise AssertionError("unreachable: tenacity retries until the backend answers")
