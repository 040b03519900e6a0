"""(g) `triton-dynamic`: what most teams hand-roll instead of a budget batcher.

A plain aiokafka consumer that sends each request to Triton on its own (one
request per gRPC call, many calls in flight, bounded by a semaphore) and
produces each result; Triton's own dynamic batcher
(``dynamic_batching { preferred_batch_size, max_queue_delay_microseconds }``)
merges the calls into batches. It reads the same work topic the worker does
and writes the same result records, at-least-once (an offset is committed
only once every record below it has its result acknowledged).

The model it calls is the bench-only copy ``<model>-dyn``
(``ops/models/bench_repository.py``) on a Triton the bench starts for it
(:func:`dynamic_triton`), so the default repository stays as it is.

Run as a process: ``python -m sluicegate.ops.bench.dynamic SOURCE SINK GROUP
READY MODEL URL CONCURRENCY`` with ``SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS``
set; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from sluicegate.ops.models.bench_repository import DYNAMIC, build_bench_repository, dynamic_name
from sluicegate.ops.stack.process import ManagedProcess
from sluicegate.ops.stack.triton import GRPC_ADMIN_HEADER, LocalTriton
from sluicegate.runtime.kafka import KafkaSettings, idempotent_producer
from sluicegate.schemas.codec import decode_request, encode, headers
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import ErrorInfo, InferenceRequest, InferenceResult, Status

from .kafka_run import BenchTopics, RssProbe, probed_process
from .servers import loopback_triton

__all__ = ["DynamicTriton", "batch_counts", "dynamic_process", "dynamic_triton", "serve"]

Say = Callable[[str], None]


class DynamicTriton:
    """A Triton serving `<model>-dyn` on free loopback ports (see :func:`dynamic_triton`)."""

    def __init__(self, server: LocalTriton, model: str) -> None:
        self.url = server.grpc_url
        self.model = dynamic_name(model)
        self.concurrency = 2 * DYNAMIC[model].max_batch_size
        self._admin = server.admin_key()

    async def batch_counts(self) -> tuple[int, int]:
        """(requests, executions) Triton has run on the model so far: their quotient is
        the mean batch its dynamic batcher formed."""
        return await batch_counts(self.url, self.model, self._admin)


async def batch_counts(url: str, model: str, admin_key: str) -> tuple[int, int]:
    client = InferenceServerClient(url)
    try:
        stats = await client.get_inference_statistics(
            model, headers={GRPC_ADMIN_HEADER: admin_key}, as_json=True
        )
    finally:
        await client.close()
    inferences = executions = 0
    for entry in stats.get("model_stats", []):
        inferences += int(entry.get("inference_count", 0))
        executions += int(entry.get("execution_count", 0))
    return inferences, executions


@contextlib.contextmanager
def dynamic_triton(cache_dir: Path, state: Path, model: str, say: Say) -> Iterator[DynamicTriton]:
    """A Triton of the bench's own serving `<model>-dyn`; stopped on exit."""
    repository = build_bench_repository(state / "bench-repository", [model])
    server = loopback_triton(repository, state / "triton-dynamic", cache_dir)
    say(f"starting a Triton with {dynamic_name(model)} (dynamic_batching on)")
    server.start()
    try:
        yield DynamicTriton(server, model)
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def dynamic_process(
    kafka: KafkaSettings, run: BenchTopics, model: str, triton: DynamicTriton, state: Path
) -> AsyncIterator[RssProbe]:
    """The hand-rolled consumer as a process of its own on `run`'s work topic."""
    folder = state / "dynamic"
    proc = ManagedProcess(name=f"bench-dynamic-{model}", state_dir=folder)
    ready = folder / f"{model}.ready"
    ready.unlink(missing_ok=True)
    source, sink = run.topics.work(model, "cpu"), run.topics.results
    argv = [sys.executable, "-m", "sluicegate.ops.bench.dynamic", source, sink, run.group]
    argv += [str(ready), triton.model, triton.url, str(triton.concurrency)]
    env = dict(os.environ, SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers)
    async with probed_process(
        proc, argv, env, ready, what="bench triton-dynamic consumer"
    ) as probe:
        yield probe


def _inputs(request: InferenceRequest) -> tuple[list[InferInput], list[InferRequestedOutput]]:
    """One request's items as Triton inputs ([N, 1] BYTES) and the outputs to fetch."""
    if request.images:
        items = [image.data or b"" for image in request.images]
        name, outputs = "IMAGE", ("TEXT", "SCORE")
    else:
        items = [text.encode() for text in request.texts]
        name, outputs = "TEXT", ("EMBEDDING", "TOKENS")
    data = np.array(items, dtype=np.object_).reshape(-1, 1)
    tensor = InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor], [InferRequestedOutput(o) for o in outputs]


def _outputs(response: Any, request: InferenceRequest) -> dict[str, Any]:
    if request.images:
        texts = response.as_numpy("TEXT").reshape(-1)
        return {"texts": [bytes(t).decode() for t in texts]}
    rows = response.as_numpy("EMBEDDING")
    return {"embeddings": [[float(x) for x in row] for row in rows]}


async def serve(
    kafka: KafkaSettings,
    *,
    source: str,
    sink: str,
    group: str,
    model: str,
    url: str,
    concurrency: int,
    ready: Path,
    stop: asyncio.Event,
) -> None:
    """Consume `source`, one Triton call per request (at most `concurrency` in flight),
    produce each result to `sink`; commit offsets below the oldest unanswered record."""
    client = InferenceServerClient(url)
    producer = idempotent_producer(kafka, linger_ms=2)
    consumer = AIOKafkaConsumer(
        source,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka.client_kwargs(),
    )
    slots = asyncio.Semaphore(concurrency)
    pending: dict[TopicPartition, set[int]] = {}
    read_to: dict[TopicPartition, int] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def answer(tp: TopicPartition, offset: int, value: bytes | None, hdrs: Any) -> None:
        try:
            request = decode_request(value, hdrs)
            inputs, outputs = _inputs(request)
            try:
                response = await client.infer(model, inputs, outputs=outputs, client_timeout=120.0)
                result = InferenceResult(
                    request_id=request.request_id,
                    status=Status.OK,
                    model=request.model,
                    outputs=_outputs(response, request),
                )
            except InferenceServerException as exc:
                code = ErrorCode.BACKEND_ERROR
                result = InferenceResult(
                    request_id=request.request_id,
                    status=Status.ERROR,
                    model=request.model,
                    error=ErrorInfo(code=code, message=f"{code.message}: {exc}"),
                )
            await (await producer.send(sink, encode(result), headers=headers()))
        finally:
            pending[tp].discard(offset)
            slots.release()

    await client.is_server_ready()
    await producer.start()
    await consumer.start()
    await asyncio.to_thread(ready.touch)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=concurrency)
            for tp, records in batches.items():
                for rec in records:
                    await slots.acquire()
                    pending.setdefault(tp, set()).add(rec.offset)
                    read_to[tp] = rec.offset + 1
                    task = asyncio.create_task(answer(tp, rec.offset, rec.value, rec.headers))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            offsets = {tp: min(pending[tp], default=end) for tp, end in read_to.items()}
            if offsets:
                await consumer.commit(offsets)
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await client.close()


def main() -> None:
    source, sink, group, ready, model, url, concurrency = sys.argv[1:8]
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="SLUICEGATE_", env_nested_delimiter="__", extra="ignore"
        )
        kafka: KafkaSettings = KafkaSettings()

    async def go() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve(
            _Env().kafka,
            source=source,
            sink=sink,
            group=group,
            model=model,
            url=url,
            concurrency=int(concurrency),
            ready=Path(ready),
            stop=stop,
        )

    asyncio.run(go())


if __name__ == "__main__":
    main()
