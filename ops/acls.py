"""The Kafka ACLs of docs/security.md as data, and one call that creates them on a cluster.

:func:`acl_rows` turns the table (one principal per service) into
:class:`AclRow` values, a pure function of the topic names, the client apps
and the served models; :func:`acl_bindings` expands rows into one
:class:`AclBinding` per operation, as the broker stores them;
:func:`create_acls` sends them with the Kafka protocol's CreateAcls request
(idempotent: an existing binding is not an error). `sluicegate topics acls`
prints or applies them.

Written by hand: aiokafka's admin client has no `create_acls` (kafka-python's
has, but it is not a dependency, and `kafka-acls.sh` needs a JVM and the
broker jars), while aiokafka ships the CreateAcls request struct; this module
only builds those requests and reads their error codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from sluicegate.runtime.kafka import KafkaSettings, admin_client
from sluicegate.schemas.settings import TopicSettings

__all__ = ["AclBinding", "AclRow", "Op", "Pattern", "Resource", "acl_bindings", "acl_rows"]


class Resource(IntEnum):
    """Kafka's ResourceType codes."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Pattern(IntEnum):
    """Kafka's PatternType codes."""

    LITERAL = 3
    PREFIXED = 4


class Op(IntEnum):
    """Kafka's AclOperation codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10


_ALLOW = 3  # AclPermissionType.ALLOW


@dataclass(frozen=True, kw_only=True)
class AclRow:
    """One row of the table: a principal may do `ops` on the resources named."""

    principal: str  # "User:sg-router"
    resource: Resource
    names: tuple[str, ...]
    pattern: Pattern = Pattern.LITERAL
    ops: tuple[Op, ...]


@dataclass(frozen=True, kw_only=True)
class AclBinding:
    """One ACL as the broker stores it: ALLOW `op` on one resource, from any host."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    op: Op

    def __str__(self) -> str:
        return (
            f"{self.principal} ALLOW {self.op.name} on {self.resource.name} "
            f"{self.name!r} ({self.pattern.name.lower()})"
        )


_RD = (Op.READ, Op.DESCRIBE)
_WD = (Op.WRITE, Op.DESCRIBE)
_RWD = (Op.READ, Op.WRITE, Op.DESCRIBE)


def acl_rows(
    topics: TopicSettings,
    *,
    clients: Sequence[str] = (),
    models: Sequence[str] = (),
    clients_route_themselves: bool = False,
    router_group: str = "sg.router",
    telemetry_group: str = "sg.telemetry.rollup",
    worker_group_prefix: str = "sg.worker",
) -> list[AclRow]:
    """The rows of docs/security.md for `clients` (app names) and `models` (one worker each).

    Principals are `User:sg-client-<app>`, `User:sg-router`,
    `User:sg-worker-<model>` and `User:sg-telemetry`; the admin principal is a
    super user of the brokers and needs no rows.
    """
    t, work = topics, f"{topics.work_prefix}."
    rows: list[AclRow] = []
    for app in clients:
        who = f"User:sg-client-{app}"
        rows += [
            AclRow(principal=who, resource=Resource.TOPIC, names=(t.requests,), ops=_WD),
            AclRow(principal=who, resource=Resource.TOPIC, names=(t.results,), ops=_RD),
        ]
        if clients_route_themselves:
            rows.append(
                AclRow(
                    principal=who,
                    resource=Resource.TOPIC,
                    names=(work,),
                    pattern=Pattern.PREFIXED,
                    ops=_WD,
                )
            )
    router = "User:sg-router"
    rows += [
        AclRow(principal=router, resource=Resource.TOPIC, names=(t.requests,), ops=_RD),
        AclRow(principal=router, resource=Resource.GROUP, names=(router_group,), ops=(Op.READ,)),
        # Work topics: it routes to them, and re-routes what waits on a dead pool's
        # topic by joining that pool's group (streams/failover.py), hence Read too.
        AclRow(
            principal=router,
            resource=Resource.TOPIC,
            names=(work,),
            pattern=Pattern.PREFIXED,
            ops=_RWD,
        ),
        AclRow(
            principal=router,
            resource=Resource.GROUP,
            names=(f"{worker_group_prefix}.",),
            pattern=Pattern.PREFIXED,
            ops=(Op.READ, Op.DESCRIBE),
        ),
        # The cache entries and drift baselines that survive a restart (streams/state.py).
        AclRow(principal=router, resource=Resource.TOPIC, names=(t.router_state,), ops=_RWD),
        # exactly_once: one transactional id per sg.requests partition, `{group}-{topic}-{p}`.
        AclRow(
            principal=router,
            resource=Resource.TRANSACTIONAL_ID,
            names=(f"{router_group}-",),
            pattern=Pattern.PREFIXED,
            ops=_WD,
        ),
        AclRow(principal=router, resource=Resource.TOPIC, names=(t.dlq, t.shadow_results), ops=_WD),
        # Followers: the control topic (cancels; the router writes their tombstones),
        # rollups (pool health; it writes drift events) and results (the result cache).
        AclRow(
            principal=router,
            resource=Resource.TOPIC,
            names=(t.control, t.telemetry_rollup, t.results),
            ops=_RWD,
        ),
    ]
    for model in models:
        who = f"User:sg-worker-{model}"
        group = f"{worker_group_prefix}.{model}."
        rows += [
            AclRow(
                principal=who,
                resource=Resource.TOPIC,
                names=(f"{work}{model}.",),
                pattern=Pattern.PREFIXED,
                ops=_RD,
            ),
            AclRow(
                principal=who,
                resource=Resource.GROUP,
                names=(group,),
                pattern=Pattern.PREFIXED,
                ops=(Op.READ,),
            ),
            AclRow(
                principal=who,
                resource=Resource.TOPIC,
                names=(t.results, t.telemetry, t.dlq),
                ops=_WD,
            ),
            AclRow(principal=who, resource=Resource.TOPIC, names=(t.control,), ops=_RD),
            # Crash-loop quarantine: attempt counts (workers/quarantine.py).
            AclRow(principal=who, resource=Resource.TOPIC, names=(t.attempts,), ops=_RWD),
            # exactly_once: one transactional id per input partition, `{group}-{topic}-{p}`.
            AclRow(
                principal=who,
                resource=Resource.TRANSACTIONAL_ID,
                names=(group,),
                pattern=Pattern.PREFIXED,
                ops=_WD,
            ),
        ]
    rollups = "User:sg-telemetry"
    rows += [
        AclRow(
            principal=rollups,
            resource=Resource.TOPIC,
            names=(t.telemetry, t.results, t.shadow_results),
            ops=_RD,
        ),
        AclRow(
            principal=rollups, resource=Resource.GROUP, names=(telemetry_group,), ops=(Op.READ,)
        ),
        AclRow(principal=rollups, resource=Resource.TOPIC, names=(t.telemetry_rollup,), ops=_WD),
        # Route guards: it follows the routes and publishes a tripped canary's rollback.
        AclRow(principal=rollups, resource=Resource.TOPIC, names=(t.control,), ops=_RWD),
        # Lag: the workers' committed offsets and their work topics' partitions.
        AclRow(
            principal=rollups,
            resource=Resource.GROUP,
            names=(f"{worker_group_prefix}.",),
            pattern=Pattern.PREFIXED,
            ops=(Op.DESCRIBE,),
        ),
        AclRow(
            principal=rollups,
            resource=Resource.TOPIC,
            names=(work,),
            pattern=Pattern.PREFIXED,
            ops=(Op.DESCRIBE,),
        ),
    ]
    return rows


def acl_bindings(rows: Iterable[AclRow]) -> list[AclBinding]:
    """One binding per (principal, resource name, operation), in table order, no duplicates."""
    out: dict[AclBinding, None] = {}
    for row in rows:
        for name in row.names:
            for op in row.ops:
                binding = AclBinding(
                    principal=row.principal,
                    resource=row.resource,
                    name=name,
                    pattern=row.pattern,
                    op=op,
                )
                out[binding] = None
    return list(out)


class AclError(RuntimeError):
    """The brokers refused to create an ACL; the message names the binding and the fix."""


async def create_acls(kafka: KafkaSettings, bindings: Iterable[AclBinding]) -> int:
    """Create `bindings` (existing ones are kept as they are); returns how many were sent.

    `kafka` must authenticate as a principal with Alter on the cluster (a super user).
    """
    admin = admin_client(kafka)
    await admin.start()
    sent = 0
    try:
        for b in bindings:
            request = CreateAclsRequest(
                b.resource, b.name, b.pattern, b.principal, "*", b.op, _ALLOW
            )
            response = await admin._send_request(request)  # no public create_acls
            for error_code, message in response.creation_responses:
                if error_code != 0:
                    error = for_code(error_code)
                    raise AclError(
                        f"creating the ACL {b} failed: {error.__name__}: {message}; the "
                        f"admin user ({kafka.sasl_username!r}) must be in the brokers' "
                        "super.users (or hold Alter on the cluster), and the brokers must run "
                        "an authorizer (authorizer.class.name)"
                    )
            sent += 1
    finally:
        await admin.close()
    return sent
