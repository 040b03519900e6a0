"""The nine fault scenarios. Each injects its faults into a running `ChaosRun`.

Fault points are tied to progress (a fraction of the requests answered), not
to wall time, so a scenario behaves alike on a fast and a slow machine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaClient, TopicPartition

from ..stack.process import StackError
from .run import ChaosRun, Inject


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    summary: str
    inject: Inject
    workers: int = 2
    routers: int = 1
    brokers: int = 1
    seed: bool = True  # False: the scenario seeds itself (overload, the router ones)
    prepare: Callable[[ChaosRun], None] | None = None


async def kill_workers(run: ChaosRun) -> None:
    """`kill -9` a random worker mid-run `kills` times; the harness restarts it."""
    rng = random.Random(7)
    kills = run.options.kills
    for k in range(kills):
        await run.until_answered((k + 1) / (kills + 2))
        victim = rng.choice(run.stack.running_workers())
        run.stack.kill9(victim)
        run.fault(f"kill -9 {victim}")
        await asyncio.sleep(0.5)
        await run.blocking(lambda v=victim: run.start_worker(v, wait=False))  # type: ignore[misc]
        run.fault(f"restarted {victim}")


async def scale_workers(run: ChaosRun) -> None:
    """Add two workers, then remove (SIGTERM) two, while requests flow: rebalances."""
    await run.until_answered(0.15)
    await run.blocking(lambda: run.start_worker("w-extra-1", wait=False))
    run.fault("added w-extra-1")
    await run.until_answered(0.3)
    await run.blocking(lambda: run.start_worker("w-extra-2", wait=False))
    run.fault("added w-extra-2")
    await run.until_answered(0.5)
    await run.blocking(lambda: run.stack.stop_worker("w0"))
    run.fault("removed w0")
    await run.until_answered(0.7)
    await run.blocking(lambda: run.stack.stop_worker("w-extra-1"))
    run.fault("removed w-extra-1")


def _seed_paced(run: ChaosRun) -> asyncio.Task[None]:
    """Seed the run's requests over about 30 s, so the routers are busy when faults hit."""
    return asyncio.create_task(run.seed(run.requests, rate=max(20.0, run.requests / 30)))


async def _until_sent(run: ChaosRun, fraction: float) -> None:
    # Polls the seeder's count (the seeder is `ChaosRun.seed`, shared with the other
    # scenarios; it signals nothing per record).
    while len(run.sent_ids) < fraction * run.requests:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def kill_routers(run: ChaosRun) -> None:
    """`kill -9` a random router `kills` times while requests arrive (open transactions
    and unacknowledged sends die with it); the harness restarts it."""
    rng = random.Random(11)
    kills = run.options.kills
    seeding = _seed_paced(run)
    for k in range(kills):
        await _until_sent(run, (k + 1) / (kills + 1))
        victim = rng.choice(run.stack.running_routers())
        run.stack.kill9(victim)
        run.fault(f"kill -9 {victim} ({len(run.sent_ids)} sent)")
        await asyncio.sleep(0.5)
        await run.blocking(lambda v=victim: run.start_router(v, wait=False))  # type: ignore[misc]
        run.fault(f"restarted {victim}")
    await seeding


async def scale_routers(run: ChaosRun) -> None:
    """Two routers share the request partitions; while requests arrive, a third joins,
    then two leave (SIGTERM): rebalances mid-transaction."""
    seeding = _seed_paced(run)
    await _until_sent(run, 0.25)
    await run.blocking(lambda: run.start_router("router-extra", wait=False))
    run.fault(f"added router-extra ({len(run.sent_ids)} sent)")
    await _until_sent(run, 0.5)
    await run.blocking(lambda: run.stack.stop_worker("router0"))
    run.fault(f"removed router0 ({len(run.sent_ids)} sent)")
    await _until_sent(run, 0.75)
    await run.blocking(lambda: run.stack.stop_worker("router-extra"))
    run.fault(f"removed router-extra ({len(run.sent_ids)} sent)")
    await seeding


async def restart_broker(run: ChaosRun) -> None:
    await run.until_answered(0.3)
    run.fault("broker stopping")
    await run.blocking(run.stack.restart_broker)
    run.fault("broker restarted")


async def restart_triton(run: ChaosRun) -> None:
    await run.until_answered(0.3)
    await run.blocking(run.stack.kill_triton)
    run.fault("kill -9 triton")
    await asyncio.sleep(3)
    await run.blocking(run.stack.start_triton)
    run.fault("triton restarted")


def _short_poll_interval(run: ChaosRun) -> None:
    # Workers leave their group if their poll loop stalls 6 s; a slowed batch takes 9 s.
    run.stack.extra_env["SLUICEGATE_MAX_POLL_INTERVAL_MS"] = "6000"


async def slow_triton(run: ChaosRun) -> None:
    """Each Triton call takes longer than max.poll.interval.ms for a while."""
    await run.until_answered(0.2)
    run.stack.slow_triton(9.0)
    run.fault("triton slowed to 9 s per batch (max.poll.interval.ms 6 s)")
    await asyncio.sleep(run.options.slow_s)
    run.stack.slow_triton(0)
    run.fault("triton back to normal")


async def overload(run: ChaosRun, *, factor: float = 5.0) -> None:
    """Measure throughput, then send `factor` x that for `burst_s` with short deadlines."""
    burst_s = run.options.burst_s
    # Large enough to measure capacity, not one batch's latency: with 50 the
    # estimate came out at a quarter of the real rate on a quiet machine, so the
    # "5x" burst fitted inside the deadlines and nothing expired.
    calib = max(300, run.requests // 10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await run.seed(calib)
    await run.until_answered(1.0 * calib / max(1, run.requests))
    rate = calib / max(0.5, loop.time() - t0)
    run.fault(f"measured {rate:.0f} req/s; bursting {factor:.0f}x for {burst_s:.0f} s")
    burst = int(rate * factor * burst_s)
    await run.seed(burst, deadline_s=5.0, rate=rate * factor)
    run.requests = len(run.sent_ids)
    run.fault(f"burst of {burst} requests sent")


async def kill_leader(run: ChaosRun) -> None:
    """Kill -9 the broker leading work partition 0 (RF 3, min ISR 2, acks=all); restart it."""
    cluster = run.stack.kafka
    await run.until_answered(0.3)
    leader = await _partition_leader(cluster.bootstrap_servers, run.work_topic, 0)
    await run.blocking(lambda: cluster.kill(leader))
    run.fault(f"kill -9 broker {leader} (leader of {run.work_topic}[0])")
    await run.until_answered(0.6)
    await run.blocking(lambda: cluster.start_node(leader))
    run.fault(f"broker {leader} restarted")


async def _partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The node id leading `topic`[`partition`] now."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    try:
        await client.bootstrap()
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
    finally:
        await client.close()
    if leader is None or leader < 0:
        raise StackError(f"{topic}[{partition}] has no leader")
    return int(leader)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="kill-worker", summary="kill -9 a worker mid-batch, 5 times", inject=kill_workers
        ),
        Scenario(
            name="scale-workers", summary="add and remove workers mid-run", inject=scale_workers
        ),
        Scenario(
            name="kill-router",
            summary="kill -9 one of two routers mid-transaction, 5 times",
            inject=kill_routers,
            routers=2,
            seed=False,
        ),
        Scenario(
            name="two-routers",
            summary="two routers in one group; a third joins, two leave",
            inject=scale_routers,
            routers=2,
            seed=False,
        ),
        Scenario(
            name="broker-restart", summary="restart the broker mid-run", inject=restart_broker
        ),
        Scenario(
            name="triton-restart", summary="kill -9 Triton and restart it", inject=restart_triton
        ),
        Scenario(
            name="slow-triton",
            summary="a batch outlasts max.poll.interval.ms",
            inject=slow_triton,
            prepare=_short_poll_interval,
        ),
        Scenario(
            name="overload",
            summary="5x overload burst: memory bounded, expired answers, lag drains",
            inject=overload,
            workers=1,
            seed=False,
        ),
        Scenario(
            name="leader-kill",
            summary="3-broker cluster: kill a partition leader",
            inject=kill_leader,
            brokers=3,
        ),
    )
}
