"""Wall-clock time as the wire carries it: Unix epoch milliseconds."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch (the unit of every `*_ms` timestamp on the wire)."""
    return time.time_ns() // 1_000_000
