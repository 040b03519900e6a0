"""Dead-letter records: the original bytes, the reason in headers.

The value of a DLQ record is the input record's value, untouched; headers
carry Kafka-Connect-style context so a tool can replay or triage it without
decoding the payload. No payload bytes or text go into headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codec import Headers, header

_PREFIX = "sg-dlq-"


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    code: str  # stable machine code, e.g. msgpack_format
    message: str  # human reason, names the fix
    error_class: str
    stage: str  # decode | admit | preprocess | infer
    source_topic: str
    source_partition: int
    source_offset: int
    request_id: str | None = None

    def to_headers(self) -> Headers:
        fields = {
            "code": self.code,
            "message": self.message[:1000],
            "error-class": self.error_class,
            "stage": self.stage,
            "source-topic": self.source_topic,
            "source-partition": str(self.source_partition),
            "source-offset": str(self.source_offset),
        }
        if self.request_id is not None:
            fields["request-id"] = self.request_id
        return [(_PREFIX + k, v.encode()) for k, v in fields.items()]

    @classmethod
    def from_headers(cls, hdrs: Sequence[tuple[str, bytes]]) -> DeadLetter:
        def get(name: str) -> str:
            value = header(hdrs, _PREFIX + name)
            if value is None:
                raise ValueError(f"not a DLQ record: header {_PREFIX + name} missing")
            return value.decode()

        rid = header(hdrs, _PREFIX + "request-id")
        return cls(
            code=get("code"),
            message=get("message"),
            error_class=get("error-class"),
            stage=get("stage"),
            source_topic=get("source-topic"),
            source_partition=int(get("source-partition")),
            source_offset=int(get("source-offset")),
            request_id=rid.decode() if rid is not None else None,
        )
