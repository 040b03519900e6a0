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


class WorkerError(RuntimeError):
    code: ClassVar[str] = "worker_error"
    retriable: ClassVar[bool] = False


class BackendError(WorkerError):
    code = "backend_error"


class BackendUnavailable(BackendError):
    code = "backend_unavailable"
    retriable = True


class BackendTimeout(BackendError):
    code = "deadline_exceeded"
    retriable = True


class BackendRejected(BackendError):
    code = "backend_rejected"
