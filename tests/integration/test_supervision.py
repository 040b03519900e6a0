"""`up` supervises what it starts; a worker started before Triton waits for it.

The first test SIGKILLs the session stack's own text-embed worker and router
(the pids `up`'s supervisor records; stack.json says where) and waits until the supervisor has
restarted both: a request through the restarted router is answered by the
restarted worker, and `status` shows one restart and the exit reason. It
leaves both ready again for the tests after it.

The second starts `sluicegate worker` against a Triton port nothing listens
on, sees it wait (alive, `waiting-for-triton` in its state file), then
starts a Triton there (text-embed only) and sees it serve.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sluicegate.ops.models.build import MANIFEST_NAME
from sluicegate.ops.stack.process import free_port, pid_alive
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.ops.stack.supervisor import read_parts
from sluicegate.ops.stack.triton import LocalTriton, TritonLocalConfig
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client, ClientSettings

pytestmark = pytest.mark.integration

MODEL = "text-embed"


async def _until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `predicate` (generous bound: a busy machine restarts slowly); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def test_up_restarts_a_killed_worker_and_router(
    stack: LocalStack, kafka: KafkaSettings
) -> None:
    names = {
        f"worker-{MODEL}": stack.ready_file(MODEL),
        "router": stack.streams.ready_file("router"),
    }
    manifest = json.loads((stack.state_dir / "stack.json").read_text())
    supervised = Path(manifest["supervised"])  # where `up` records each part's pid
    before = read_parts(supervised.parent)
    for name in names:
        assert before[name].pid is not None and pid_alive(before[name].pid), before[name]
        os.kill(before[name].pid, signal.SIGKILL)

    def restarted() -> bool:
        parts = read_parts(stack.supervisor_dir)
        return all(
            parts[n].restarts == before[n].restarts + 1
            and parts[n].pid not in (None, before[n].pid)
            and ready.exists()
            for n, ready in names.items()
        )

    await _until(restarted, timeout=240, what="the worker and the router restarted and ready")
    after = read_parts(stack.supervisor_dir)
    for name in names:
        assert after[name].last_exit == "killed by SIGKILL" and after[name].state == "running"
    request = InferenceRequest(request_id=uuid.uuid4().hex, model=MODEL, texts=["restarted"])
    async with Client(settings=ClientSettings(kafka=kafka)) as client:  # through the router
        result = await client.submit(request, timeout=180)
    assert result.status is Status.OK and len(result.outputs["embedding"]) == 384
    status = {part.name: part for part in stack.status()}
    for row in (f"worker {MODEL}", "router"):
        assert status[row].healthy, status[row]
        assert "restarts 1, last exit: killed by SIGKILL" in status[row].detail, status[row]
    assert status["supervisor"].healthy
    log = (stack.supervisor_dir / "supervisor.log").read_text()
    assert f"worker-{MODEL}" in log and "killed by SIGKILL; restarting in" in log


def _text_embed_only(stack: LocalStack, repo: Path) -> Path:
    """A model repository of links to text-embed (and the sha256 manifest) only."""
    repo.mkdir(parents=True)
    (repo / MODEL).symlink_to(stack.repository / MODEL, target_is_directory=True)
    (repo / MANIFEST_NAME).symlink_to(stack.repository / MANIFEST_NAME)
    return repo


async def test_a_worker_started_before_triton_serves_once_triton_is_up(
    stack: LocalStack,
    kafka: KafkaSettings,
    topics: TopicSettings,
    stack_env: dict[str, str],
    tmp_path: Path,
) -> None:
    grpc = free_port()
    ready = tmp_path / "worker.ready"
    waiting = ready.with_suffix(".waiting")
    triton = LocalTriton(
        TritonLocalConfig(
            repository=_text_embed_only(stack, tmp_path / "repo"),
            state_dir=tmp_path / "triton",
            cache_dir=stack.settings.cache_dir,
            http_port=free_port(),
            grpc_port=grpc,
            metrics_port=free_port(),
        )
    )
    env = stack_env | {
        "SLUICEGATE_TRITON__URL": f"127.0.0.1:{grpc}",
        # The key of the Triton started below (created now, used when it starts).
        "SLUICEGATE_TRITON__ADMIN_KEY": triton.admin_key(),
        "SLUICEGATE_TRITON__TRANSPORT": "grpc",
        "SLUICEGATE_GROUP_ID": f"{topics.work_prefix}.late-triton",
        **topics.as_env(),
    }
    argv = [sys.executable, "-m", "sluicegate", "worker", "--model", MODEL]
    log = (tmp_path / "worker.log").open("wb")
    worker = await asyncio.create_subprocess_exec(
        *argv, "--ready-file", str(ready), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        await _until(
            lambda: waiting.exists() and json.loads(waiting.read_text())["attempt"] >= 3,
            timeout=120,
            what="the worker reporting that it waits for Triton",
        )
        state = json.loads(waiting.read_text())
        assert state["state"] == "waiting-for-triton" and state["backend"] == f"127.0.0.1:{grpc}"
        assert worker.returncode is None and not ready.exists()  # waiting, not exited
        await asyncio.to_thread(triton.start, timeout=240)
        await _until(ready.exists, timeout=180, what="the worker joining its group")
        assert not waiting.exists()
        settings = ClientSettings(kafka=kafka, topics=topics, via_router=False)
        async with Client(settings=settings) as client:
            request = InferenceRequest(request_id=uuid.uuid4().hex, model=MODEL, texts=["late"])
            result = await client.submit(request, timeout=180)
        assert result.status is Status.OK and len(result.outputs["embedding"]) == 384
    finally:
        if worker.returncode is None:
            worker.terminate()
        try:
            async with asyncio.timeout(60):
                await worker.wait()
        except TimeoutError:
            worker.kill()
            await worker.wait()
        log.close()
        await asyncio.to_thread(triton.stop)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
