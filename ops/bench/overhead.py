"""(e) The null-model worker against a bare aiokafka relay, rounds interleaved.

Each round drains a fresh backlog through both, in alternating order (relay
first in even rounds, the null worker first in odd ones), so neither always
runs on a warmer broker. See ``relay.py`` for what each side does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sluicegate.ops.stack.process import ManagedProcess
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import encode
from sluicegate.schemas.models import InferenceRequest

from .kafka_run import RssProbe, bench_topics, worker_process
from .relay import count_outputs, produce_backlog
from .workload import Workload

__all__ = ["null_vs_relay"]

Say = Callable[[str], None]
Tick = Callable[[str, int, int], None]


async def null_vs_relay(
    workload: Workload,
    kafka: KafkaSettings,
    triton_url: str,
    state: Path,
    *,
    records: int,
    rounds: int,
    say: Say,
    tick: Tick,
) -> tuple[dict[str, float], list[float]]:
    """(median rates and the record count, null ÷ relay of each round)."""
    values = [
        encode(
            InferenceRequest(
                request_id=f"n{i}", model=workload.model, texts=list(workload.item(i).inputs.texts)
            )
        )
        for i in range(records)
    ]
    rates: dict[str, list[float]] = {"relay": [], "null": []}
    for r in range(rounds):
        order = ("relay", "null") if r % 2 == 0 else ("null", "relay")
        for name in order:
            async with bench_topics(kafka, f"overhead-{name}") as run:
                source = run.topics.work(workload.model, "cpu")
                await produce_backlog(kafka, source, values)
                say(f"round {r + 1}/{rounds}, {name}: draining a backlog of {records} requests")
                ctx: contextlib.AbstractAsyncContextManager[RssProbe]
                if name == "null":
                    ctx = worker_process(
                        model=workload.model,
                        kafka=kafka,
                        triton_url=triton_url,
                        run=run,
                        env={"SLUICEGATE_BACKEND": "null"},
                        state_dir=state / "workers",
                    )
                else:
                    ctx = _relay_process(kafka, source, run.topics.results, run.group, state)
                async with ctx:
                    seen, rate = await count_outputs(
                        kafka, run.topics.results, expected=records, timeout_s=120
                    )
                tick(f"overhead {name} (round {r + 1})", seen, records)
                rates[name].append(rate)
    per_round = [
        round(n / rl, 3) if rl > 0 else 0.0
        for n, rl in zip(rates["null"], rates["relay"], strict=True)
    ]
    medians = {
        "relay_rps": round(statistics.median(rates["relay"]), 1),
        "null_rps": round(statistics.median(rates["null"]), 1),
        "records": records,
    }
    return medians, per_round


@contextlib.asynccontextmanager
async def _relay_process(
    kafka: KafkaSettings, source: str, sink: str, group: str, state: Path
) -> AsyncIterator[RssProbe]:
    proc = ManagedProcess(name="bench-relay", state_dir=state / "relay")
    ready = state / "relay" / "relay.ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sluicegate.ops.bench.relay", source, sink, group, str(ready)]
    env = dict(os.environ, SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers)
    proc.start(argv, env=env)
    try:
        await asyncio.to_thread(proc.wait_for, ready, what="bench relay", timeout=60)
        pid = proc.pid()
        assert pid is not None
        yield RssProbe(pid)
    finally:
        await asyncio.to_thread(proc.stop, grace=30)
