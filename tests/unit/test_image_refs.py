"""The allow-list of remote image references (no I/O): buckets, hosts, addresses."""

from __future__ import annotations

import pytest

from sluicegate.runtime.image_refs import (
    ImageAccess,
    ImageSourceSettings,
    check_address,
    check_reference,
)
from sluicegate.schemas.errors import ErrorCode, ImageRefRefusedError

SETTINGS = ImageSourceSettings(
    allow={
        "*": ImageAccess(buckets=("shared",)),
        "acme": ImageAccess(buckets=("acme-scans",), hosts=("img.acme.example", "127.0.0.1:8443")),
    },
    private_hosts=("127.0.0.1:8443",),
)


def refused(uri: str, tenant: str = "acme") -> str:
    with pytest.raises(ImageRefRefusedError) as err:
        check_reference(uri, tenant=tenant, settings=SETTINGS)
    assert err.value.code == ErrorCode.IMAGE_REF_REFUSED
    return str(err.value)


def test_allowed_buckets_and_hosts_parse() -> None:
    ref = check_reference("s3://acme-scans/2024/a%20b.png", tenant="acme", settings=SETTINGS)
    assert (ref.scheme, ref.location, ref.path) == ("s3", "acme-scans", "2024/a b.png")
    ref = check_reference("https://IMG.acme.example/x.png?v=1", tenant="acme", settings=SETTINGS)
    assert (ref.scheme, ref.location, ref.host, ref.port) == (
        "https",
        "img.acme.example",
        "img.acme.example",
        443,
    )
    ref = check_reference("https://127.0.0.1:8443/x.png", tenant="acme", settings=SETTINGS)
    assert (ref.location, ref.port) == ("127.0.0.1:8443", 8443)


def test_the_star_entry_applies_to_every_tenant() -> None:
    assert check_reference("s3://shared/a.png", tenant="other", settings=SETTINGS).location == (
        "shared"
    )


def test_another_tenants_bucket_or_host_is_refused() -> None:
    assert "SLUICEGATE_IMAGES__ALLOW" in refused("s3://acme-scans/a.png", tenant="other")
    assert "not allowed for tenant 'other'" in refused("https://img.acme.example/a.png", "other")


@pytest.mark.parametrize(
    "uri",
    [
        "https://img.acme.example:8443/a.png",  # same host, another port
        "https://evil.example/a.png",
        "https://user:pw@img.acme.example/a.png",
        "s3://acme-scans/",
        "s3:///key",
        "https://[::1/a.png",
        "ftp://img.acme.example/a.png",
    ],
)
def test_anything_else_is_refused(uri: str) -> None:
    refused(uri)


def test_nothing_is_allowed_by_default() -> None:
    with pytest.raises(ImageRefRefusedError):
        check_reference("s3://b/k", tenant="default", settings=ImageSourceSettings())


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1"]
)
def test_private_addresses_are_refused_unless_the_host_is_listed(address: str) -> None:
    ref = check_reference("https://img.acme.example/a.png", tenant="acme", settings=SETTINGS)
    with pytest.raises(ImageRefRefusedError, match="SLUICEGATE_IMAGES__PRIVATE_HOSTS"):
        check_address(ref, address, SETTINGS)
    listed = check_reference("https://127.0.0.1:8443/a.png", tenant="acme", settings=SETTINGS)
    check_address(listed, address, SETTINGS)  # listed: allowed


def test_a_public_address_passes() -> None:
    ref = check_reference("https://img.acme.example/a.png", tenant="acme", settings=SETTINGS)
    check_address(ref, "93.184.215.14", SETTINGS)


def test_router_and_workers_read_the_same_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluicegate.streams.router_settings import RouterSettings
    from sluicegate.workers.config import WorkerSettings

    monkeypatch.setenv("SLUICEGATE_IMAGES__ALLOW", '{"*": {"buckets": ["scans"]}}')
    monkeypatch.setenv("SLUICEGATE_IMAGES__S3__ENDPOINT_URL", "http://127.0.0.1:7070")
    monkeypatch.setenv("SLUICEGATE_IMAGES__S3__SECRET_ACCESS_KEY", "not-printed")
    monkeypatch.setenv("SLUICEGATE_IMAGES__PRIVATE_HOSTS", '["127.0.0.1:8443"]')
    router, worker = RouterSettings().images, WorkerSettings().images
    assert router == worker
    assert router.allow == {"*": ImageAccess(buckets=("scans",))}
    assert router.s3.endpoint_url == "http://127.0.0.1:7070"
    assert router.private_hosts == ("127.0.0.1:8443",)
    assert "not-printed" not in repr(router)
