"""Records that are not a well-formed msgpack map: truncated, huge declared lengths,
deep nesting, invalid UTF-8."""

from __future__ import annotations

import struct

from . import Case, packed


def cases() -> list[Case]:
    good = packed({"request_id": "c-trunc", "model": "text-embed", "texts": ["hello there"]})
    # A str32 header declaring 2 GiB of text, followed by 3 bytes.
    huge_str = b"\x81\xa4text" + b"\xdb" + struct.pack(">I", 2**31) + b"abc"
    # A bin32 header declaring 4 GiB inside an otherwise valid map.
    huge_bin = b"\x82\xaarequest_id\xaac-hugebin\xa4data\xc6" + struct.pack(">I", 2**32 - 1)
    # An array32 header declaring 4 billion elements.
    huge_array = b"\x81\xa5texts\xdd" + struct.pack(">I", 2**32 - 1)
    deep = b"\x91" * 100_000 + b"\xc0"  # 100k nested one-element arrays
    bad_utf8 = b"\x82\xaarequest_id\xa7c-utf8x\xa5model\xa4\xff\xfe\xfd\xfc"
    return [
        Case(
            name="truncated",
            model="text-embed",
            value=good[: len(good) // 2],
            request_id="c-trunc",
            code="msgpack_format",
        ),
        Case(
            name="huge-str-length",
            model="text-embed",
            value=huge_str,
            request_id="c-hugestr",
            code="msgpack_format",
        ),
        Case(
            name="huge-bin-length",
            model="text-embed",
            value=huge_bin,
            request_id="c-hugebin",
            code="msgpack_format",
        ),
        Case(
            name="huge-array-length",
            model="text-embed",
            value=huge_array,
            request_id="c-hugearr",
            code="msgpack_format",
        ),
        Case(
            name="deep-nesting",
            model="text-embed",
            value=deep,
            request_id="c-deep",
            code="msgpack_format",
        ),
        Case(
            name="invalid-utf8",
            model="text-embed",
            value=bad_utf8,
            request_id="c-utf8",
            code="msgpack_format",
        ),
        Case(
            name="empty-value",
            model="text-embed",
            value=b"",
            request_id="c-empty",
            code="msgpack_format",
        ),
        Case(
            name="msgpack-not-a-map",
            model="text-embed",
            value=packed([1, 2, 3]),
            request_id="c-list",
            code="msgpack_format",
        ),
    ]
