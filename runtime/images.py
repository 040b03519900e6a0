"""The one image loader: the encoded bytes of a request's image.

Used by the router (to price a request from its image headers) and by the
workers (to run it), so both apply the same checks to a `file://` image:

1. the uri names no remote host (`file:///path` or `file://localhost/path`);
2. with `limits.image_root` set, the path, after resolving `..` and symlinks,
   lies under the root: checked before the file is touched, and the message
   is the same whether or not such a file exists;
3. the file is at most `limits.max_image_bytes`;
4. its sha256 is the request's `sha256`.

Each failure is a `WireError` with a stable code (`invalid_image`,
`image_outside_root`, `over_limit`). Header parsing lives in
`schemas.imaging`; this module adds the file I/O. Synchronous: call it from
an executor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from sluicegate.schemas.codec import DEFAULT_LIMITS, WireLimits
from sluicegate.schemas.errors import ImageOutsideRootError, InvalidImageError, OverLimitError
from sluicegate.schemas.models import ImageInput


def load_image(image: ImageInput, *, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """The encoded bytes of an image, reading `file://` references (checked as above)."""
    if image.data is not None:
        return image.data
    assert image.uri is not None and image.sha256 is not None  # validated by the model
    path = _local_path(image.uri, limits)
    try:
        size = path.stat().st_size
        if size > limits.max_image_bytes:
            raise OverLimitError(
                f"image file is {size} bytes, over the {limits.max_image_bytes}-byte limit"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(
            f"cannot read image {image.uri!r} ({exc.strerror}); the router and the workers "
            "must be able to read the path"
        ) from None
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise InvalidImageError(f"sha256 of {image.uri!r} does not match the request's `sha256`")
    return data


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
