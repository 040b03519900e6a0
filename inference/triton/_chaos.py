"""A delay knob for the chaos harness only (`sluicegate chaos run --scenario slow-triton`).

Active only when Triton was started with ``SLUICEGATE_CHAOS_DELAY_FILE`` in its
environment, which only ``ops/chaos`` does: each ``execute`` then sleeps for
the seconds written in that file (missing, empty or unreadable: no delay).
A served model never reads a file per call otherwise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

DELAY_ENV = "SLUICEGATE_CHAOS_DELAY_FILE"
_FILE = os.environ.get(DELAY_ENV)


def chaos_delay() -> None:
    if _FILE is None:
        return
    try:
        seconds = float(Path(_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return
    if seconds > 0:
        time.sleep(min(seconds, 600.0))
