"""The simulated accelerator end to end: real Kafka, worker processes sharing one simulated card."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from sluicegate.ops.stack.process import ManagedProcess, wait_until
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client
from sluicegate.workers.backends.simulated import SimulatedBackend, SimulatedDevice

from .conftest import WorkerFactory

pytestmark = pytest.mark.integration


def _requests(prefix: str, n: int) -> list[InferenceRequest]:
    return [
        InferenceRequest(request_id=f"{prefix}{i}", model="text-embed", texts=[f"sentence {i}"])
        for i in range(n)
    ]


async def test_a_worker_on_a_simulated_card_answers_end_to_end(
    run_worker: WorkerFactory, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "solo.dev"
    backend = SimulatedBackend(device=SimulatedDevice(path=path), kind="h100")
    async with run_worker("text-embed", backend=backend):
        results = await client.submit_many(_requests("solo", 20), timeout=60)
    assert [r.status for r in results] == [Status.OK] * 20
    assert all(len(r.outputs["embedding"]) == 384 for r in results)
    assert {(r.model_version, r.device_kind) for r in results} == {("1", "simulated-h100")}
    card = SimulatedDevice(path=path)
    counters = card.counters()
    card.close()
    assert counters.items >= 20 and counters.batches >= 1 and counters.busy_ns > 0


async def test_two_worker_processes_share_one_simulated_card(
    client: Client, topics: TopicSettings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    device_file = tmp_path / "gpu0.dev"
    env = {
        **stack_env,
        **topics.as_env(),
        "SLUICEGATE_BACKEND": "simulated",
        "SLUICEGATE_SIMULATED__DEVICE": "a100",
        "SLUICEGATE_SIMULATED__DEVICE_FILE": str(device_file),
        # 1000x the A100's latency (~0.3 s a batch): the card is the bottleneck,
        # so two processes running side by side would have kept it busier than
        # the wall time, which the last assert would catch.
        "SLUICEGATE_SIMULATED__TIME_SCALE": "1000",
        "SLUICEGATE_GROUP_ID": f"{topics.work_prefix}.sim.group",
    }
    procs = []
    try:
        for i in range(2):
            proc = ManagedProcess(name=f"sim-worker-{i}", state_dir=tmp_path)
            ready = tmp_path / f"sim-worker-{i}.ready"
            argv = [sys.executable, "-m", "sluicegate", "worker", "--model", "text-embed"]
            proc.start([*argv, "--ready-file", str(ready)], env=env)
            procs.append(proc)
            await asyncio.to_thread(
                wait_until,
                ready.exists,
                timeout=120,
                what=f"simulated worker {i}",
                alive=proc.is_running,
                log_path=proc.log_path,
            )
        n = 300
        sent = _requests("shared", n)
        start = time.monotonic_ns()
        results = await client.submit_many(sent, max_in_flight=n, timeout=120)
        wall_ns = time.monotonic_ns() - start
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.stop, grace=60)
    # Every request ended in exactly one ok result, from both processes.
    assert [r.request_id for r in results] == [r.request_id for r in sent]
    assert all(r.status is Status.OK for r in results)
    assert len({r.worker for r in results}) == 2, "one process did all the work"
    card = SimulatedDevice(path=device_file)
    counters = card.counters()
    card.close()
    assert counters.items >= n and counters.batches >= 2
    # One card: batches from both processes ran one after another, so the card's
    # busy time fits in the wall time (side by side, the two would need ~twice it).
    assert counters.busy_ns <= wall_ns
