"""Errors of the streams processes (router, telemetry, control).

    StreamsError                 code
    ├── MissingTopicError        missing_topic       a topic the process reads does not exist
    └── NoEarlierRouteError      no_earlier_route    rollback with nothing to roll back to

Refusals of a request are not exceptions here: the router answers them with
the wire error codes of `sluicegate.schemas.errors` (and `over_quota`,
`cancelled`).
"""

from __future__ import annotations

from typing import ClassVar


class StreamsError(Exception):
    code: ClassVar[str] = "streams_error"


class MissingTopicError(StreamsError, TimeoutError):
    code = "missing_topic"


class NoEarlierRouteError(StreamsError, LookupError):
    code = "no_earlier_route"
