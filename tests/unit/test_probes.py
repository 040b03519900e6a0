"""The worker's Kubernetes probes: the generated shell tests, run against real files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from sluicegate.ops import serve
from sluicegate.ops.k8s import generate


def _worker_container() -> dict[str, Any]:
    deployment = generate._deployment("ocr", "a100", generate.POOLS["a100"])
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def _run(probe: dict[str, Any], probe_dir: Path) -> int:
    command = [
        part.replace(generate.PROBE_DIR, str(probe_dir)) for part in probe["exec"]["command"]
    ]
    return subprocess.run(command, check=False, timeout=30).returncode


def test_the_worker_writes_the_files_its_probes_read() -> None:
    worker = _worker_container()
    args = " ".join(worker["args"])
    assert f"--ready-file {generate.PROBE_DIR}/ready" in args
    assert f"--heartbeat-file {generate.PROBE_DIR}/alive" in args
    assert {"name": "probes", "mountPath": generate.PROBE_DIR} in worker["volumeMounts"]


def test_ready_needs_the_group_joined_and_a_fresh_heartbeat(tmp_path: Path) -> None:
    worker = _worker_container()
    ready, live = worker["readinessProbe"], worker["livenessProbe"]
    (tmp_path / "alive").touch()
    assert _run(ready, tmp_path) != 0  # alive (e.g. waiting for Triton) but not in its group
    assert _run(live, tmp_path) == 0
    (tmp_path / "ready").touch()
    assert _run(ready, tmp_path) == 0
    stale = time.time() - 10 * generate.HEARTBEAT_STALE_S
    os.utime(tmp_path / "alive", (stale, stale))  # the loop stopped touching it: stuck
    assert _run(ready, tmp_path) != 0 and _run(live, tmp_path) != 0


async def test_the_heartbeat_task_touches_its_file(tmp_path: Path) -> None:
    path = tmp_path / "probe" / "alive"
    task = asyncio.create_task(serve._beat(path))
    try:
        async with asyncio.timeout(30):
            # A file, not an event: what the probe reads.
            while not path.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert time.time() - path.stat().st_mtime < 30
