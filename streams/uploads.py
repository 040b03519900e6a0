"""Claim-checks for the SDK: put a large image in the S3 store, send its reference.

An image too large to travel inside a Kafka record (librdkafka's default
`message.max.bytes` is 1 MB; sluicegate's own cap for inline images is 6 MiB)
goes to the same S3-compatible store the router and the workers read
(`SLUICEGATE_IMAGES__S3__*`), under a key named by its sha256, and the request
carries `s3://bucket/key` + `sha256`:

    uploader = ImageUploader()                      # settings from the environment
    image = uploader.upload(Path("scan.png"))       # or bytes; async: await upload_async(...)
    await client.submit("ocr", images=[image])

The bucket (`SLUICEGATE_IMAGES__UPLOAD_BUCKET`) must be allowed for the
tenant on the router and the workers (`SLUICEGATE_IMAGES__ALLOW`), or the
request is answered `image_ref_refused`. Keys are content-addressed
(`<prefix><sha256>`), so uploading the same image twice stores it once.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime.image_fetch import s3_store
from sluicegate.runtime.image_refs import ImageSourceSettings, S3Settings
from sluicegate.schemas.models import ImageInput


class UploadSettings(BaseSettings):
    """`SLUICEGATE_IMAGES__*` as the SDK reads them: the store and where to put images."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_IMAGES__", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    s3: S3Settings = S3Settings()
    upload_bucket: str = Field(default="sluicegate-images", min_length=3, max_length=63)
    # Keys are <upload_prefix><sha256>.
    upload_prefix: str = "images/"
    timeout_s: float = Field(default=60.0, gt=0)


class UploadError(RuntimeError):
    """The store refused or could not be reached; the message says what to check."""


class ImageUploader:
    """Puts images in the S3 store and answers the `ImageInput` that references them."""

    def __init__(self, *, settings: UploadSettings | None = None) -> None:
        self._s = settings or UploadSettings()
        self._store: S3Store = s3_store(
            ImageSourceSettings(s3=self._s.s3, timeout_s=self._s.timeout_s), self._s.upload_bucket
        )

    def upload(self, image: bytes | Path) -> ImageInput:
        """Store `image` (bytes or a file) and answer its `s3://` reference."""
        data = image.read_bytes() if isinstance(image, Path) else image
        digest, key = self._key(data)
        try:
            obstore.put(self._store, key, data)
        except (ObstoreError, OSError) as exc:  # obstore raises FileNotFoundError too
            raise self._error(exc) from None
        return self._reference(key, digest)

    async def upload_async(self, image: bytes | Path) -> ImageInput:
        """`upload` without blocking the event loop."""
        if isinstance(image, Path):
            data = await asyncio.to_thread(image.read_bytes)
        else:
            data = image
        digest, key = self._key(data)
        try:
            await obstore.put_async(self._store, key, data)
        except (ObstoreError, OSError) as exc:  # obstore raises FileNotFoundError too
            raise self._error(exc) from None
        return self._reference(key, digest)

    def _key(self, data: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        return digest, f"{self._s.upload_prefix}{digest}"

    def _reference(self, key: str, digest: str) -> ImageInput:
        return ImageInput(uri=f"s3://{self._s.upload_bucket}/{key}", sha256=digest)

    def _error(self, exc: Exception) -> UploadError:
        return UploadError(
            f"cannot upload to bucket {self._s.upload_bucket!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check "
            "SLUICEGATE_IMAGES__S3__ENDPOINT_URL, the credentials and that the bucket exists"
        )
