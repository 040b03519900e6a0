"""The bench's own Kafka and Triton, and environment variables set for a block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from sluicegate.ops.models.build import build_repository
from sluicegate.ops.stack.kafka import KafkaLocalConfig, LocalKafka
from sluicegate.ops.stack.process import free_port
from sluicegate.ops.stack.triton import LocalTriton, TritonLocalConfig
from sluicegate.runtime.kafka import KafkaSettings

__all__ = ["environ", "local_kafka", "local_servers", "loopback_triton"]

Say = Callable[[str], None]


@contextlib.contextmanager
def environ(name: str, value: str | None) -> Iterator[None]:
    """`name` set to `value` (unset when None) for the block, then restored."""
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def loopback_triton(repository: Path, state_dir: Path, cache_dir: Path) -> LocalTriton:
    """A (not yet started) Triton on `repository`, on free loopback ports."""
    return LocalTriton(
        TritonLocalConfig(
            repository=repository,
            state_dir=state_dir,
            cache_dir=cache_dir.resolve(),
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
        )
    )


@contextlib.contextmanager
def local_kafka(cache_dir: Path, state: Path, say: Say) -> Iterator[KafkaSettings]:
    """A one-node Kafka broker on free loopback ports, stopped on exit."""
    kafka = LocalKafka(
        KafkaLocalConfig.cluster(
            state_dir=state / "kafka", cache_dir=cache_dir.resolve(), size=1, heap="512m"
        )
    )
    say("starting Kafka")
    kafka.start(progress=say)
    try:
        yield kafka.settings()
    finally:
        kafka.stop()


@contextlib.contextmanager
def local_servers(
    cache_dir: Path, state: Path, say: Say
) -> Iterator[tuple[KafkaSettings, str, str | None]]:
    """A Kafka broker and a Triton on free loopback ports, stopped on exit."""
    repository = cache_dir.resolve() / "model-repository"
    triton = loopback_triton(repository, state / "triton", cache_dir)
    with local_kafka(cache_dir, state, say) as kafka:
        build_repository(repository, progress=say)
        say("starting Triton")
        triton.start()
        try:
            yield kafka, triton.grpc_url, triton.admin_key()
        finally:
            triton.stop()
