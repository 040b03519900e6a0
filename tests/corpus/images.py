"""Images: zero bytes, 1x1, a 50,000 x 50,000 header, a PNG decompression bomb,
a format off the allow-list, a file outside the image root, a sha256 mismatch."""

from __future__ import annotations

import hashlib
import io
import struct
import tempfile
import zlib
from pathlib import Path

from PIL import Image

from . import Case, packed

#: The corpus test runs its ocr worker with this image root.
IMAGE_ROOT = Path(tempfile.gettempdir()) / "sg-corpus-root"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares `width` x `height` and whose IDAT is a stub."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def png_bomb(side: int = 20_000) -> bytes:
    """A real 1-bit PNG of side x side zeros: ~50 MB of pixel rows in tens of kilobytes."""
    row = b"\0" * (1 + side // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def encoded(fmt: str, size: tuple[int, int] = (64, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, format=fmt)
    return buf.getvalue()


def _request(rid: str, image: dict[str, object]) -> bytes:
    return packed({"request_id": rid, "model": "ocr", "images": [image]})


def cases() -> list[Case]:
    IMAGE_ROOT.mkdir(exist_ok=True)
    outside = Path(tempfile.gettempdir()) / "sg-corpus-outside.png"
    outside.write_bytes(encoded("PNG"))
    inside = IMAGE_ROOT / "inside.png"
    inside.write_bytes(encoded("PNG"))
    wrong_sha = "0" * 64
    png = "image/png"
    return [
        Case(
            name="zero-size-image",
            model="ocr",
            value=_request("c-img0", {"data": b"", "mime_type": png}),
            request_id="c-img0",
            code="invalid_image",
        ),
        Case(
            name="one-pixel-image",
            model="ocr",
            value=_request("c-img1", {"data": encoded("PNG", (1, 1)), "mime_type": png}),
            request_id="c-img1",
            code=None,
            status="ok",
            dlq=False,
        ),
        Case(
            name="50k-square-header",
            model="ocr",
            value=_request("c-img50k", {"data": png_header_only(50_000, 50_000), "mime_type": png}),
            request_id="c-img50k",
            code="image_bomb",
        ),
        Case(
            name="png-decompression-bomb",
            model="ocr",
            value=_request("c-bomb", {"data": png_bomb(), "mime_type": png}),
            request_id="c-bomb",
            code="image_bomb",
        ),
        Case(
            name="unsupported-format",
            model="ocr",
            value=_request("c-gif", {"data": encoded("GIF"), "mime_type": png}),
            request_id="c-gif",
            code="unsupported_image_format",
        ),
        Case(
            name="file-outside-root",
            model="ocr",
            value=_request(
                "c-outside",
                {
                    "uri": outside.as_uri(),
                    "sha256": hashlib.sha256(outside.read_bytes()).hexdigest(),
                },
            ),
            request_id="c-outside",
            code="image_outside_root",
        ),
        Case(
            name="dotdot-escape",
            model="ocr",
            value=_request(
                "c-dotdot",
                {
                    "uri": f"{IMAGE_ROOT.as_uri()}/../sg-corpus-outside.png",
                    "sha256": hashlib.sha256(outside.read_bytes()).hexdigest(),
                },
            ),
            request_id="c-dotdot",
            code="image_outside_root",
        ),
        Case(
            name="sha256-mismatch",
            model="ocr",
            value=_request("c-sha", {"uri": inside.as_uri(), "sha256": wrong_sha}),
            request_id="c-sha",
            code="invalid_image",
        ),
        Case(
            name="missing-file",
            model="ocr",
            value=_request(
                "c-nofile", {"uri": (IMAGE_ROOT / "nope.png").as_uri(), "sha256": wrong_sha}
            ),
            request_id="c-nofile",
            code="invalid_image",
        ),
        Case(
            name="remote-uri",
            model="ocr",
            value=_request("c-remote", {"uri": "file://example.org/x.png", "sha256": wrong_sha}),
            request_id="c-remote",
            code="invalid_image",
        ),
        # No remote source is allowed by default: not fetched, refused.
        Case(
            name="s3-not-allowed",
            model="ocr",
            value=_request("c-s3", {"uri": "s3://any-bucket/x.png", "sha256": wrong_sha}),
            request_id="c-s3",
            code="image_ref_refused",
        ),
        Case(
            name="https-metadata-address",
            model="ocr",
            value=_request(
                "c-https", {"uri": "https://169.254.169.254/latest/meta-data/", "sha256": wrong_sha}
            ),
            request_id="c-https",
            code="image_ref_refused",
        ),
        Case(
            name="plain-http",
            model="ocr",
            value=_request("c-http", {"uri": "http://example.org/x.png", "sha256": wrong_sha}),
            request_id="c-http",
            code="schema",
        ),
    ]
