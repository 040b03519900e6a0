"""A per-model circuit breaker (pure state, injected clock).

    closed ──(`failures` retriable failures in a row)──> open
    open ──(cooldown passed)──> half-open: exactly one probe call may run
    half-open ──probe ok──> closed      half-open ──probe fails──> open (cooldown doubles, max 30 s)

While open the worker stops fetching (the engine reads `is_open`) and batches
wait in `Resilient` instead of hammering a server that is down. The breaker
does no I/O and never sleeps: `allow()` answers now, `retry_in()` says when to ask again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

_MAX_COOLDOWN_S = 30.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._base_cooldown = cooldown_s
        self._cooldown = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = BreakerState.CLOSED
        self.opened = 0  # times the breaker opened, for logs and tests

    @property
    def is_open(self) -> bool:
        """True while calls are held back (open, or half-open with its probe running)."""
        return self.state is not BreakerState.CLOSED

    def allow(self) -> bool:
        """May a call start now? In half-open, True for exactly one caller (the probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cooldown:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until `allow` may say yes (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.05, self._opened_at + self._cooldown - self._clock())

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False
        self._cooldown = self._base_cooldown

    def failure(self) -> None:
        """Record a retriable failure (server unavailable or deadline exceeded)."""
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, _MAX_COOLDOWN_S)
            self._open()
        elif self.state is BreakerState.CLOSED and self._failures >= self._threshold:
            self._open()

    def release(self) -> None:
        """The probe ended without an answer either way (e.g. a non-retriable error)."""
        if self._probing:
            self._probing = False
            self.success()

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probing = False
        self.opened += 1
