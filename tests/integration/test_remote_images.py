"""Claim-checks: 30 MB images by `s3://` and `https://` through the router to OCR.

A real S3-compatible server (versitygw) and a real HTTPS server run on
loopback; the router prices each image from a ranged read of its header, the
OCR worker reads it whole and checks its sha256. References to a bucket or
host the tenant may not use are answered `image_ref_refused` by the router
(plus a DLQ record), a wrong sha256 `invalid_image` by the worker.

The page is 3400x3000 RGB (10.2 Mpx, under the 40 Mpx limit) saved as a PNG
without compression: 30.6 MB on the wire, lossless, text the OCR reads.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from sluicegate.ops.samples import PHRASES, cer, render_page
from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.image_refs import ImageAccess, ImageSourceSettings
from sluicegate.runtime.images import load_image, peek_image
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode, InvalidImageError, OverLimitError
from sluicegate.schemas.imaging import image_size
from sluicegate.schemas.models import ImageInput, InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.streams.uploads import ImageUploader, UploadSettings

from ..https_server import HttpsServer, https_server
from ..s3_server import S3Server, s3_server
from .conftest import WorkerFactory
from .streams_helpers import TopicReader, running_router

pytestmark = pytest.mark.integration

LINES = PHRASES[:3]
SIZE = (3400, 3000)


@pytest.fixture(scope="module")
def page() -> bytes:
    encoded = render_page(list(LINES), glyph_px=96, canvas=SIZE, margin=150)
    buf = io.BytesIO()
    Image.open(io.BytesIO(encoded)).save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    assert len(data) >= 30_000_000
    return data


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory, page: bytes
) -> Iterator[tuple[S3Server, HttpsServer]]:
    work = tmp_path_factory.mktemp("remote")
    (work / "www").mkdir()
    (work / "www" / "page.png").write_bytes(page)
    with (
        s3_server(work, buckets=("scans", "elsewhere")) as s3,
        https_server(work / "www", work) as web,
    ):
        yield s3, web


def images_settings(s3: S3Server, web: HttpsServer) -> ImageSourceSettings:
    return ImageSourceSettings(
        s3=s3.settings,
        allow={"default": ImageAccess(buckets=("scans",), hosts=(web.host,))},
        private_hosts=(web.host,),
        ca_file=str(web.ca_file),
        timeout_s=180,
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_s3_reads_check_bucket_size_and_read_only_the_header_to_price(
    stores: tuple[S3Server, HttpsServer], page: bytes
) -> None:
    s3, web = stores
    uploader = ImageUploader(settings=UploadSettings(s3=s3.settings, upload_bucket="scans"))
    image = uploader.upload(page)
    assert image.uri == f"s3://scans/images/{sha(page)}" and image.sha256 == sha(page)
    sources = ImageSources(settings=images_settings(s3, web))
    try:
        head = peek_image(image, sources=sources)
        assert len(head) == sources.settings.header_bytes < len(page)
        assert image_size(head) == SIZE
        assert load_image(image, sources=sources) == page
        with pytest.raises(OverLimitError, match="1000000-byte limit"):
            load_image(image, sources=sources, limits=WireLimits(max_ref_image_bytes=1_000_000))
        missing = ImageInput(uri="s3://scans/nope.png", sha256=sha(b""))
        with pytest.raises(InvalidImageError, match=r"cannot read s3://scans/nope\.png"):
            load_image(missing, sources=sources)
    finally:
        sources.close()


async def test_30mb_images_by_s3_and_https_are_answered_through_the_router(
    run_worker: WorkerFactory,
    kafka: KafkaSettings,
    topics: TopicSettings,
    stores: tuple[S3Server, HttpsServer],
    page: bytes,
) -> None:
    s3, web = stores
    images = images_settings(s3, web)
    uploader = ImageUploader(settings=UploadSettings(s3=s3.settings, upload_bucket="scans"))
    by_s3 = await uploader.upload_async(page)
    elsewhere = ImageUploader(settings=UploadSettings(s3=s3.settings, upload_bucket="elsewhere"))
    refused_bucket = elsewhere.upload(b"\x89PNG small")
    cases = {
        "s3": by_s3,
        "https": ImageInput(uri=web.url("page.png"), sha256=sha(page)),
        "bucket": refused_bucket,
        "host": ImageInput(uri=f"https://localhost:{web.port}/page.png", sha256=sha(page)),
        "sha": ImageInput(uri=by_s3.uri, sha256=sha(b"another image")),
    }
    requests = {
        name: InferenceRequest(request_id=f"{name}-{uuid.uuid4().hex}", model="ocr", images=[img])
        for name, img in cases.items()
    }
    settings = ClientSettings(kafka=kafka, topics=topics, timeout_s=300)
    async with (
        TopicReader(kafka, topics.dlq) as dlq,
        run_worker("ocr", options={"images": images}),
        running_router(kafka, topics, images=images),
        Client(settings=settings) as client,
    ):
        futures = {name: client.expect(r.request_id) for name, r in requests.items()}
        for request in requests.values():
            await client.send(request)
        results = {
            name: await client.wait(requests[name].request_id, future)
            for name, future in futures.items()
        }
        letters = [DeadLetter.from_headers(r.headers) for r in await dlq.wait_count(3)]

    for name in ("s3", "https"):
        result = results[name]
        assert result.status is Status.OK, (name, result.error)
        assert cer(" ".join(LINES), result.outputs["text"]) <= 0.1, result.outputs["text"]
    for name in ("bucket", "host"):
        error = results[name].error
        assert error is not None and error.code == ErrorCode.IMAGE_REF_REFUSED, (name, error)
        assert "not allowed for tenant 'default'" in error.message
    error = results["sha"].error
    assert error is not None and error.code == ErrorCode.INVALID_IMAGE and "sha256" in error.message
    assert sorted(letter.code for letter in letters) == sorted(
        [ErrorCode.IMAGE_REF_REFUSED, ErrorCode.IMAGE_REF_REFUSED, ErrorCode.INVALID_IMAGE]
    )
    # The router priced the https image from a ranged read of its header; only
    # the worker read it whole (once).
    assert len(page) <= web.bytes_sent < len(page) + 2 * images.header_bytes


def test_upload_names_the_fix_when_the_bucket_is_missing(
    stores: tuple[S3Server, HttpsServer],
) -> None:
    s3, _ = stores
    uploader = ImageUploader(settings=UploadSettings(s3=s3.settings, upload_bucket="no-such"))
    with pytest.raises(RuntimeError, match="that the bucket exists"):
        uploader.upload(b"data")
