"""Errors of the streams processes (router, telemetry, control).

    StreamsError                 code
    └── NoEarlierRouteError      no_earlier_route    rollback with nothing to roll back to

    MissingTopicError            missing_topic       a topic the process reads does not exist
                                                     (raised by the runtime floor's follower;
                                                     re-exported here)

Refusals of a request are not exceptions here: the router answers them with
the wire error codes of `sluicegate.schemas.errors` (and `over_quota`,
`cancelled`).
"""

from __future__ import annotations

from typing import ClassVar

from sluicegate.runtime.kafka import MissingTopicError

__all__ = ["MissingTopicError", "NoEarlierRouteError", "StreamsError"]


class StreamsError(Exception):
    code: ClassVar[str] = "streams_error"


class NoEarlierRouteError(StreamsError, LookupError):
    code = "no_earlier_route"
