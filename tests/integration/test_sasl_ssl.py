"""Kafka over SASL_SSL with SCRAM-SHA-512: a dedicated broker with certificates made here.

The client SDK and a worker connect through settings alone (the password a
SecretStr, never printed), a request is answered end to end, and a wrong
password fails at start with an error that names the settings to fix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluicegate.ops.stack.kafka import KafkaLocalConfig, LocalKafka, SaslSsl, make_certificates
from sluicegate.ops.stack.process import free_port
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import KafkaConnectError
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.streams.topology import default_topics, ensure_topics
from sluicegate.workers.backends.triton import TritonBackend
from sluicegate.workers.config import TritonSettings, WorkerSettings
from sluicegate.workers.engine import Worker

from ..conftest import CACHE_DIR

pytestmark = pytest.mark.integration

USER, PASSWORD = "sluicegate-worker", "correct horse battery staple"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    root: Path = tmp_path_factory.mktemp("sasl")
    broker = LocalKafka(
        KafkaLocalConfig(
            state_dir=root / "kafka",
            cache_dir=CACHE_DIR,
            port=free_port(),
            controller_port=free_port(),
            heap="384m",
            sasl_ssl=SaslSsl(
                certificates=make_certificates(root / "certs"), users={USER: PASSWORD}
            ),
        )
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


async def test_client_and_worker_serve_over_sasl_ssl(
    secure_kafka: LocalKafka, stack: LocalStack
) -> None:
    kafka = secure_kafka.settings(USER, PASSWORD)
    assert PASSWORD not in repr(kafka) and PASSWORD not in str(kafka.model_dump())
    prefix = f"s{uuid.uuid4().hex[:8]}"
    topics = TopicSettings.prefixed(prefix)
    await ensure_topics(kafka, default_topics(topics))
    settings = WorkerSettings(
        model="text-embed",
        kafka=kafka,
        topics=topics,
        triton=TritonSettings(url=stack.settings.triton_url),
        delivery="exactly_once",  # transactions over SASL_SSL too
    )
    backend = TritonBackend(url=settings.triton.url)
    try:
        async with asyncio.timeout(150), Worker(settings=settings, backend=backend):
            # No router on this broker: straight to the work topic.
            settings = ClientSettings(kafka=kafka, topics=topics, via_router=False)
            async with Client(settings=settings) as client:
                result = await client.submit(
                    InferenceRequest(
                        request_id=uuid.uuid4().hex, model="text-embed", texts=["secure"]
                    )
                )
    finally:
        await backend.close()
    assert result.status is Status.OK and len(result.outputs["embedding"]) == 384


async def test_a_wrong_password_fails_clearly(secure_kafka: LocalKafka, stack: LocalStack) -> None:
    wrong = secure_kafka.settings(USER, "not the password")
    with pytest.raises(KafkaConnectError) as client_error:
        async with Client(settings=ClientSettings(kafka=wrong)):
            pass
    backend = TritonBackend(url=stack.settings.triton_url)
    try:
        with pytest.raises(KafkaConnectError) as worker_error:
            settings = WorkerSettings(model="text-embed", kafka=wrong)
            async with Worker(settings=settings, backend=backend):  # start() raises
                pass
    finally:
        await backend.close()
    for error in (client_error.value, worker_error.value):
        message = str(error)
        assert "SCRAM-SHA-512" in message and USER in message
        assert "SLUICEGATE_KAFKA__SASL_PASSWORD" in message
        assert "not the password" not in message
