"""The image loader the router and the workers share: root and sha256 checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sluicegate.runtime.images import load_image
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.errors import (
    ErrorCode,
    ImageOutsideRootError,
    ImageRefRefusedError,
    InvalidImageError,
    OverLimitError,
)
from sluicegate.schemas.models import ImageInput

DATA = b"\x89PNG\r\n\x1a\n not really a png, the loader does not parse it"


def _ref(path: Path, data: bytes = DATA) -> ImageInput:
    return ImageInput(uri=path.as_uri(), sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inside = tmp_path / "root"
    inside.mkdir()
    (inside / "a.png").write_bytes(DATA)
    (tmp_path / "outside.png").write_bytes(DATA)
    return inside


def test_inline_data_is_returned_as_is() -> None:
    assert load_image(ImageInput(data=DATA, mime_type="image/png")) == DATA


def test_a_file_under_the_root_with_its_sha256_is_read(root: Path) -> None:
    limits = WireLimits(image_root=str(root))
    assert load_image(_ref(root / "a.png"), limits=limits) == DATA


def test_no_root_reads_any_path(root: Path) -> None:
    assert load_image(_ref(root.parent / "outside.png")) == DATA


@pytest.mark.parametrize("name", ["outside.png", "root/../outside.png"])
def test_a_path_outside_the_root_is_refused(root: Path, name: str) -> None:
    limits = WireLimits(image_root=str(root))
    with pytest.raises(ImageOutsideRootError) as err:
        load_image(_ref(root.parent / name), limits=limits)
    assert err.value.code == ErrorCode.IMAGE_OUTSIDE_ROOT


def test_outside_the_root_the_message_does_not_say_whether_the_file_exists(root: Path) -> None:
    limits = WireLimits(image_root=str(root))
    messages = []
    for name in ("outside.png", "missing.png"):
        with pytest.raises(ImageOutsideRootError) as err:
            load_image(_ref(root.parent / name), limits=limits)
        messages.append(str(err.value).replace(name, "NAME"))
    assert messages[0] == messages[1]


def test_a_symlink_out_of_the_root_is_refused(root: Path) -> None:
    (root / "link.png").symlink_to(root.parent / "outside.png")
    with pytest.raises(ImageOutsideRootError):
        load_image(_ref(root / "link.png"), limits=WireLimits(image_root=str(root)))


def test_a_sha256_mismatch_is_an_invalid_image(root: Path) -> None:
    image = ImageInput(uri=(root / "a.png").as_uri(), sha256="0" * 64)
    with pytest.raises(InvalidImageError, match="sha256") as err:
        load_image(image, limits=WireLimits(image_root=str(root)))
    assert err.value.code == ErrorCode.INVALID_IMAGE


def test_a_missing_file_under_the_root_is_an_invalid_image(root: Path) -> None:
    with pytest.raises(InvalidImageError, match="cannot read image"):
        load_image(_ref(root / "nope.png"), limits=WireLimits(image_root=str(root)))


def test_a_remote_host_is_refused() -> None:
    image = ImageInput(uri="file://example.org/x.png", sha256="0" * 64)
    with pytest.raises(InvalidImageError, match="remote host"):
        load_image(image)


def test_a_file_over_the_size_limit_is_refused_unread(root: Path) -> None:
    limits = WireLimits(image_root=str(root), max_ref_image_bytes=8)
    with pytest.raises(OverLimitError):
        load_image(_ref(root / "a.png"), limits=limits)


def test_a_referenced_file_may_exceed_the_inline_byte_cap(root: Path) -> None:
    # The inline cap is for bytes inside a Kafka record; references have their own.
    limits = WireLimits(image_root=str(root), max_image_bytes=8)
    assert load_image(_ref(root / "a.png"), limits=limits) == DATA


@pytest.mark.parametrize("uri", ["s3://scans/a.png", "https://img.example.org/a.png"])
def test_a_remote_reference_without_sources_is_refused(uri: str) -> None:
    with pytest.raises(ImageRefRefusedError, match="SLUICEGATE_IMAGES__ALLOW") as err:
        load_image(ImageInput(uri=uri, sha256="0" * 64))
    assert err.value.code == ErrorCode.IMAGE_REF_REFUSED
