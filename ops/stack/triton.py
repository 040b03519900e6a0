"""A real Triton Inference Server on loopback, from the ``nvidia-pytriton`` wheel.

The wheel ships ``tritonserver`` (Triton 2.51), the Python backend and one
backend stub per Python version. :class:`LocalTriton` runs that binary
directly on a model repository (see ``ops/models/build.py``):

- the Python backend is copied into ``<cache_dir>/triton/backends/python``
  with the stub for the running interpreter's version put into it, and
  passed as ``--backend-directory``;
- ``LD_LIBRARY_PATH`` starts with the running interpreter's ``LIBDIR`` (the
  stub links ``libpython3.X.so``; without it the loader takes the system's,
  possibly another patch release), then the wheel's ``nvidia_pytriton.libs``;
- ``PATH`` starts with the running interpreter's ``bin``: the stub embeds
  Python, which finds its prefix by looking ``python3`` up on PATH, so it
  runs as this virtualenv (its site-packages and ``.pth`` files, so numpy<2,
  onnxruntime and an editable sluicegate), as pytriton itself arranges;
- every address is bound to the configured host (Triton binds 0.0.0.0 by
  default); all models load at start (``--model-control-mode=none``: no
  client can load, unload or replace a model at runtime), any load failure
  stops the server (``--exit-on-error``);
- the admin APIs (model repository, model config, shared memory, statistics,
  trace, logging) are restricted on both gRPC and HTTP to callers that send
  the header ``admin-key`` (HTTP) or ``triton-grpc-protocol-admin-key``
  (gRPC) with the key in ``<state_dir>/admin.key``
  (made on first start, mode 0600); health, metadata and inference stay open
  to the workers. See docs/security.md.

Ready means every model of the repository reports READY over gRPC, not just
an open port. The NVML/DCGM errors Triton logs on a machine without a GPU are
harmless.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from sluicegate.ops.models.build import model_names
from sluicegate.ops.stack.process import ManagedProcess, StackError, port_is_open, wait_until

__all__ = ["LocalTriton", "TritonLocalConfig", "triton_wheel"]

#: APIs only an operator needs; workers use health, metadata and inference.
RESTRICTED_APIS = (
    "model-repository",
    "model-config",
    "shared-memory",
    "statistics",
    "trace",
    "logging",
)
ADMIN_HEADER = "admin-key"
#: Triton prefixes the header it checks on gRPC.
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"

# Triton's log lines: E for error, then MMDD.
_ERROR_LINE = re.compile(r"^E\d{4} ")
# Logged on every machine without a GPU.
_HARMLESS = ("CudaDriverHelper has not been initialized",)
_WHEEL_HINT = "install it with `.venv/bin/pip install nvidia-pytriton` (see pyproject.toml)"


@dataclass(frozen=True, kw_only=True)
class TritonLocalConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    repository: Path  # a model repository, e.g. from ops.models.build.build_repository
    state_dir: Path  # triton.pid and triton.log
    cache_dir: Path  # the prepared backend directory lives under it
    # Appended to the command line, e.g. ("--trace-config", "mode=opentelemetry").
    extra_args: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Wheel:
    server: Path  # tritonserver binary
    python_backend: Path  # backends/python, without a stub
    stub: Path  # the stub for the running Python version
    libs: Path  # nvidia_pytriton.libs


def triton_wheel() -> _Wheel:
    """The server files inside the installed ``nvidia-pytriton`` wheel.

    Raises :class:`StackError` naming the fix when the wheel, the binary or
    the stub for this Python version is missing.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"`nvidia-pytriton` is not installed; {_WHEEL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheel = _Wheel(
        server=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=root.parent / "nvidia_pytriton.libs",
    )
    if not os.access(wheel.server, os.X_OK):
        raise StackError(f"no executable tritonserver at {wheel.server}; reinstall: {_WHEEL_HINT}")
    if not (wheel.python_backend / "libtriton_python.so").is_file():
        raise StackError(f"no Python backend at {wheel.python_backend}; reinstall: {_WHEEL_HINT}")
    if not wheel.stub.is_file():
        shipped = sorted(
            (p.name for p in wheel.stub.parent.parent.glob("*")),
            key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()),
        )
        raise StackError(
            f"nvidia-pytriton has no Python backend stub for Python {version} "
            f"(it ships {', '.join(shipped) or 'none'}); run sluicegate on one of those "
            "Python versions"
        )
    return wheel


class LocalTriton:
    """Starts, watches and stops one ``tritonserver`` process (``ManagedProcess`` "triton").

    ``start`` returns only when every model is READY, and raises
    :class:`StackError` (quoting the log) if the server exits or times out.
    ``stop`` is idempotent.
    """

    def __init__(self, config: TritonLocalConfig) -> None:
        self.config = config
        self._process = ManagedProcess(name="triton", state_dir=config.state_dir)
        # Held while this object started the server: dropping a running Popen
        # warns (ResourceWarning), and poll() after stop() reaps the child.
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        """``host:port`` for ``tritonclient.grpc`` (no scheme)."""
        return f"{self.config.host}:{self.config.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def is_running(self) -> bool:
        return self._process.is_running()

    def pid(self) -> int | None:
        """The server's pid (from the pid file) while it is alive, else None."""
        return self._process.pid()

    def admin_key(self) -> str:
        """The key admin calls send in ``admin-key`` (created on first use)."""
        path = self.config.state_dir / "admin.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(16))
        return path.read_text().strip()

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment ``start`` uses (prepares the backend dir)."""
        wheel = triton_wheel()
        backends = self._prepare_backends(wheel)
        cfg = self.config
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key()}"
        argv = [
            str(wheel.server),
            f"--model-repository={cfg.repository.absolute()}",
            f"--backend-directory={backends}",
            f"--http-address={cfg.host}",
            f"--http-port={cfg.http_port}",
            f"--grpc-address={cfg.host}",
            f"--grpc-port={cfg.grpc_port}",
            f"--metrics-address={cfg.host}",
            f"--metrics-port={cfg.metrics_port}",
            "--model-control-mode=none",
            f"--grpc-restricted-protocol={restricted}",
            f"--http-restricted-api={restricted}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            # No GPU here: skip the pinned (CUDA host) memory pool.
            "--pinned-memory-pool-byte-size=0",
            *cfg.extra_args,
        ]
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR")
        lib_path = [p for p in (libdir, str(wheel.libs), env.get("LD_LIBRARY_PATH")) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return argv, env

    def start(self, timeout: float = 180) -> None:
        """Start the server and wait until every model in the repository is READY."""
        cfg = self.config
        models = model_names(cfg.repository)
        if not models:
            raise StackError(
                f"no models in {cfg.repository}; build it with "
                "`python -m sluicegate.ops.models.build`"
            )
        for port in (cfg.http_port, cfg.grpc_port, cfg.metrics_port):
            if port_is_open(cfg.host, port):
                raise StackError(
                    f"port {cfg.host}:{port} is already in use; stop what holds it "
                    "(`sluicegate down`) or configure other Triton ports"
                )
        argv, env = self.command()
        # The log is appended to across runs; only this run's lines explain a failure.
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = proc = self._process.start(argv, env=env, cwd=cfg.state_dir)
        try:
            wait_until(
                lambda: self._models_ready(models),
                timeout=timeout,
                what=f"triton ({', '.join(models)})",
                interval=0.5,
                alive=lambda: proc.poll() is None,
                log_path=self._process.log_path,
            )
        except StackError as exc:
            self.stop(grace=5)
            raise StackError(f"{exc}{self._load_errors(log_offset)}") from exc
        except BaseException:
            self.stop(grace=5)
            raise

    def stop(self, grace: float = 30) -> bool:
        """SIGTERM, then SIGKILL after `grace` s. True if a server was running.

        Also stops a server another process started (found by its pid file).
        """
        stopped = self._process.stop(grace=grace)
        if self._proc is not None:
            self._proc.poll()  # reap (or note ManagedProcess already did)
            self._proc = None
        return stopped

    def _load_errors(self, offset: int) -> str:
        # The log's tail shows Triton shutting down; the cause (a model's
        # Python traceback) is in its E-level lines further up.
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [
            line[:500]
            for line in lines
            if _ERROR_LINE.match(line) and not any(h in line for h in _HARMLESS)
        ]
        return "\nTriton errors:\n" + "\n".join(errors[-5:]) if errors else ""

    def _models_ready(self, models: list[str]) -> bool:
        if not port_is_open(self.config.host, self.config.grpc_port):
            return False
        import tritonclient.grpc as grpcclient  # heavy import; only once started

        try:
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                return bool(client.is_server_ready()) and all(
                    client.is_model_ready(name) for name in models
                )
        except Exception:  # tritonclient raises its one exception type, or grpc's
            return False

    def _prepare_backends(self, wheel: _Wheel) -> Path:
        # A private copy: the stub must sit inside backends/python, and the
        # wheel's own folder may be read-only or shared between virtualenvs.
        backends = (self.config.cache_dir / "triton" / "backends").absolute()
        target = backends / "python"
        for src in [*wheel.python_backend.iterdir(), wheel.stub]:
            if src.name == "__pycache__":
                continue
            dst = target / src.name
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        return backends
