"""The two-pool stack: CPU plus the a100 stand-in (a second real Triton), routing and failover.

One module-scoped stand-in Triton (`ops/stack/pools.py`, what `up --pools
cpu,a100` starts) next to the session's CPU Triton; a real router told both
pools exist; the CPU worker in-process and the stand-in's worker as a real
`sluicegate worker --pool a100` process, so it can be killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluicegate.ops.stack.pools import StandinPool, StandinPorts
from sluicegate.ops.stack.process import free_port, wait_until
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.streams.routing import RoutingSettings

from ..conftest import CACHE_DIR
from .conftest import WorkerFactory
from .streams_helpers import running_router

pytestmark = pytest.mark.integration

MODEL = "text-embed"
SMALL = "A short note."  # a few tokens: under the 48-token small_cost
LARGE = (
    "The quarterly report covers revenue, operating costs, hiring plans, supplier risks and "
    "the migration of the billing platform to the new region, with milestones for each team."
) * 2  # ~80 tokens: large, but under the 192 tokens that switch a100 to bf16
FAILOVER_BOUND_S = 15.0  # generous over the ~8 s expected (6 s session + 1 s watch + work)


@pytest.fixture(scope="module")
def standin(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinPool]:
    pool = StandinPool(
        state_dir=tmp_path_factory.mktemp("standin"),
        cache_dir=CACHE_DIR,
        host="127.0.0.1",
        ports=StandinPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
    )
    try:
        pool.start_triton(print)
        yield pool
    finally:
        pool.stop([MODEL])
    assert pool.triton.pid() is None, "the stand-in Triton outlived stop()"


def start_standin_worker(
    pool: StandinPool, stack: LocalStack, topics: TopicSettings, group: str
) -> subprocess.Popen[bytes]:
    env = {
        "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": stack.settings.bootstrap_servers,
        "SLUICEGATE_GROUP_ID": group,
        "PYTHONUNBUFFERED": "1",
        **topics.as_env(),
    }
    pool.ready_file(MODEL).unlink(missing_ok=True)
    proc = pool.worker(MODEL).start(
        pool.worker_argv(sys.executable, MODEL),
        env=pool.worker_env(MODEL, {**os.environ, **env}),
    )
    wait_until(
        pool.ready_file(MODEL).exists,
        timeout=120,
        what="a100 stand-in worker",
        alive=pool.worker(MODEL).is_running,
        log_path=pool.worker(MODEL).log_path,
    )
    return proc


def request(text: str) -> InferenceRequest:
    return InferenceRequest(request_id=uuid.uuid4().hex, model=MODEL, texts=[text])


class Ledger:
    """Every request sent, when, and its result with the time it arrived (monotonic s)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.results: dict[str, InferenceResult] = {}
        self._waits: list[asyncio.Task[None]] = []

    async def send(self, req: InferenceRequest) -> None:
        future = self.client.expect(req.request_id)

        def landed(f: asyncio.Future[InferenceResult], rid: str = req.request_id) -> None:
            if not f.cancelled() and f.exception() is None:
                self.arrived[rid] = time.monotonic()
                self.results[rid] = f.result()

        future.add_done_callback(landed)
        self.sent[req.request_id] = time.monotonic()
        await self.client.send(req)
        self._waits.append(asyncio.create_task(self._wait(req.request_id, future)))

    async def _wait(self, rid: str, future: asyncio.Future[InferenceResult]) -> None:
        await self.client.wait(rid, future, timeout=120)

    async def settle(self) -> None:
        await asyncio.gather(*self._waits, return_exceptions=True)
        self._waits.clear()


async def test_large_to_standin_small_to_cpu_then_failover_and_back(
    stack: LocalStack,
    standin: StandinPool,
    kafka: KafkaSettings,
    topics: TopicSettings,
    run_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    group = f"{topics.work_prefix}.{MODEL}.a100.group"
    proc = await asyncio.to_thread(start_standin_worker, standin, stack, topics, group)
    routing = RoutingSettings(pools=("a100", "cpu"))
    settings = ClientSettings(kafka=kafka, topics=topics, timeout_s=120, via_router=True)
    async with (
        run_worker(MODEL),
        running_router(kafka, topics, routing=routing, cache_ttl_s=0) as router,
        Client(settings=settings) as client,
    ):
        ledger = Ledger(client)
        # 1. Both pools alive: large requests to the stand-in, small ones to CPU.
        smalls = [request(SMALL) for _ in range(6)]
        larges = [request(LARGE) for _ in range(6)]
        for req in [*smalls, *larges]:
            await ledger.send(req)
        await ledger.settle()
        assert {ledger.results[r.request_id].pool for r in smalls} == {"cpu"}
        assert {ledger.results[r.request_id].pool for r in larges} == {"a100"}

        # 2. kill -9 the stand-in's worker; keep sending large requests for 14 s.
        proc.kill()
        await asyncio.to_thread(proc.wait)
        killed = time.monotonic()
        after: list[InferenceRequest] = []
        while time.monotonic() - killed < 14:
            after.append(request(LARGE))
            await ledger.send(after[-1])
            await asyncio.sleep(0.5)
        await ledger.settle()
        missing = [r.request_id for r in after if r.request_id not in ledger.results]
        assert not missing, f"{len(missing)} of {len(after)} sent after the kill unanswered"
        assert {ledger.results[r.request_id].pool for r in after} == {"cpu"}
        assert {ledger.results[r.request_id].status for r in after} == {Status.OK}
        waits = [
            ledger.arrived[r.request_id] - max(killed, ledger.sent[r.request_id]) for r in after
        ]
        print(f"failover: slowest post-kill answer {max(waits):.1f} s after kill or send")
        assert max(waits) <= FAILOVER_BOUND_S
        # Some were forwarded to the dead pool before it was seen dead: re-routed, not stranded.
        assert router.pool_watch.rescued >= 1

        # 3. The stand-in comes back: large requests go to it again. (Off the event
        # loop: the in-process CPU worker must keep heartbeating meanwhile.)
        proc = await asyncio.to_thread(start_standin_worker, standin, stack, topics, group)
        back = None
        deadline = time.monotonic() + 60
        while back is None and time.monotonic() < deadline:
            probe = request(LARGE)
            await ledger.send(probe)
            await ledger.settle()
            if ledger.results[probe.request_id].pool == "a100":
                back = probe
        assert back is not None, "the a100 stand-in was not used again after it came back"

        # Nothing sent is left unanswered.
        assert set(ledger.results) == set(ledger.sent)
    await asyncio.to_thread(standin.worker(MODEL).stop, grace=30)
