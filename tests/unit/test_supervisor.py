"""The supervisor's bookkeeping, and one real restart of a tiny child process."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import pytest

from sluicegate.ops.stack.supervisor import (
    Part,
    PartState,
    Supervisor,
    backoff_s,
    describe,
    exit_reason,
    keeps_trying,
    read_parts,
    supervisor_process,
    write_plan,
)

T = TypeVar("T")


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(30) == 30.0


def test_exit_reason_names_the_signal_or_the_last_log_line(tmp_path: Path) -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    log = tmp_path / "x.log"
    log.write_text("starting\nKafkaConnectError: cannot connect\n\n")
    assert exit_reason(1, log) == "exit 1: KafkaConnectError: cannot connect"
    assert exit_reason(0, log) == "exit 0"


def test_describe_shows_restarts_and_waiting(tmp_path: Path) -> None:
    waiting = tmp_path / "w.waiting"
    waiting.write_text('{"state": "waiting-for-triton", "attempt": 4}')
    state = PartState(restarts=2, last_exit="killed by SIGKILL", state="running")
    assert describe(state, waiting) == (
        "restarts 2, last exit: killed by SIGKILL; waiting-for-triton (attempt 4)"
    )
    assert describe(PartState(), None) == ""


def test_the_plan_is_private(tmp_path: Path) -> None:
    part = Part(name="p", state_dir=tmp_path, argv=["x"], env={"SECRET": "s"})
    path = write_plan(tmp_path / "sup", [part])
    assert path.stat().st_mode & 0o077 == 0


def test_a_child_that_dies_is_restarted_and_recorded(tmp_path: Path) -> None:
    directory = tmp_path / "sup"
    ready = tmp_path / "child.ready"
    # Touches its ready file, then lives until killed.
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(600)"
    part = Part(
        name="child", state_dir=tmp_path, argv=[sys.executable, "-c", code], ready_file=ready
    )
    write_plan(directory, [part])
    supervisor = Supervisor(directory=directory, poll_s=0.05)
    thread = threading.Thread(target=supervisor.serve, daemon=True)
    thread.start()
    try:
        first = _wait(lambda: read_parts(directory).get("child"), lambda s: s.pid is not None)
        assert first.pid is not None
        assert first.restarts == 0 and first.state == "running"
        _wait(ready.exists, bool)
        assert part.process.pid() == first.pid  # the pid file `status` and `down` use
        os.kill(first.pid, signal.SIGKILL)
        again = _wait(
            lambda: read_parts(directory).get("child"), lambda s: s.restarts == 1 and s.pid
        )
        assert again.pid != first.pid and again.last_exit == "killed by SIGKILL"
        _wait(ready.exists, bool)
    finally:
        supervisor.request_stop()
        thread.join(timeout=60)
    assert read_parts(directory)["child"].state == "stopped"
    assert not part.process.is_running()


def _wait(probe: Callable[[], T | None], ok: Callable[[T], object], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and ok(value):
            return value
        time.sleep(0.05)
    pytest.fail(f"not after {timeout} s: {probe()}")  # raises


def test_up_stops_waiting_for_a_part_that_keeps_dying(tmp_path: Path) -> None:
    alive = keeps_trying(tmp_path, "worker-ocr", max_restarts=3)
    assert not alive()  # no supervisor
    supervisor_process(tmp_path).pid_path.write_text(f"{os.getpid()}\n")  # a live pid
    assert alive()  # no record yet: starting
    for restarts, expected in ((2, True), (3, False)):
        state = {"worker-ocr": asdict(PartState(restarts=restarts))}
        (tmp_path / "parts.json").write_text(json.dumps(state))
        assert alive() is expected


def test_a_new_supervisor_replaces_parts_left_by_a_killed_one(tmp_path: Path) -> None:
    directory = tmp_path / "sup"
    argv = [sys.executable, "-c", "import time; time.sleep(600)"]
    part = Part(name="child", state_dir=tmp_path, argv=argv)
    orphan = part.process.start(argv)  # as if an earlier supervisor had started it
    write_plan(directory, [part])
    supervisor = Supervisor(directory=directory, poll_s=0.05)
    thread = threading.Thread(target=supervisor.serve, daemon=True)
    thread.start()
    try:
        state = _wait(
            lambda: read_parts(directory).get("child"), lambda s: s.pid not in (None, orphan.pid)
        )
        assert orphan.poll() is not None  # stopped, not left running beside the new one
        assert part.process.pid() == state.pid
    finally:
        supervisor.request_stop()
        thread.join(timeout=60)
    assert not part.process.is_running()
