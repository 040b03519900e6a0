"""`sluicegate tune` against the session's real Triton: a tiny ladder, the file, the plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluicegate.ops.stack.process import free_port
from sluicegate.workers.config import BatchSettings, WorkerSettings
from sluicegate.workers.tuned import load

pytestmark = pytest.mark.integration


def tune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluicegate", "tune", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_tune_writes_the_budget_the_worker_reads_and_a_plot(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    out, picture = tmp_path / "tuned.json", tmp_path / "knee.png"
    # Triton's URL from the stack's stack.json (SLUICEGATE_STATE_DIR in stack_env).
    args = ["--model", "text-embed", "--sizes", "1,2,4", "--calls", "2", "--out", str(out)]
    done = tune(*args, "--plot", str(picture), env=stack_env)
    assert done.returncode == 0, done.stdout + done.stderr
    entry = load(out).budgets["text-embed/cpu"]
    rungs = entry.measured["rungs"]
    assert [r["batch_size"] for r in rungs] == [1, 2, 4]
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in rungs)
    assert entry.budget in {r["padded_cost"] for r in rungs}  # the knee is a measured rung
    assert f"{entry.budget:,}" in done.stderr  # the table and the summary line
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    policy = WorkerSettings(model="text-embed", batch=BatchSettings(tuned_file=out)).policy()
    assert policy.budget == entry.budget
    assert policy.max_batch_size == entry.max_batch_size
    assert policy.max_queue_delay_microseconds == entry.max_queue_delay_microseconds


def test_tune_without_a_triton_names_the_fix(stack_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "tuned.json"
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = tune("--model", "ocr", "--triton-url", url, "--out", str(out), env=stack_env)
    assert done.returncode == 1
    assert "sluicegate up" in done.stderr and url in done.stderr
    assert not out.exists()
