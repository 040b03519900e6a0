"""Every error code on the wire, with its message."""

from __future__ import annotations

import pytest

from sluicegate.schemas import errors
from sluicegate.schemas.errors import ErrorCode, WireError
from sluicegate.workers import errors as worker_errors

# The wire values: renaming one breaks every consumer of results and dead letters.
WIRE_VALUES = {
    "wire_error", "msgpack_format", "schema_version", "schema", "over_limit", "image_bomb",
    "invalid_image", "unsupported_image_format", "image_outside_root", "invalid_input",
    "unknown_model", "cancelled", "over_budget", "over_quota", "deadline_expired",
    "worker_error", "backend_error", "backend_unavailable", "deadline_exceeded",
    "backend_rejected", "error", "invalid_reply_to", "reply_to_unwritable", "poison",
    "control_malformed",
    "image_ref_refused",
    "not_authorized",
    "version_unavailable", "precision_unavailable",
}  # fmt: skip


def test_the_wire_values_are_unchanged() -> None:
    assert {code.value for code in ErrorCode} == WIRE_VALUES


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_message(code: ErrorCode) -> None:
    assert code.message and code.message[0].islower()
    assert code == code.value and f"{code}" == code.value  # interchangeable with the string


def _codes(module: object, root: type) -> set[str]:
    return {
        cls.code for cls in vars(module).values() if isinstance(cls, type) and issubclass(cls, root)
    }


def test_every_error_class_code_is_listed() -> None:
    listed = {code.value for code in ErrorCode}
    assert _codes(errors, WireError) <= listed
    assert _codes(worker_errors, worker_errors.WorkerError) <= listed


def test_refusal_messages_name_the_fix() -> None:
    assert "later deadline" in ErrorCode.DEADLINE_EXPIRED.message
    assert "cancel record" in ErrorCode.CANCELLED.message
    assert "sluicegate topics acls --apply" in ErrorCode.NOT_AUTHORIZED.message
