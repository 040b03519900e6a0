"""A real S3-compatible server on loopback: versitygw over a temporary folder.

versitygw (a POSIX-backed S3 gateway, `make tools` builds it into
`.cache/bin/versitygw` from the Go module proxy) serves each top-level folder
of its root as a bucket. Started on a free port with a throwaway root key,
checked with a real signed S3 request before use; stopped at the end. A
server that does not start fails the test loudly.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.exceptions import BaseError as ObstoreError
from pydantic import SecretStr

from sluicegate.ops.stack.process import free_port
from sluicegate.runtime.image_fetch import s3_store
from sluicegate.runtime.image_refs import ImageSourceSettings, S3Settings

from .tooling import go_tool


@dataclass(frozen=True)
class S3Server:
    settings: S3Settings
    root: Path

    def bucket(self, name: str) -> None:
        (self.root / name).mkdir(exist_ok=True)


@contextlib.contextmanager
def s3_server(workdir: Path, *, buckets: tuple[str, ...] = ()) -> Iterator[S3Server]:
    binary = go_tool("versitygw")
    root, sidecar = workdir / "s3-root", workdir / "s3-meta"
    root.mkdir()
    sidecar.mkdir()
    port = free_port()
    access, secret = "sg-test", secrets.token_hex(16)
    log = (workdir / "versitygw.log").open("wb")
    proc = subprocess.Popen(
        [
            *(str(binary), "--access", access, "--secret", secret),
            *("--port", f"127.0.0.1:{port}", "--quiet"),
            *("posix", "--sidecar", str(sidecar), str(root)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = S3Server(
        settings=S3Settings(
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key_id=SecretStr(access),
            secret_access_key=SecretStr(secret),
        ),
        root=root,
    )
    try:
        for name in buckets:
            server.bucket(name)
        _wait_ready(server, proc, workdir / "versitygw.log")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until a signed PUT + GET round trip works (bounded: 60 s)."""
    server.bucket("sg-ready")
    store = s3_store(ImageSourceSettings(s3=server.settings, timeout_s=5), "sg-ready")
    deadline = time.monotonic() + 60
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"versitygw exited {proc.returncode}:\n{log.read_text()}"
        try:
            obstore.put(store, "probe", b"ok")
            assert bytes(obstore.get(store, "probe").bytes()) == b"ok"
            return
        except ObstoreError as exc:
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"versitygw did not answer within 60 s ({last}):\n{log.read_text()}")
