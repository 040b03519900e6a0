"""Background processes of the local stack.

A :class:`ManagedProcess` owns one server process started in its own process
group, writes its pid file and log file under a state dir, and stops it with
SIGTERM and then SIGKILL after a grace period. The pid file lets `sluicegate
status` / `down`, run from another shell, find and stop what `up` started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A local-stack part could not be installed, started or stopped.

    The message always names the fix (a command to run, a package to install).
    """


def require_binary(name: str, *, hint: str) -> str:
    """Return the absolute path of `name` on PATH or raise with `hint`."""
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` was not found on PATH. {hint}")
    return found


def port_is_open(host: str, port: int, *, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (tests use it to avoid clashes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `predicate` until it is true.

    Raises :class:`StackError` after `timeout` seconds, or at once when
    `alive()` turns false (the process died), quoting the tail of `log_path`.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited during startup.{_log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f} s.{_log_tail(log_path)}")
        time.sleep(interval)


def _log_tail(log_path: Path | None, lines: int = 25) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log_path}:\n" + "\n".join(tail)


# Popen objects of the servers this process started, by pid: kept so that
# `stop` can reap them (and Python does not warn about running children).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state too.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass(frozen=True, kw_only=True)
class ManagedProcess:
    """One named server process with files under `state_dir`.

    `name.pid` holds the pid of the process-group leader; `name.log` its
    stdout and stderr. Starting is refused while a live pid file exists.
    """

    name: str
    state_dir: Path

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid if that process is still alive, else None."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def wait_for(self, path: Path, *, what: str, timeout: float = 120.0) -> None:
        """Wait until `path` exists (a ready file); `StackError` quoting the log if
        the process dies first or `timeout` passes (`wait_until`)."""
        wait_until(
            path.exists, timeout=timeout, what=what, alive=self.is_running, log_path=self.log_path
        )

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` detached in a new session, logging to `log_path`."""
        if (pid := self.pid()) is not None:
            raise StackError(
                f"{self.name} is already running (pid {pid}); run `sluicegate down` first."
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{proc.pid}\n")
        _CHILDREN[proc.pid] = proc
        return proc

    def stop(self, *, grace: float = 20.0) -> bool:
        """SIGTERM the process group, SIGKILL it after `grace` seconds.

        Returns True if a process was running. Idempotent.
        """
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        _signal_group(pid, signal.SIGKILL)  # stray children of the group
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)
        self.pid_path.unlink(missing_ok=True)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; others are reaped by init.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
