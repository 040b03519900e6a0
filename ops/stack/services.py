"""The streams processes of the local stack: the ingress router and the telemetry rollups.

Started by `sluicegate up` after the workers, as managed processes like
them (pid and log under `<state>/streams/`), each touching a ready file once
it has joined its consumer group; stopped by `down` before the workers, so
the router stops forwarding before the workers drain.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .process import ManagedProcess, wait_until

SERVICES = ("router", "telemetry")


@dataclass(frozen=True, kw_only=True)
class StreamsServices:
    state_dir: Path  # the stack's state dir

    def process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name=name, state_dir=self.state_dir / "streams")

    def ready_file(self, name: str) -> Path:
        return self.state_dir / "streams" / f"{name}.ready"

    def start(
        self, env: Mapping[str, str], say: Callable[[str], None]
    ) -> list[Callable[[], object]]:
        """Start the services not yet running and wait until each is ready.

        Returns the stop functions of those this call started.
        """
        started: list[Callable[[], object]] = []
        for name in SERVICES:
            proc = self.process(name)
            if proc.is_running():
                continue
            say(f"starting the {name}")
            self.ready_file(name).unlink(missing_ok=True)
            argv = [sys.executable, "-m", "sluicegate", name]
            proc.start([*argv, "--ready-file", str(self.ready_file(name))], env=env)
            started.append(proc.stop)
        for name in SERVICES:
            proc = self.process(name)
            wait_until(
                self.ready_file(name).exists,
                timeout=120,
                what=name,
                alive=proc.is_running,
                log_path=proc.log_path,
            )
        return started

    def healthy(self, name: str) -> tuple[int | None, bool]:
        pid = self.process(name).pid()
        return pid, pid is not None and self.ready_file(name).exists()

    def stop(self) -> list[str]:
        stopped = []
        for name in SERVICES:
            if self.process(name).stop(grace=30):
                stopped.append(name)
            self.ready_file(name).unlink(missing_ok=True)
        return stopped
