"""The local Kafka launcher against a real broker: start, round trip, stop, restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sluicegate.ops.stack.kafka import KafkaLocalConfig, LocalKafka
from sluicegate.ops.stack.process import StackError, free_port, pid_alive, port_is_open

pytestmark = pytest.mark.integration

# The repository's shared cache: the jars are fetched once for every test run.
CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache"


def _two_free_ports() -> tuple[int, int]:
    port = free_port()
    while (controller_port := free_port()) == port:
        pass
    return port, controller_port


async def _consume_one(bootstrap: str, topic: str) -> tuple[bytes | None, bytes | None]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-kafka-local-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    return record.key, record.value


async def test_start_round_trip_stop_restart(tmp_path: Path) -> None:
    port, controller_port = _two_free_ports()
    cfg = KafkaLocalConfig(
        state_dir=tmp_path / "kafka",
        port=port,
        controller_port=controller_port,
        cache_dir=CACHE_DIR,
    )
    kafka = LocalKafka(cfg)
    topic = f"test-kafka-local-{uuid.uuid4().hex[:8]}"

    # start() blocks while it polls; keep the event loop free.
    await asyncio.to_thread(kafka.start, timeout=120)
    try:
        pid = kafka.pid()
        assert pid is not None
        assert kafka.bootstrap_servers == f"127.0.0.1:{port}"
        with pytest.raises(StackError, match="sluicegate down"):
            kafka.start()

        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
        await producer.start()
        try:
            # Auto-created topic: proves auto.create.topics.enable and num.partitions.
            metadata = await producer.send_and_wait(topic, b"hello", key=b"k1")
            partitions = await producer.partitions_for(topic)
        finally:
            await producer.stop()
        assert metadata.topic == topic
        assert len(partitions) == cfg.num_partitions

        assert await _consume_one(kafka.bootstrap_servers, topic) == (b"k1", b"hello")
    finally:
        stopped = await asyncio.to_thread(kafka.stop)

    assert stopped
    assert not pid_alive(pid)
    assert not kafka.is_running()
    assert not port_is_open(cfg.host, cfg.port)
    assert not port_is_open(cfg.host, cfg.controller_port)
    assert kafka.log_path.stat().st_size > 0  # the broker logs into its state dir

    # A second start reuses the formatted storage and keeps the topic's data.
    await asyncio.to_thread(kafka.start, timeout=120)
    try:
        assert await _consume_one(kafka.bootstrap_servers, topic) == (b"k1", b"hello")
    finally:
        assert await asyncio.to_thread(kafka.stop)
    assert not kafka.is_running()
    assert not port_is_open(cfg.host, cfg.port)
