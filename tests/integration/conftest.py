"""Session fixtures: one real Kafka broker, one real Triton, the `up` workers.

The stack is started with `LocalStack.up()` (what `sluicegate up` runs) on
free loopback ports and a temporary state dir, and stopped with `down()` at
the end, which must leave nothing running. A part that cannot start fails
the session loudly; nothing here skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sluicegate.ops.stack.process import free_port, port_is_open
from sluicegate.ops.stack.stack import LocalStack, StackSettings
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import POOLS
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    delete_topics,
    ensure_topics,
    streams_topics,
)
from sluicegate.workers.backends import InferenceBackend
from sluicegate.workers.backends.triton import TritonBackend
from sluicegate.workers.config import BatchSettings, TritonSettings, WorkerSettings
from sluicegate.workers.engine import Worker

from ..conftest import CACHE_DIR


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("state"),
        cache_dir=CACHE_DIR,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        metrics_port=free_port(),
        rollback_drill=True,  # text-embed v3, for tests/integration/test_versions.py
    )
    local = LocalStack(settings, progress=print)
    try:
        local.up()
        yield local
    finally:
        local.down()
    ports = (settings.kafka_port, settings.triton_grpc_port, settings.triton_http_port)
    assert not any(port_is_open("127.0.0.1", p) for p in ports), "down() left a server running"


@pytest.fixture(scope="session")
def kafka(stack: LocalStack) -> KafkaSettings:
    return stack.settings.kafka()


@pytest.fixture(scope="session")
def stack_env(stack: LocalStack) -> dict[str, str]:
    """Environment for `sluicegate` subprocesses pointed at the session stack."""
    s = stack.settings
    env = dict(os.environ)
    env.update(
        {
            "SLUICEGATE_STATE_DIR": str(s.state_dir),
            "SLUICEGATE_CACHE_DIR": str(s.cache_dir),
            "SLUICEGATE_KAFKA_PORT": str(s.kafka_port),
            "SLUICEGATE_TRITON_HTTP_PORT": str(s.triton_http_port),
            "SLUICEGATE_TRITON_GRPC_PORT": str(s.triton_grpc_port),
            "SLUICEGATE_TRITON_METRICS_PORT": str(s.triton_metrics_port),
            "SLUICEGATE_METRICS_PORT": str(s.metrics_port),
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "SLUICEGATE_TRITON__ADMIN_KEY": stack.triton.admin_key(),
        }
    )
    return env


@pytest.fixture
async def topics(kafka: KafkaSettings) -> AsyncIterator[TopicSettings]:
    """Topic names unique to this test, created up front and deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    names = TopicSettings.prefixed(prefix)
    created = default_topics(names, pools=POOLS) + streams_topics(names)
    await ensure_topics(kafka, created, compacted=compacted_topics(names))
    yield names
    await delete_topics(kafka, created)


WorkerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture
def run_worker(stack: LocalStack, kafka: KafkaSettings, topics: TopicSettings) -> WorkerFactory:
    """Run an in-process worker for `model` on this test's topics until the block ends."""

    @contextlib.asynccontextmanager
    async def running(
        model: str,
        *,
        backend: InferenceBackend | None = None,
        options: dict[str, Any] | None = None,
        **batch: int,
    ) -> AsyncIterator[Worker]:
        """`options`: other WorkerSettings fields, e.g. {"delivery": "exactly_once"}."""
        settings = WorkerSettings(
            model=model,
            pool="cpu",
            kafka=kafka,
            topics=topics,
            triton=TritonSettings(url=stack.settings.triton_url, timeout_s=60),
            batch=BatchSettings(**batch),
            group_id=f"{topics.work_prefix}.{model}.group",
            **(options or {}),
        )
        # The admin key: the worker reads what Triton serves (restricted model-config API).
        admin = stack.triton.admin_key()
        backend = backend or TritonBackend(url=settings.triton.url, admin_key=admin)
        worker = Worker(settings=settings, backend=backend)
        try:
            async with asyncio.timeout(60):
                await worker.start()  # raises what killed the worker before it joined
            try:
                yield worker
            finally:
                async with asyncio.timeout(90):
                    await worker.stop()
        finally:
            await backend.close()

    return running


@pytest.fixture
async def client(kafka: KafkaSettings, topics: TopicSettings) -> AsyncIterator[Client]:
    # Straight to the work topics: these tests run workers without a router.
    settings = ClientSettings(kafka=kafka, topics=topics, timeout_s=120, via_router=False)
    async with Client(settings=settings) as c:
        yield c


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return CACHE_DIR.parent
