"""Maps with missing fields, nil arrays, an unknown schema version, bad deadlines,
oversized text and an oversized message."""

from __future__ import annotations

import time

from . import Case, packed


def cases() -> list[Case]:
    now_ms = time.time_ns() // 1_000_000
    base = {"model": "text-embed", "texts": ["a fine sentence"]}
    return [
        Case(
            name="missing-model",
            model="text-embed",
            value=packed({"request_id": "c-nomodel", "texts": ["x"]}),
            request_id="c-nomodel",
            code="schema",
        ),
        Case(
            name="missing-request-id",
            model="text-embed",
            value=packed(base),
            request_id="c-norid",
            code="schema",
        ),
        Case(
            name="arrays-of-nil",
            model="text-embed",
            value=packed({**base, "request_id": "c-nils", "texts": [None, None]}),
            request_id="c-nils",
            code="schema",
        ),
        Case(
            name="nil-everywhere",
            model="text-embed",
            value=packed({"request_id": "c-nil2", "model": None, "texts": None, "images": None}),
            request_id="c-nil2",
            code="schema",
        ),
        Case(
            name="unknown-field",
            model="text-embed",
            value=packed({**base, "request_id": "c-extra", "prompt": "x"}),
            request_id="c-extra",
            code="schema",
        ),
        Case(
            name="unknown-schema-version",
            model="text-embed",
            value=packed({**base, "request_id": "c-v99"}),
            request_id="c-v99",
            code="schema_version",
            headers=[("sg-schema", b"99")],
        ),
        Case(
            name="negative-deadline",
            model="text-embed",
            value=packed({**base, "request_id": "c-negdl", "deadline_ms": -5}),
            request_id="c-negdl",
            code="schema",
        ),
        Case(
            name="past-deadline",
            model="text-embed",
            value=packed({**base, "request_id": "c-pastdl", "deadline_ms": now_ms - 60_000}),
            request_id="c-pastdl",
            code="deadline_expired",
            status="expired",
            dlq=False,
        ),
        Case(
            name="oversized-text",
            model="text-embed",
            value=packed({**base, "request_id": "c-bigtext", "texts": ["word " * 5_000]}),
            request_id="c-bigtext",
            code="over_limit",
        ),
        Case(
            name="too-many-texts",
            model="text-embed",
            value=packed({**base, "request_id": "c-manytexts", "texts": ["x"] * 40}),
            request_id="c-manytexts",
            code="over_limit",
        ),
        Case(
            name="empty-text",
            model="text-embed",
            value=packed({**base, "request_id": "c-blank", "texts": ["   "]}),
            request_id="c-blank",
            code="invalid_input",
        ),
        Case(
            name="oversized-message",
            model="text-embed",
            # Over the worker's 8 MiB wire limit, under the broker's 10 MiB.
            value=packed(
                {**base, "request_id": "c-bigmsg", "parameters": {"pad": "x" * (9 * 2**20)}}
            ),
            request_id="c-bigmsg",
            code="over_limit",
        ),
        Case(
            name="bad-request-id",
            model="text-embed",
            value=packed({**base, "request_id": "c bad/id"}),
            request_id="c bad/id",
            code="schema",
        ),
    ]
