"""A real HTTPS server on loopback for `https://` image tests.

`http.server` wrapped in TLS with a certificate from a throwaway CA
(trustme); serves files from a folder, answers `Range: bytes=a-b` with 206,
and answers the paths in `redirects` with a 302 to their target. Counts the
bytes of body it sent so a test can tell a ranged read from a whole one.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class HttpsServer:
    root: Path
    port: int
    ca_file: Path
    redirects: dict[str, str] = field(default_factory=dict)
    bytes_sent: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/{path.lstrip('/')}"


@contextmanager
def https_server(root: Path, ca_dir: Path) -> Iterator[HttpsServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = ca_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    state: list[HttpsServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state[0]
            target = server.redirects.get(self.path)
            if target is not None:
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = (server.root / self.path.lstrip("/").split("?")[0]).resolve()
            if not path.is_relative_to(server.root.resolve()) or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            match = _RANGE.match(self.headers.get("Range", ""))
            if match:
                start = int(match[1])
                end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                data = data[start : end + 1]
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
                server.bytes_sent += len(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client stopped reading (a capped or ranged read)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.append(HttpsServer(root=root, port=httpd.server_address[1], ca_file=ca_file))
    thread = threading.Thread(target=httpd.serve_forever, name="https-server", daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
