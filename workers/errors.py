"""Errors of the worker pools.

    WorkerError                       code
    └── BackendError                  backend_error
        ├── BackendUnavailable        backend_unavailable   retriable (server down, overloaded)
        ├── BackendTimeout            deadline_exceeded     retriable (client deadline hit)
        └── BackendRejected           backend_rejected      not retriable (bad input for the model)

Backends map their client library's exceptions onto these, so the engine's
policy (retry, bisect, answer) reads `retriable` and never a library type.
"""

from __future__ import annotations

from typing import ClassVar

from sluicegate.schemas.errors import ErrorCode


class WorkerError(RuntimeError):
    code: ClassVar[str] = ErrorCode.WORKER_ERROR
    retriable: ClassVar[bool] = False


class BackendError(WorkerError):
    code: ClassVar[str] = ErrorCode.BACKEND_ERROR


class BackendUnavailable(BackendError):
    code: ClassVar[str] = ErrorCode.BACKEND_UNAVAILABLE
    retriable = True


class BackendTimeout(BackendError):
    code: ClassVar[str] = ErrorCode.DEADLINE_EXCEEDED
    retriable = True


class BackendRejected(BackendError):
    code: ClassVar[str] = ErrorCode.BACKEND_REJECTED
