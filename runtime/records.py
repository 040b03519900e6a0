"""What workers and streams code read of a consumed Kafka record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Record(Protocol):
    """The fields of aiokafka's ConsumerRecord that our code reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass
class RecordData:
    """A `Record` built by hand (benchmarks, tests), not read from a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
