"""`https://` images through the one loader, against a real HTTPS server on loopback."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.image_refs import ImageAccess, ImageSourceSettings
from sluicegate.runtime.images import load_image, peek_image
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.errors import (
    ErrorCode,
    ImageRefRefusedError,
    InvalidImageError,
    OverLimitError,
)
from sluicegate.schemas.imaging import image_size
from sluicegate.schemas.models import ImageInput

from ..https_server import HttpsServer, https_server


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: about 3 bytes a pixel on the wire."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


BIG = noise_png(800, 600)  # ~1.4 MB


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpsServer]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.png").write_bytes(BIG)
    with https_server(tmp_path / "www", tmp_path) as srv:
        yield srv


def sources(server: HttpsServer, **changes: object) -> ImageSources:
    fields: dict[str, object] = {
        "allow": {"acme": ImageAccess(hosts=(server.host,))},
        "private_hosts": (server.host,),
        "ca_file": str(server.ca_file),
        "timeout_s": 30.0,
        "header_bytes": 4096,
    }
    fields.update(changes)
    return ImageSources(settings=ImageSourceSettings.model_validate(fields))


def ref(uri: str, data: bytes = BIG) -> ImageInput:
    return ImageInput(uri=uri, sha256=hashlib.sha256(data).hexdigest())


def test_an_allowed_https_image_is_read_whole_and_checked(server: HttpsServer) -> None:
    src = sources(server)
    assert load_image(ref(server.url("big.png")), tenant="acme", sources=src) == BIG
    with pytest.raises(InvalidImageError, match="sha256") as err:
        load_image(ref(server.url("big.png"), b"other"), tenant="acme", sources=src)
    assert err.value.code == ErrorCode.INVALID_IMAGE


def test_pricing_reads_only_the_header_by_a_ranged_read(server: HttpsServer) -> None:
    head = peek_image(ref(server.url("big.png")), tenant="acme", sources=sources(server))
    assert len(head) == 4096 and server.bytes_sent == 4096
    assert image_size(head) == (800, 600)


def test_another_tenant_and_a_private_address_are_refused(server: HttpsServer) -> None:
    with pytest.raises(ImageRefRefusedError, match="not allowed for tenant 'other'"):
        load_image(ref(server.url("big.png")), tenant="other", sources=sources(server))
    with pytest.raises(ImageRefRefusedError, match=r"non-public address 127\.0\.0\.1") as err:
        load_image(
            ref(server.url("big.png")), tenant="acme", sources=sources(server, private_hosts=())
        )
    assert err.value.code == ErrorCode.IMAGE_REF_REFUSED
    assert server.bytes_sent == 0


def test_redirects_are_followed_only_to_allowed_hosts(server: HttpsServer) -> None:
    server.redirects["/moved.png"] = "/big.png"
    server.redirects["/away.png"] = "https://169.254.169.254/latest/meta-data/"
    src = sources(server)
    assert load_image(ref(server.url("moved.png")), tenant="acme", sources=src) == BIG
    with pytest.raises(ImageRefRefusedError, match=r"169\.254\.169\.254"):
        load_image(ref(server.url("away.png")), tenant="acme", sources=src)
    server.redirects["/loop.png"] = "/loop.png"
    with pytest.raises(InvalidImageError, match="redirects more than"):
        load_image(ref(server.url("loop.png")), tenant="acme", sources=src)


def test_over_the_byte_cap_is_refused_and_a_missing_object_is_invalid(server: HttpsServer) -> None:
    src = sources(server)
    limits = WireLimits(max_ref_image_bytes=100_000)
    with pytest.raises(OverLimitError, match="100000-byte limit"):
        load_image(ref(server.url("big.png")), tenant="acme", sources=src, limits=limits)
    with pytest.raises(InvalidImageError, match="HTTP 404"):
        load_image(ref(server.url("nope.png")), tenant="acme", sources=src)
