"""Tuned budgets: what `sluicegate tune` measured, per model x pool, in one JSON file.

`sluicegate tune --model M --pool P` sweeps Triton's latency against padded
batch cost and writes the knee it found here; a worker for M on P reads it in
`WorkerSettings.policy()`. Precedence, last wins: the defaults in
`workers.budgets` < this file < `SLUICEGATE_BATCH__*` variables.

Where: `SLUICEGATE_BATCH__TUNED_FILE`, else `<state dir>/tuned-budgets.json`
(`SLUICEGATE_STATE_DIR`, default `.state`, the local stack's) when it exists.
The file names a resource and is read by every worker: it is validated as a
whole (unknown keys, non-positive values and malformed JSON are refused with
a message naming the file and the fix), never half-applied.

Shape::

    {"version": 1, "budgets": {"ocr/cpu": {"budget": 1048576, "max_batch_size": 1,
      "max_queue_delay_microseconds": 0, "measured": {...}}}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["TUNED_FILE", "TunedBudget", "TunedFile", "default_path", "load", "save", "tuned_for"]

TUNED_FILE = "tuned-budgets.json"


class TunedBudget(BaseModel):
    """The knee `tune` found for one model x pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Padded cost per batch, in the model's cost unit (tokens or pixels).
    budget: int = Field(ge=1)
    max_batch_size: int = Field(ge=1)
    max_queue_delay_microseconds: int = Field(ge=0)
    # What the sweep saw (for people and plots; workers ignore it).
    measured: dict[str, Any] = Field(default_factory=dict)


class TunedFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=1, ge=1, le=1)
    # "<model>/<pool>" -> its tuned budget.
    budgets: dict[str, TunedBudget] = Field(default_factory=dict)

    def with_budget(self, model: str, pool: str, tuned: TunedBudget) -> TunedFile:
        return TunedFile(version=self.version, budgets={**self.budgets, key(model, pool): tuned})


def key(model: str, pool: str) -> str:
    return f"{model}/{pool}"


def default_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("SLUICEGATE_STATE_DIR") or ".state") / TUNED_FILE


def load(path: Path, *, missing_ok: bool = False) -> TunedFile:
    """The validated file; an empty one if it is missing and `missing_ok`.

    Raises ValueError naming the file and the fix when it is unreadable or invalid.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        if missing_ok:
            return TunedFile()
        raise ValueError(
            f"tuned-budget file {path} does not exist; run `sluicegate tune --model M "
            "--pool P` to write it, or unset SLUICEGATE_BATCH__TUNED_FILE"
        ) from None
    except OSError as exc:
        raise ValueError(f"tuned-budget file {path} is not readable ({exc})") from None
    try:
        return TunedFile.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"tuned-budget file {path} is invalid ({detail}); run `sluicegate tune` "
            "again to rewrite it, or delete it to use the defaults"
        ) from None


def save(path: Path, tuned: TunedFile) -> None:
    """Write `tuned` atomically (a reader sees the old file or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(tuned.model_dump_json(indent=2) + "\n")
    part.replace(path)


def tuned_for(model: str, pool: str, path: Path | None) -> TunedBudget | None:
    """The tuned budget for `model` on `pool`: from `path`, else the default path if present."""
    if path is not None:
        return load(path).budgets.get(key(model, pool))
    return load(default_path(), missing_ok=True).budgets.get(key(model, pool))
