"""Kafka over SASL_SSL with SCRAM-SHA-512 and ACLs: a dedicated broker with certificates made here.

The broker runs KRaft's StandardAuthorizer (deny unless an ACL allows) with
the ACLs of docs/security.md created by `ops/acls.py`. The client SDK, the
router, an exactly-once worker and the rollups each connect as their own
principal through settings alone (the password a SecretStr, never printed)
and a request is answered end to end; each principal can do what its row
says and not what it doesn't; a denied write reaches the SDK and the CLI as
`not_authorized`; a wrong password fails at start naming the settings to fix.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluicegate.ops.acls import acl_bindings, acl_rows, create_acls
from sluicegate.ops.stack.kafka import KafkaLocalConfig, LocalKafka, SaslSsl, make_certificates
from sluicegate.ops.stack.kafka_config import ADMIN_USER
from sluicegate.ops.stack.process import free_port
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import (
    AUTHORIZATION_ERRORS,
    KafkaAuthorizationError,
    KafkaConnectError,
    KafkaSettings,
    idempotent_producer,
    read_committed_consumer,
)
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.streams.control import publish_cancel
from sluicegate.streams.router import Router, RouterSettings
from sluicegate.streams.telemetry import TelemetryRollups, TelemetrySettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    ensure_topics,
    streams_topics,
)
from sluicegate.workers.backends.triton import TritonBackend
from sluicegate.workers.config import TritonSettings, WorkerSettings
from sluicegate.workers.engine import Worker

from ..conftest import CACHE_DIR

pytestmark = pytest.mark.integration

USER, PASSWORD = "sg-worker-text-embed", "correct horse battery staple"
# One SCRAM user per service principal of docs/security.md (same password: local only).
CLIENT, ROUTER, ROLLUPS = "sg-client-app", "sg-router", "sg-telemetry"
PRINCIPALS = {name: PASSWORD for name in (USER, CLIENT, ROUTER, ROLLUPS)}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A SASL_SSL broker that denies whatever no ACL allows, with the table's ACLs applied."""
    root: Path = tmp_path_factory.mktemp("sasl")
    broker = LocalKafka(
        KafkaLocalConfig(
            state_dir=root / "kafka",
            cache_dir=CACHE_DIR,
            port=free_port(),
            controller_port=free_port(),
            heap="384m",
            sasl_ssl=SaslSsl(
                certificates=make_certificates(root / "certs"),
                users=PRINCIPALS,
                authorizer=True,
            ),
        )
    )
    broker.start(timeout=120)
    try:
        admin = broker.settings(*ADMIN_USER)
        topics = TopicSettings()
        names = default_topics(topics) + streams_topics(topics)
        asyncio.run(ensure_topics(admin, names, compacted=compacted_topics(topics)))
        rows = acl_rows(topics, clients=["app"], models=["text-embed"])
        assert asyncio.run(create_acls(admin, acl_bindings(rows))) > 0
        yield broker
    finally:
        broker.stop()


async def test_each_service_principal_serves_with_only_its_acls(
    secure_kafka: LocalKafka, stack: LocalStack
) -> None:
    """Client -> router -> exactly-once worker -> client, each as its own principal."""
    kafka = secure_kafka.settings(USER, PASSWORD)
    assert PASSWORD not in repr(kafka) and PASSWORD not in str(kafka.model_dump())
    settings = WorkerSettings(
        model="text-embed",
        kafka=kafka,
        triton=TritonSettings(url=stack.settings.triton_url, admin_key=stack.triton.admin_key()),
        delivery="exactly_once",  # transactions: the transactional-id ACL is exercised
    )
    router = Router(settings=RouterSettings(kafka=secure_kafka.settings(ROUTER, PASSWORD)))
    rollups = TelemetrySettings(kafka=secure_kafka.settings(ROLLUPS, PASSWORD), metrics_port=0)
    backend = TritonBackend(url=settings.triton.url, admin_key=stack.triton.admin_key())
    try:
        async with (
            asyncio.timeout(180),
            Worker(settings=settings, backend=backend),
            router,
            TelemetryRollups(settings=rollups),
        ):
            client_settings = ClientSettings(kafka=secure_kafka.settings(CLIENT, PASSWORD))
            async with Client(settings=client_settings) as client:
                result = await client.submit(
                    InferenceRequest(
                        request_id=uuid.uuid4().hex, model="text-embed", texts=["secure"]
                    )
                )
    finally:
        await backend.close()
    assert result.status is Status.OK and len(result.outputs["embedding"]) == 384
    assert router.stats["routed"] >= 1


async def test_a_client_cannot_write_control_or_work_topics(secure_kafka: LocalKafka) -> None:
    """Denied writes reach the SDK and the CLI as `not_authorized`, naming the fix."""
    kafka = secure_kafka.settings(CLIENT, PASSWORD)
    with pytest.raises(KafkaAuthorizationError) as control:
        await publish_cancel(kafka, TopicSettings().control, "r-1")
    routes_itself = ClientSettings(kafka=kafka, via_router=False)
    async with Client(settings=routes_itself) as client:
        with pytest.raises(KafkaAuthorizationError) as work:
            await client.send(InferenceRequest(request_id="r-2", model="text-embed", texts=["x"]))
    for error, topic in ((control, "sg.control"), (work, "sg.work.text-embed.cpu")):
        message = str(error.value)
        assert error.value.code == ErrorCode.NOT_AUTHORIZED
        assert message.startswith("not_authorized") and f"User:{CLIENT}" in message
        assert topic in message and "docs/security.md" in message
    env = {
        "SLUICEGATE_KAFKA__" + key.upper(): str(value)
        for key, value in {
            "bootstrap_servers": kafka.bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": CLIENT,
            "sasl_password": PASSWORD,
            "ssl_cafile": kafka.ssl_cafile,
        }.items()
    }
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sluicegate", "cancel", "r-3"],
        env={**os.environ, **env, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "not_authorized" in cli.stdout + cli.stderr and "Traceback" not in cli.stderr


async def test_a_principal_that_may_not_read_results_is_told(secure_kafka: LocalKafka) -> None:
    """The worker may write and describe sg.results, not read it: waiting fails, named."""
    async with Client(settings=ClientSettings(kafka=secure_kafka.settings(USER, PASSWORD))) as c:
        future = c.expect("r-4")
        with pytest.raises(KafkaAuthorizationError) as refused:
            await c.wait("r-4", future, timeout=90)
    message = str(refused.value)
    assert message.startswith("not_authorized") and "read topic 'sg.results'" in message


async def _write(kafka: KafkaSettings, topic: str, **options: Any) -> None:
    producer = idempotent_producer(kafka, **options)
    try:
        await producer.start()
        if "transactional_id" in options:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"acl-probe")
        else:
            await producer.send_and_wait(topic, b"acl-probe")
    finally:
        await producer.stop()


async def _read_as_group(kafka: KafkaSettings, topic: str, group: str) -> None:
    consumer = read_committed_consumer(kafka, group_id=group, auto_offset_reset="earliest")
    consumer.subscribe([topic])
    try:
        await consumer.start()
        async with asyncio.timeout(60):
            await consumer.getmany(timeout_ms=2000)
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("user", "op", "allowed"),
    [
        (CLIENT, ("write", "sg.requests"), True),
        (CLIENT, ("read", "sg.results", "sg.client-app"), False),  # no group ACL: assign only
        (ROUTER, ("read", "sg.requests", "sg.router"), True),
        (ROUTER, ("write", "sg.work.ocr.cpu"), True),
        (ROUTER, ("write", "sg.telemetry"), False),
        (USER, ("read", "sg.work.text-embed.cpu", "sg.worker.text-embed.cpu"), True),
        (USER, ("read", "sg.work.ocr.cpu", "sg.worker.ocr.cpu"), False),
        (USER, ("write", "sg.requests"), False),
        (USER, ("write", "sg.control"), False),
        (USER, ("txn", "sg.results", "sg.worker.text-embed.cpu-p-0"), True),
        (USER, ("txn", "sg.results", "sg.worker.ocr.cpu-p-0"), False),
        (ROLLUPS, ("read", "sg.telemetry", "sg.telemetry.rollup"), True),
        (ROLLUPS, ("write", "sg.telemetry.rollup"), True),
        (ROLLUPS, ("write", "sg.results"), False),
    ],
)
async def test_each_principal_can_do_exactly_what_its_row_says(
    secure_kafka: LocalKafka, user: str, op: tuple[str, ...], allowed: bool
) -> None:
    kafka = secure_kafka.settings(user, PASSWORD)
    match op:
        case ("write", topic):
            attempt = _write(kafka, topic)
        case ("txn", topic, transactional_id):
            attempt = _write(kafka, topic, transactional_id=transactional_id)
        case ("read", topic, group):
            attempt = _read_as_group(kafka, topic, group)
        case _:
            raise AssertionError(op)
    async with asyncio.timeout(90):
        if allowed:
            await attempt
        else:
            with pytest.raises(AUTHORIZATION_ERRORS):
                await attempt


async def test_a_wrong_password_fails_clearly(secure_kafka: LocalKafka, stack: LocalStack) -> None:
    wrong = secure_kafka.settings(USER, "not the password")
    with pytest.raises(KafkaConnectError) as client_error:
        async with Client(settings=ClientSettings(kafka=wrong)):
            pass
    backend = TritonBackend(url=stack.settings.triton_url, admin_key=stack.triton.admin_key())
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
