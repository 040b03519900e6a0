"""Declarative topics (`topics.yaml`) and the plan that brings a cluster to them.

Pure: parsing, validation and diffing do no I/O, so the plan is unit-tested
with made-up cluster states. :mod:`sluicegate.streams.provision` reads the
real cluster and carries a plan out.

What a plan may do, and what it never does:

- create a missing topic with its partitions, replication factor and configs;
- add partitions (Kafka cannot remove them: fewer declared than present is a
  `Blocker`);
- set the declared configs, keeping any other per-topic override as it is;
- never delete a topic, never change a replication factor (that needs a
  partition reassignment, an operator's decision): both are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "Blocker",
    "Change",
    "ClusterTopic",
    "Plan",
    "TopicFile",
    "TopicSpec",
    "TopicSpecError",
    "load_topic_file",
    "plan",
]


class TopicSpecError(ValueError):
    """`topics.yaml` is malformed or asks for something Kafka cannot do."""

    code = "invalid_topic_spec"


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    retention_ms: int | None = Field(default=None, ge=-1)  # -1: keep forever
    cleanup_policy: Literal["delete", "compact", "compact,delete"] | None = None
    # Any other topic-level Kafka config, verbatim (`max.message.bytes`, ...).
    config: dict[str, str] = Field(default_factory=dict)


class TopicSpec(_Settings):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")


class TopicFile(BaseModel):
    """The whole file: defaults, then one entry per topic (entries override defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    defaults: _Settings = Field(default_factory=_Settings)
    topics: list[TopicSpec]

    @model_validator(mode="after")
    def _unique(self) -> TopicFile:
        names = [t.name for t in self.topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"topics listed twice: {', '.join(dupes)}")
        for t in self.resolved():
            if t.min_insync_replicas and t.min_insync_replicas > t.replication_factor:
                raise ValueError(
                    f"{t.name}: min_insync_replicas {t.min_insync_replicas} > replication_factor "
                    f"{t.replication_factor}; no write could ever succeed with acks=all"
                )
        return self

    def resolved(self) -> list[Desired]:
        return [_resolve(self.defaults, t) for t in self.topics]


@dataclass(frozen=True)
class Desired:
    """One topic with the defaults applied: what the cluster must end up holding."""

    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int | None
    configs: Mapping[str, str]  # Kafka config names, string values


def _resolve(defaults: _Settings, spec: TopicSpec) -> Desired:
    def pick(attr: str, fallback: int | None) -> int | None:
        value: int | None = getattr(spec, attr)
        if value is None:
            value = getattr(defaults, attr)
        return fallback if value is None else value

    configs = {**defaults.config, **spec.config}
    min_isr = pick("min_insync_replicas", None)
    retention = spec.retention_ms if spec.retention_ms is not None else defaults.retention_ms
    cleanup = spec.cleanup_policy or defaults.cleanup_policy
    if min_isr is not None:
        configs["min.insync.replicas"] = str(min_isr)
    if retention is not None:
        configs["retention.ms"] = str(retention)
    if cleanup is not None:
        configs["cleanup.policy"] = cleanup
    return Desired(
        name=spec.name,
        partitions=pick("partitions", 1) or 1,
        replication_factor=pick("replication_factor", 1) or 1,
        min_insync_replicas=min_isr,
        configs=dict(sorted(configs.items())),
    )


def load_topic_file(path: Path) -> TopicFile:
    """Parse and validate `path`; raises :class:`TopicSpecError` naming the problem."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopicSpecError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TopicSpecError(f"{path} is not valid YAML: {exc}") from None
    try:
        return TopicFile.model_validate(raw)
    except ValidationError as exc:
        raise TopicSpecError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class ClusterTopic:
    """What the cluster holds for one topic (read by `provision.describe`)."""

    name: str
    partitions: int
    replication_factor: int
    # Per-topic overrides only (config source DYNAMIC_TOPIC_CONFIG), not broker defaults.
    overrides: Mapping[str, str]
    # Every config's effective value, defaults included, for the diff's "from" side.
    effective: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    topic: str
    kind: Literal["create", "partitions", "config"]
    detail: str  # one line for the diff
    # For "config": the complete override set to write (declared + kept overrides).
    configs: Mapping[str, str] = field(default_factory=dict)
    partitions: int = 0
    replication_factor: int = 0


@dataclass(frozen=True)
class Blocker:
    """A difference apply will not fix; the message names what to do instead."""

    topic: str
    message: str


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    blockers: tuple[Blocker, ...]
    unchanged: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def diff_lines(self) -> list[str]:
        """A human diff: `+` create, `~` change, `=` unchanged, `!` will not change."""
        lines = [
            f"{'+' if c.kind == 'create' else '~'} {c.topic}: {c.detail}" for c in self.changes
        ]
        lines += [f"! {b.topic}: {b.message}" for b in self.blockers]
        lines += [f"= {name}" for name in self.unchanged]
        return lines


def plan(desired: list[Desired], cluster: Mapping[str, ClusterTopic], *, brokers: int) -> Plan:
    """The changes that make `cluster` match `desired`, and what apply will not do.

    Raises :class:`TopicSpecError` when a topic to create asks for more replicas
    than the cluster has brokers (Kafka would refuse it anyway, less clearly).
    """
    changes: list[Change] = []
    blockers: list[Blocker] = []
    unchanged: list[str] = []
    for want in desired:
        have = cluster.get(want.name)
        if have is None:
            if want.replication_factor > brokers:
                raise TopicSpecError(
                    f"{want.name}: replication_factor {want.replication_factor} but the cluster "
                    f"has {brokers} broker(s); lower it in the topic file or add brokers"
                )
            cfg = "".join(f" {k}={v}" for k, v in want.configs.items())
            changes.append(
                Change(
                    topic=want.name,
                    kind="create",
                    detail=f"partitions={want.partitions} rf={want.replication_factor}{cfg}",
                    configs=want.configs,
                    partitions=want.partitions,
                    replication_factor=want.replication_factor,
                )
            )
            continue
        before = len(changes)
        if want.partitions > have.partitions:
            changes.append(
                Change(
                    topic=want.name,
                    kind="partitions",
                    detail=f"partitions {have.partitions} -> {want.partitions}",
                    partitions=want.partitions,
                )
            )
        elif want.partitions < have.partitions:
            blockers.append(
                Blocker(
                    want.name,
                    f"has {have.partitions} partitions, file says {want.partitions}: Kafka cannot "
                    f"remove partitions; raise the file's count or recreate the topic",
                )
            )
        if want.replication_factor != have.replication_factor:
            blockers.append(
                Blocker(
                    want.name,
                    f"replication factor {have.replication_factor} -> {want.replication_factor} "
                    f"is not changed by apply; use kafka-reassign-partitions.sh",
                )
            )
        drift = {k: v for k, v in want.configs.items() if have.overrides.get(k) != v}
        if drift:
            detail = ", ".join(
                f"{k} {have.effective.get(k, have.overrides.get(k, '(default)'))} -> {v}"
                for k, v in drift.items()
            )
            # AlterConfigs replaces a topic's whole override set: keep the others.
            merged = {**have.overrides, **want.configs}
            changes.append(
                Change(
                    topic=want.name,
                    kind="config",
                    detail=detail,
                    configs=dict(sorted(merged.items())),
                )
            )
        if len(changes) == before and not any(b.topic == want.name for b in blockers):
            unchanged.append(want.name)
    return Plan(changes=tuple(changes), blockers=tuple(blockers), unchanged=tuple(unchanged))
