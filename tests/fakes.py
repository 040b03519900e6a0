"""Small fakes shared by tests that need no broker."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeRecord:
    """The fields of aiokafka's ConsumerRecord a worker reads (`workers.answers.Record`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = b""
    headers: list[tuple[str, bytes]] = field(default_factory=list)
