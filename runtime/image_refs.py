"""Where a remote image may come from: settings and the allow-list check (no I/O).

An image `uri` is `s3://bucket/key` or `https://host[:port]/path`; both are
untrusted. `check_reference()` parses one and says whether the request's
tenant may use it:

- `s3://`: the bucket is in the tenant's `buckets`; the store itself (endpoint,
  region, credentials) comes from `ImageSourceSettings.s3`, never from the uri;
- `https://`: no user info, the host (`host` for port 443, `host:port`
  otherwise) is in the tenant's `hosts`. Whether the host resolves to a private
  or loopback address is checked at fetch time (`image_fetch`), where the
  address is known; `private_hosts` names the hosts allowed to.

The allow-list is keyed by tenant; `"*"` applies to every tenant. Nothing is
allowed by default. Everything refused raises `ImageRefRefusedError`
(`image_ref_refused`) with a message that names the setting to change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from sluicegate.schemas.errors import ImageRefRefusedError

ANY_TENANT = "*"


class S3Settings(BaseModel):
    """The one S3-compatible store `s3://` images are read from (and the SDK uploads to)."""

    model_config = ConfigDict(frozen=True)

    # e.g. http://127.0.0.1:7070 for a local store; None: AWS's endpoint for `region`.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    # Path-style requests (endpoint/bucket/key): what most self-hosted stores need.
    path_style: bool = True


class ImageAccess(BaseModel):
    """What one tenant's image references may name."""

    model_config = ConfigDict(frozen=True)

    # S3 buckets (of the store in `S3Settings`).
    buckets: tuple[str, ...] = ()
    # HTTPS hosts: "images.example.com" (port 443) or "host:port".
    hosts: tuple[str, ...] = ()


class ImageSourceSettings(BaseModel):
    """`SLUICEGATE_IMAGES__*`: remote image sources, shared by the router and the workers.

    Example: `SLUICEGATE_IMAGES__ALLOW='{"*": {"buckets": ["scans"]},
    "acme": {"hosts": ["img.acme.example"]}}'`.
    """

    model_config = ConfigDict(frozen=True)

    s3: S3Settings = S3Settings()
    # Tenant (or "*" for all) -> what its references may name. Empty: no remote images.
    allow: dict[str, ImageAccess] = Field(default_factory=dict)
    # HTTPS hosts (as in `hosts`) that may resolve to private, loopback or
    # link-local addresses; every other host doing so is refused (SSRF).
    private_hosts: tuple[str, ...] = ()
    # A PEM bundle of CAs trusted for https:// images (None: the system's).
    ca_file: str | None = None
    # Seconds for one fetch as a whole (connect, headers and body).
    timeout_s: float = Field(default=20.0, gt=0)
    # Bytes of one referenced image (file://, s3://, https://); the pixel limit
    # (40 Mpx) applies to every image. Inline images stay under 6 MiB.
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    # Redirects followed; each target is checked like the original uri.
    max_redirects: int = Field(default=3, ge=0, le=10)
    # Bytes the router reads to price an image (a ranged read of its header).
    header_bytes: int = Field(default=256 * 1024, ge=1024)


@dataclass(frozen=True, kw_only=True)
class RemoteRef:
    """A parsed, allowed reference."""

    scheme: Literal["s3", "https"]
    # Bucket for s3, "host" or "host:port" for https.
    location: str
    # Object key for s3; the full URL for https.
    path: str
    # https only: the host name or address to resolve, and the port.
    host: str = ""
    port: int = 443


def check_reference(uri: str, *, tenant: str, settings: ImageSourceSettings) -> RemoteRef:
    """Parse `uri` and check it against `tenant`'s allow-list; raise `ImageRefRefusedError`."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise ImageRefRefusedError(f"image uri {uri!r} is not a valid URL") from None
    access = _access(settings, tenant)
    if parts.scheme == "s3":
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if not bucket or not key or parts.query or parts.fragment:
            raise ImageRefRefusedError(f"image uri {uri!r}: write s3://bucket/key")
        if bucket not in access.buckets:
            raise ImageRefRefusedError(
                f"bucket {bucket!r} is not allowed for tenant {tenant!r}; allow it in "
                "SLUICEGATE_IMAGES__ALLOW or send the image inline"
            )
        return RemoteRef(scheme="s3", location=bucket, path=key)
    if parts.scheme == "https":
        host = (parts.hostname or "").lower()
        if not host or parts.username is not None or parts.password is not None:
            raise ImageRefRefusedError(f"image uri {uri!r}: write https://host/path (no user info)")
        location = host_key(host, port)
        if location not in access.hosts:
            raise ImageRefRefusedError(
                f"host {location!r} is not allowed for tenant {tenant!r}; allow it in "
                "SLUICEGATE_IMAGES__ALLOW or send the image inline"
            )
        return RemoteRef(scheme="https", location=location, path=uri, host=host, port=port or 443)
    raise ImageRefRefusedError(f"image uri {uri!r}: only s3:// and https:// are fetched")


def host_key(host: str, port: int | None) -> str:
    """How hosts are named in the settings: "host" for port 443, "host:port" otherwise."""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return host if port in (None, 443) else f"{host}:{port}"


def check_address(ref: RemoteRef, address: str, settings: ImageSourceSettings) -> None:
    """Refuse a private, loopback, link-local or reserved address unless the host is allowed to."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global or ref.location in settings.private_hosts:
        return
    raise ImageRefRefusedError(
        f"host {ref.location!r} resolves to the non-public address {address}; list it in "
        "SLUICEGATE_IMAGES__PRIVATE_HOSTS if that is intended"
    )


def _access(settings: ImageSourceSettings, tenant: str) -> ImageAccess:
    everyone = settings.allow.get(ANY_TENANT, ImageAccess())
    own = settings.allow.get(tenant, ImageAccess())
    return ImageAccess(buckets=own.buckets + everyone.buckets, hosts=own.hosts + everyone.hosts)
