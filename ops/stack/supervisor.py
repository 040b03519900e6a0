"""`sluicegate supervise`: keeps the local stack's workers, router and rollups running.

`sluicegate up` writes a plan (`<state>/supervisor/plan.json`, mode 0600: the
environment holds Triton's admin key) and starts one supervisor process per
stack in its own session, so it outlives the shell that ran `up`. The
supervisor starts every part of the plan as a :class:`ManagedProcess` (the
same pid, log and ready files as before, so `status` and `down` find them),
polls them, and restarts one that exits with capped exponential backoff
(0.5 s, 1 s, 2 s ... 30 s; back to 0.5 s once a part stayed up
`stable_s`). Every start, exit and restart is logged to
`<state>/supervisor/supervisor.log` and recorded in `parts.json`
(pid, restarts, last exit reason, state), which `sluicegate status` shows.

On SIGTERM (what `down` sends) it stops the parts in reverse plan order (the
router before the workers, so nothing is forwarded to a pool that drains)
and exits. If the supervisor itself is killed, the parts run on; `down`
still stops them through their pid files, and the next `up` starts a new
supervisor, which stops such leftovers before starting its own (never two
workers of one stack on one pid file).

Why a process of its own rather than a systemd unit or compose restart
policies: the local stack must work from a plain checkout with no service
manager, and the supervisor needs nothing but the pid files `up` already
keeps. The backoff is a two-line formula (:func:`backoff_s`), not a library
call: tenacity's waits expect a retried call, and here nothing is called.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .process import ManagedProcess

__all__ = [
    "PARTS_FILE",
    "Part",
    "PartState",
    "Supervisor",
    "backoff_s",
    "describe",
    "exit_reason",
    "keeps_trying",
    "read_parts",
    "start_supervisor",
    "supervisor_process",
    "write_plan",
]

log = logging.getLogger("sluicegate.supervisor")

PLAN_FILE, PARTS_FILE = "plan.json", "parts.json"


@dataclass(frozen=True, kw_only=True)
class Part:
    """One supervised process: `python -m sluicegate worker ...`, `router`, `telemetry`."""

    name: str  # pid file `<state_dir>/<name>.pid`, log `<name>.log`
    state_dir: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's own
    ready_file: Path | None = None  # removed before each (re)start

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(name=self.name, state_dir=self.state_dir)


@dataclass(kw_only=True)
class PartState:
    """What `status` shows of a part: its pid, restarts so far and why it last exited."""

    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    state: str = "starting"  # running | restarting | stopped
    started_ms: int = 0


def backoff_s(failures: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Delay before restart number `failures` (1, 2, ...) of a part that keeps dying."""
    return float(min(cap_s, base_s * 2 ** max(0, failures - 1)))


def exit_reason(returncode: int, log_path: Path | None = None) -> str:
    """`killed by SIGKILL`, `exit 1: <last line of the log>`..."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    reason = f"exit {returncode}"
    if returncode != 0 and log_path is not None and log_path.exists():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            reason += f": {lines[-1].strip()[:200]}"
    return reason


def write_plan(directory: Path, parts: list[Part]) -> Path:
    """Write the plan the supervisor reads (0600: the environment may hold secrets)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PLAN_FILE
    data = [
        {
            "name": p.name,
            "state_dir": str(p.state_dir),
            "argv": p.argv,
            "env": p.env,
            "ready_file": None if p.ready_file is None else str(p.ready_file),
        }
        for p in parts
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    return path


def read_plan(directory: Path) -> list[Part]:
    data = json.loads((directory / PLAN_FILE).read_text())
    return [
        Part(
            name=d["name"],
            state_dir=Path(d["state_dir"]),
            argv=list(d["argv"]),
            env=dict(d["env"]),
            ready_file=None if d["ready_file"] is None else Path(d["ready_file"]),
        )
        for d in data
    ]


def read_parts(directory: Path) -> dict[str, PartState]:
    """The supervisor's record of each part ({} when there is none)."""
    try:
        data = json.loads((directory / PARTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {name: PartState(**state) for name, state in data.items()}


class Supervisor:
    """Runs the plan's parts until SIGTERM/SIGINT, restarting any that exits."""

    def __init__(self, *, directory: Path, stable_s: float = 60.0, poll_s: float = 0.5) -> None:
        self.directory = directory
        self.parts = read_plan(directory)
        self.state = {p.name: PartState() for p in self.parts}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self._due: dict[str, float] = {}  # part -> monotonic time of its next restart
        self._failures: dict[str, int] = {p.name: 0 for p in self.parts}  # since last stable
        self._started: dict[str, float] = {}
        self._stable_s, self._poll_s = stable_s, poll_s
        self._stopping = False

    def request_stop(self, *_args: object) -> None:
        self._stopping = True

    def run(self) -> None:
        """`serve` with SIGTERM / SIGINT requesting the stop (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        self.serve()

    def serve(self) -> None:
        """Start every part, restart those that exit, until `request_stop`; then stop them."""
        for part in self.parts:
            if part.process.is_running():  # left by a supervisor that was killed
                log.warning(
                    "stopping %s (pid %s), left by an earlier supervisor",
                    part.name,
                    part.process.pid(),
                )
                part.process.stop(grace=45)
            self._start(part)
        self._save()
        while not self._stopping:
            changed = False
            for part in self.parts:
                changed |= self._check(part)
            if changed:
                self._save()
            time.sleep(self._poll_s)
        self._stop_all()

    def _start(self, part: Part) -> None:
        if part.ready_file is not None:
            part.ready_file.unlink(missing_ok=True)
            part.ready_file.with_suffix(".waiting").unlink(missing_ok=True)  # a worker's
        popen = part.process.start(part.argv, env={**os.environ, **part.env})
        self._popen[part.name] = popen
        self._started[part.name] = time.monotonic()
        state = self.state[part.name]
        state.pid, state.state, state.started_ms = popen.pid, "running", int(time.time() * 1000)
        log.info("started %s (pid %d, restarts %d)", part.name, popen.pid, state.restarts)

    def _check(self, part: Part) -> bool:
        """Restart `part` if it exited and its backoff is over; True if its state changed."""
        now, name = time.monotonic(), part.name
        if name in self._due:
            if now < self._due[name]:
                return False
            del self._due[name]
            self.state[name].restarts += 1
            self._start(part)
            return True
        popen = self._popen.get(name)
        if popen is None or popen.poll() is None:
            return False
        reason = exit_reason(popen.returncode, part.process.log_path)
        if now - self._started.get(name, now) >= self._stable_s:
            self._failures[name] = 0
        self._failures[name] += 1
        delay = backoff_s(self._failures[name])
        state = self.state[name]
        state.pid, state.last_exit, state.state = None, reason, "restarting"
        log.warning("%s (pid %d) %s; restarting in %.1f s", name, popen.pid, reason, delay)
        self._due[name] = now + delay
        del self._popen[name]
        return True

    def _stop_all(self) -> None:
        log.info("stopping %d parts", len(self.parts))
        for part in reversed(self.parts):
            part.process.stop(grace=45)
            if part.ready_file is not None:
                part.ready_file.unlink(missing_ok=True)
            self.state[part.name].pid, self.state[part.name].state = None, "stopped"
        self._save()

    def _save(self) -> None:
        path = self.directory / PARTS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: asdict(s) for n, s in self.state.items()}, indent=2))
        tmp.replace(path)


def supervisor_process(directory: Path) -> ManagedProcess:
    return ManagedProcess(name="supervisor", state_dir=directory)


def start_supervisor(directory: Path, parts: list[Part], env: dict[str, str]) -> ManagedProcess:
    """Write the plan and start `sluicegate supervise` in the background (own session)."""
    write_plan(directory, parts)
    (directory / PARTS_FILE).unlink(missing_ok=True)
    process = supervisor_process(directory)
    argv = [sys.executable, "-m", "sluicegate", "supervise", "--state-dir", str(directory)]
    process.start(argv, env=env)
    return process


def describe(state: PartState | None, waiting_file: Path | None = None) -> str:
    """`restarts 1, last exit: killed by SIGKILL; waiting-for-triton (attempt 3)` or ``."""
    notes = []
    if state is not None and (state.restarts or state.last_exit):
        notes.append(f"restarts {state.restarts}, last exit: {state.last_exit}")
    if state is not None and state.state == "restarting":
        notes.append("restarting")
    if waiting_file is not None and waiting_file.exists():
        try:
            waiting = json.loads(waiting_file.read_text())
            notes.append(f"{waiting['state']} (attempt {waiting['attempt']})")
        except (OSError, ValueError, KeyError):
            notes.append("waiting for its backend")
    return "; ".join(notes)


def keeps_trying(directory: Path, name: str, *, max_restarts: int = 3) -> Callable[[], bool]:
    """For `wait_until(alive=...)` while `up` waits for a part to be ready.

    False once the supervisor is gone or the part has been restarted
    `max_restarts` times (a crash loop at start: `up` fails and quotes its log).
    """
    supervisor = supervisor_process(directory)

    def alive() -> bool:
        state = read_parts(directory).get(name)
        restarts = 0 if state is None else state.restarts
        return supervisor.is_running() and restarts < max_restarts

    return alive
