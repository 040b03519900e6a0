"""The streams processes of the local stack: the ingress router and the telemetry rollups.

Run by `sluicegate up`'s supervisor after the workers (supervisor.py), as
managed processes like them (pid and log under `<state>/streams/`), each
touching a ready file once it has joined its consumer group; stopped before
the workers, so the router stops forwarding before the workers drain.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .process import ManagedProcess, wait_until
from .supervisor import Part

SERVICES = ("router", "telemetry")


@dataclass(frozen=True, kw_only=True)
class StreamsServices:
    state_dir: Path  # the stack's state dir

    def process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name=name, state_dir=self.state_dir / "streams")

    def ready_file(self, name: str) -> Path:
        return self.state_dir / "streams" / f"{name}.ready"

    def parts(self, env: Mapping[str, str]) -> list[Part]:
        """The router and the rollups as supervised parts (`env` on top of the supervisor's)."""
        return [
            Part(
                name=name,
                state_dir=self.state_dir / "streams",
                argv=[
                    *(sys.executable, "-m", "sluicegate", name),
                    *("--ready-file", str(self.ready_file(name))),
                ],
                env=dict(env),
                ready_file=self.ready_file(name),
            )
            for name in SERVICES
        ]

    def wait_ready(self, alive: Callable[[str], Callable[[], bool]]) -> None:
        """Wait until each service touched its ready file (`alive(name)`: still worth waiting)."""
        for name in SERVICES:
            wait_until(
                self.ready_file(name).exists,
                timeout=120,
                what=name,
                alive=alive(name),
                log_path=self.process(name).log_path,
            )

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
