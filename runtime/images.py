"""The one image loader: the encoded bytes of a request's image.

Used by the workers (`load_image`: the whole image, to run it) and by the
router (`peek_image`: enough of it to price it from its header), so both
apply the same checks. A `file://` image:

1. the uri names no remote host (`file:///path` or `file://localhost/path`);
2. with `limits.image_root` set, the path, after resolving `..` and symlinks,
   lies under the root: checked before the file is touched, and the message
   is the same whether or not such a file exists;
3. the file is at most `limits.max_ref_image_bytes`;
4. its sha256 is the request's `sha256`.

An `s3://bucket/key` or `https://host/path` image is read through
`image_fetch.ImageSources` (the process's settings: store, allow-list per
tenant, timeouts); the same size cap and sha256 check apply. Without
`sources`, remote references are refused (`image_ref_refused`).

Each failure is a `WireError` with a stable code (`invalid_image`,
`image_outside_root`, `image_ref_refused`, `over_limit`). Header parsing
lives in `schemas.imaging`; this module adds the I/O. Synchronous: call it
from an executor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits
from sluicegate.schemas.errors import (
    ImageOutsideRootError,
    ImageRefRefusedError,
    InvalidImageError,
    OverLimitError,
)
from sluicegate.schemas.imaging import ImageDecodeError, image_size
from sluicegate.schemas.models import ImageInput

from .image_fetch import ImageSources


def load_image(
    image: ImageInput,
    *,
    limits: WireLimits = DEFAULT_LIMITS,
    tenant: str = "default",
    sources: ImageSources | None = None,
) -> bytes:
    """The encoded bytes of an image, reading references whole (checked as above)."""
    if image.data is not None:
        return image.data
    assert image.uri is not None and image.sha256 is not None  # validated by the model
    if image.uri.startswith("file:"):
        data = _read_file(image.uri, limits)
    else:
        read = _remote(image.uri, sources).read(
            image.uri, tenant=tenant, limit=limits.max_ref_image_bytes
        )
        data = read.data
    _check_sha256(image, data)
    return data


def peek_image(
    image: ImageInput,
    *,
    limits: WireLimits = DEFAULT_LIMITS,
    tenant: str = "default",
    sources: ImageSources | None = None,
) -> bytes:
    """Enough of an image to read its header: what the router prices a request by.

    Inline and `file://` images are read whole, as by `load_image`. A remote
    image is read by a ranged read of its first `header_bytes` (its size is
    checked against the limit from the store's answer); when the header does
    not fit in them (a JPEG with large metadata, a TIFF with its directory at
    the end) the image is read whole. The sha256 is checked when the whole
    image was read; otherwise the worker, which always reads it whole, checks it.
    """
    if image.uri is None or image.uri.startswith("file:"):
        return load_image(image, limits=limits, tenant=tenant, sources=sources)
    remote = _remote(image.uri, sources)
    read = remote.read(
        image.uri,
        tenant=tenant,
        limit=limits.max_ref_image_bytes,
        prefix=remote.settings.header_bytes,
    )
    if read.size is not None and len(read.data) >= read.size:
        _check_sha256(image, read.data)
        return read.data
    try:
        image_size(read.data)
    except ImageDecodeError:
        return load_image(image, limits=limits, tenant=tenant, sources=sources)
    return read.data


def _remote(uri: str, sources: ImageSources | None) -> ImageSources:
    if sources is None:
        raise ImageRefRefusedError(
            f"image uri {uri!r}: this process reads no remote images; configure "
            "SLUICEGATE_IMAGES__ALLOW (docs/wire-format.md) or send the image inline"
        )
    return sources


def _check_sha256(image: ImageInput, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise InvalidImageError(f"sha256 of {image.uri!r} does not match the request's `sha256`")


def _read_file(uri: str, limits: WireLimits) -> bytes:
    path = _local_path(uri, limits)
    try:
        size = path.stat().st_size
        if size > limits.max_ref_image_bytes:
            raise OverLimitError(
                f"image file is {size} bytes, over the {limits.max_ref_image_bytes}-byte limit; "
                "downscale it or raise SLUICEGATE_IMAGES__MAX_BYTES"
            )
        return path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(
            f"cannot read image {uri!r} ({exc.strerror}); the router and the workers "
            "must be able to read the path"
        ) from None


def _local_path(uri: str, limits: WireLimits) -> Path:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise InvalidImageError(f"image uri {uri!r} names a remote host; use file:///path")
    path = Path(unquote(parsed.path))
    if limits.image_root is not None:
        root = Path(limits.image_root).resolve()
        if not path.resolve().is_relative_to(root):
            raise ImageOutsideRootError(
                f"image uri {uri!r} is outside the image root {str(root)!r}; "
                "put the file under it or send the image inline"
            )
    return path
