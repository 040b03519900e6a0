"""The ACL table of docs/security.md as bindings, and the broker config that enforces them."""

from __future__ import annotations

from pathlib import Path

from sluicegate.ops.acls import Op, Pattern, Resource, acl_bindings, acl_rows
from sluicegate.ops.stack.kafka_config import (
    Certificates,
    KafkaLocalConfig,
    SaslSsl,
    server_properties,
)
from sluicegate.schemas.settings import TopicSettings


def _allowed(principal: str) -> set[tuple[Resource, str, Pattern, Op]]:
    rows = acl_rows(TopicSettings(), clients=["app"], models=["ocr"])
    return {
        (b.resource, b.name, b.pattern, b.op)
        for b in acl_bindings(rows)
        if b.principal == principal
    }


def test_a_client_writes_requests_and_reads_results_only() -> None:
    assert _allowed("User:sg-client-app") == {
        (Resource.TOPIC, "sg.requests", Pattern.LITERAL, Op.WRITE),
        (Resource.TOPIC, "sg.requests", Pattern.LITERAL, Op.DESCRIBE),
        (Resource.TOPIC, "sg.results", Pattern.LITERAL, Op.READ),
        (Resource.TOPIC, "sg.results", Pattern.LITERAL, Op.DESCRIBE),
    }


def test_a_worker_reads_its_own_work_topics_and_owns_its_transactional_ids() -> None:
    worker = _allowed("User:sg-worker-ocr")
    assert (Resource.TOPIC, "sg.work.ocr.", Pattern.PREFIXED, Op.READ) in worker
    assert (Resource.TRANSACTIONAL_ID, "sg.worker.ocr.", Pattern.PREFIXED, Op.WRITE) in worker
    assert (Resource.GROUP, "sg.worker.ocr.", Pattern.PREFIXED, Op.READ) in worker
    assert not any(name == "sg.requests" for _, name, _, _ in worker)
    assert (Resource.TOPIC, "sg.control", Pattern.LITERAL, Op.WRITE) not in worker


def test_bindings_are_unique_and_clients_may_route_themselves() -> None:
    rows = acl_rows(TopicSettings(), clients=["a"], clients_route_themselves=True)
    bindings = acl_bindings(rows + rows)
    assert len(bindings) == len(set(bindings))
    assert any(
        b.principal == "User:sg-client-a" and b.name == "sg.work." and b.op is Op.WRITE
        for b in bindings
    )


def test_the_authorizer_denies_by_default_and_trusts_the_brokers(tmp_path: Path) -> None:
    certs = Certificates(keystore=tmp_path, truststore=tmp_path, ca_pem=tmp_path, password="p")
    cfg = KafkaLocalConfig(
        state_dir=tmp_path, sasl_ssl=SaslSsl(certificates=certs, authorizer=True)
    )
    props = server_properties(cfg, cfg.nodes[0])
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    plain = KafkaLocalConfig(state_dir=tmp_path, sasl_ssl=SaslSsl(certificates=certs))
    assert "authorizer.class.name" not in server_properties(plain, plain.nodes[0])
