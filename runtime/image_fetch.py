"""Reading `s3://` and `https://` images: the I/O behind `images.load_image`.

`ImageSources.read(uri, tenant=..., limit=..., prefix=...)` checks the uri
against the tenant's allow-list (`image_refs.check_reference`) and reads at
most `limit` bytes of the object, or only its first `prefix` bytes (a ranged
read: what the router needs to price an image from its header). It answers the
bytes read and the object's full size where the store says it.

- `s3://` goes through obstore (one S3-compatible store from the settings;
  one ranged GET that also answers the size, capped at `limit + 1` bytes).
- `https://` goes through httpx with redirects off: each redirect target is
  checked like the original uri. The host is resolved here, every address is
  checked (no private or loopback address unless the host is listed in
  `private_hosts`), and the connection goes to the checked address with the
  host name kept for TLS (SNI and certificate) and the Host header, so a DNS
  answer that changes between check and connect cannot redirect the fetch.
  The body is streamed and abandoned past `limit`; the whole fetch has one
  deadline (`timeout_s`), not only a per-read timeout.

Failures are `WireError`s: `image_ref_refused` (not allowed), `over_limit`
(too large), `invalid_image` (missing, unreadable, timed out). Synchronous
and thread-safe: call it from an executor. `close()` once at the end.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import httpx
import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from sluicegate.schemas.errors import InvalidImageError, OverLimitError

from .image_refs import ImageSourceSettings, RemoteRef, check_address, check_reference

if TYPE_CHECKING:
    from obstore import GetOptions


@dataclass(frozen=True, kw_only=True)
class Fetched:
    data: bytes
    # The object's size in bytes, when the source said (None: unknown).
    size: int | None


class ImageSources:
    """The remote image sources of one process (router or worker)."""

    def __init__(self, *, settings: ImageSourceSettings) -> None:
        self._s = settings
        self._stores: dict[str, S3Store] = {}
        self._lock = threading.Lock()
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        self._http = httpx.Client(
            verify=verify, follow_redirects=False, timeout=settings.timeout_s, trust_env=False
        )

    @property
    def settings(self) -> ImageSourceSettings:
        return self._s

    def close(self) -> None:
        self._http.close()

    def read(self, uri: str, *, tenant: str, limit: int, prefix: int | None = None) -> Fetched:
        """At most `limit` bytes of the object (over it: `over_limit`), or its first `prefix`."""
        ref = check_reference(uri, tenant=tenant, settings=self._s)
        if ref.scheme == "s3":
            return self._s3(ref, limit=limit, prefix=prefix)
        return self._https(uri, tenant=tenant, limit=limit, prefix=prefix)

    # -- s3 ---------------------------------------------------------------

    def store(self, bucket: str) -> S3Store:
        """The obstore client for `bucket` on the configured S3 endpoint (also used to upload)."""
        with self._lock:
            found = self._stores.get(bucket)
            if found is None:
                found = self._stores[bucket] = s3_store(self._s, bucket)
            return found

    def _s3(self, ref: RemoteRef, *, limit: int, prefix: int | None) -> Fetched:
        want = limit + 1 if prefix is None else min(prefix, limit + 1)
        options: GetOptions = {"range": (0, want)}
        try:
            result = obstore.get(self.store(ref.location), ref.path, options=options)
            size = int(result.meta["size"])
            if size > limit:
                raise _too_large(f"s3://{ref.location}/{ref.path}", size, limit)
            data = bytes(result.bytes())
        except (ObstoreError, OSError) as exc:  # obstore raises FileNotFoundError too
            raise InvalidImageError(
                f"cannot read s3://{ref.location}/{ref.path} ({type(exc).__name__}); check the "
                "bucket and key, and that the router and workers can reach SLUICEGATE_IMAGES__S3"
            ) from None
        return Fetched(data=data, size=size)

    # -- https ------------------------------------------------------------

    def _https(self, uri: str, *, tenant: str, limit: int, prefix: int | None) -> Fetched:
        deadline = time.monotonic() + self._s.timeout_s
        url = uri
        for _ in range(self._s.max_redirects + 1):
            ref = check_reference(url, tenant=tenant, settings=self._s)
            try:
                fetched, location = self._get(ref, limit=limit, prefix=prefix, deadline=deadline)
            except httpx.HTTPError as exc:
                raise InvalidImageError(
                    f"cannot fetch image {url!r} ({type(exc).__name__}); check the uri and "
                    "that the host answers within SLUICEGATE_IMAGES__TIMEOUT_S"
                ) from None
            if fetched is not None:
                return fetched
            url = urljoin(url, location)
        raise InvalidImageError(
            f"image {uri!r} redirects more than {self._s.max_redirects} times; send the final uri"
        )

    def _get(
        self, ref: RemoteRef, *, limit: int, prefix: int | None, deadline: float
    ) -> tuple[Fetched | None, str]:
        """The body, or (None, the Location of a redirect)."""
        address = self._resolve(ref)
        url = httpx.URL(ref.path)
        headers = {"Host": ref.location, "Accept": "image/*"}
        if prefix is not None:
            headers["Range"] = f"bytes=0-{prefix - 1}"
        remaining = max(0.001, deadline - time.monotonic())
        extensions: dict[str, Any] = {"sni_hostname": ref.host}
        with self._http.stream(
            "GET",
            url.copy_with(host=address),
            headers=headers,
            extensions=extensions,
            timeout=remaining,
        ) as response:
            if response.is_redirect:
                return None, response.headers.get("location", "")
            if response.status_code not in (200, 206):
                raise InvalidImageError(
                    f"GET {ref.path!r} answered HTTP {response.status_code}; check the uri"
                )
            size = _size(response)
            if size is not None and size > limit:
                raise _too_large(ref.path, size, limit)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise _too_large(ref.path, len(body), limit)
                if prefix is not None and len(body) >= prefix:
                    break
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the whole fetch took longer than timeout_s")
            if prefix is None or (size is None and len(body) < prefix):
                size = len(body)
            return Fetched(data=bytes(body), size=size), ""

    def _resolve(self, ref: RemoteRef) -> str:
        """One checked address of the uri's host (all of them must pass)."""
        try:
            infos = socket.getaddrinfo(ref.host, ref.port, type=socket.SOCK_STREAM)
        except OSError:
            raise InvalidImageError(
                f"cannot resolve host {ref.host!r} of an image uri; check the uri"
            ) from None
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            check_address(ref, address, self._s)
        return addresses[0]


def s3_store(settings: ImageSourceSettings, bucket: str) -> S3Store:
    """An obstore S3 client for `bucket` with the endpoint, region and credentials of `settings`."""
    s3 = settings.s3
    config: dict[str, Any] = {
        "region": s3.region,
        "virtual_hosted_style_request": not s3.path_style,
    }
    if s3.endpoint_url is not None:
        config["endpoint"] = s3.endpoint_url
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        config["access_key_id"] = s3.access_key_id.get_secret_value()
        config["secret_access_key"] = s3.secret_access_key.get_secret_value()
    else:
        config["skip_signature"] = True
    timeout = timedelta(seconds=settings.timeout_s)
    return S3Store(
        bucket,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": (s3.endpoint_url or "").startswith("http://"),
            "timeout": timeout,
            "connect_timeout": timeout,
        },
        retry_config={"max_retries": 2, "retry_timeout": timeout},
    )


def _size(response: httpx.Response) -> int | None:
    """The object's size: the total of a Content-Range, or a full response's Content-Length."""
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


def _too_large(what: str, size: int, limit: int) -> OverLimitError:
    return OverLimitError(
        f"image {what!r} is {size} bytes, over the {limit}-byte limit for referenced images; "
        "downscale it or raise SLUICEGATE_IMAGES__MAX_BYTES"
    )
