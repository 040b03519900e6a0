"""Pools beyond CPU on the local stack: `sluicegate up --pools cpu,a100`.

There is no A100 here, so the `a100` pool is a **stand-in**: a second Triton
on this machine's CPU, serving the `a100-standin` target (the a100 target's
fp16 variants, ONNX Runtime's CPU provider, `KIND_CPU` instances), with its
own workers (`--pool a100`: the a100 budgets, group `sg.worker.<model>.a100`)
reading their own work topics (`sg.work.<model>.a100`). The router is told
which pools exist (`SLUICEGATE_ROUTING__POOLS`), so large requests go to the
stand-in and small ones to CPU, and failover (streams/failover.py) is
exercised against real processes. Where the fp16 variants are not built yet
(`sluicegate models variants`), the stand-in serves the CPU target's files
and says so in `status`: it then differs from the CPU pool only in its
budgets and its server, not in its numerics.

Nothing here is faster than the CPU pool: both share this machine's cores.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sluicegate.schemas.topics import POOLS, work_topic

from ..models.build import build_repository
from ..models.targets import variant_files
from .process import ManagedProcess, StackError, wait_until
from .triton import LocalTriton, TritonLocalConfig

STANDIN_POOLS = ("a100",)  # pools `up --pools` can stand in for on this machine
# The stand-in's Triton configs (python backend) take at most these per call;
# the a100 budgets allow more, sized for the card.
_STANDIN_MAX_BATCH = {"text-embed": 64, "ocr": 16, "doc-match": 16}


def parse_pools(pools: Sequence[str]) -> tuple[str, ...]:
    """`["cpu,a100"]` or `["cpu", "a100"]` -> ("cpu", "a100"); CPU always runs first.

    Raises StackError naming the pools `up` can run.
    """
    names = [p.strip() for item in pools for p in item.split(",") if p.strip()]
    runnable = ("cpu", *STANDIN_POOLS)
    bad = [p for p in names if p not in runnable]
    if bad:
        known = f"pools are {', '.join(POOLS)}; " if any(p not in POOLS for p in bad) else ""
        raise StackError(
            f"cannot run pool(s) {bad} here: {known}`up --pools` runs {', '.join(runnable)} "
            "(a100 as a CPU stand-in; mi200 needs its own hardware, see docs/scaling.md)"
        )
    return tuple(dict.fromkeys(["cpu", *names]))


@dataclass(frozen=True, kw_only=True)
class StandinPorts:
    http: int
    grpc: int
    metrics: int


class StandinPool:
    """The a100 stand-in: its Triton, its repository and one worker per model.

    `start_triton()` builds the repository (idempotent) and starts the
    server; `worker_argv()`/`worker_env()` describe each worker for the
    stack to start; `stop()` stops the workers, then the server.
    """

    pool = "a100"

    def __init__(self, *, state_dir: Path, cache_dir: Path, host: str, ports: StandinPorts) -> None:
        self.state_dir = state_dir / "pools" / self.pool
        self.cache_dir = cache_dir
        self.repository = cache_dir / f"model-repository-{self.pool}-standin"
        self.variants = cache_dir / "model-variants"
        self.triton = LocalTriton(
            TritonLocalConfig(
                host=host,
                repository=self.repository,
                state_dir=self.state_dir / "triton",
                cache_dir=cache_dir,
                http_port=ports.http,
                grpc_port=ports.grpc,
                metrics_port=ports.metrics,
            )
        )
        self.ports = ports

    @property
    def triton_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def worker(self, model: str) -> ManagedProcess:
        return ManagedProcess(name=f"worker-{model}-{self.pool}", state_dir=self.state_dir)

    def ready_file(self, model: str) -> Path:
        return self.state_dir / f"worker-{model}-{self.pool}.ready"

    def weights_note(self) -> str:
        """What the stand-in serves, as written when it was built."""
        try:
            return str(json.loads((self.state_dir / "standin.json").read_text())["weights"])
        except (OSError, ValueError, KeyError):
            return "not built"

    def build(self, say: Callable[[str], None]) -> str:
        """Build the stand-in repository; returns (and records) what weights it serves."""
        files = variant_files(self.variants, "fp16")
        if all(p.is_file() for p in (files.embed, files.det, files.rec)):
            build_repository(
                self.repository, targets=["a100-standin"], variants=self.variants, progress=say
            )
            note = "a100 target's fp16 variants on ONNX Runtime's CPU provider"
        else:
            say(
                f"a100 stand-in: no fp16 variants under {self.variants} "
                "(`sluicegate models variants`); serving the CPU target's weights"
            )
            build_repository(self.repository, targets=["cpu"], progress=say)
            note = "CPU target's weights (fp16 variants not built: `sluicegate models variants`)"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "standin.json").write_text(json.dumps({"weights": note}) + "\n")
        return note

    def start_triton(self, say: Callable[[str], None], *, timeout: float = 240) -> None:
        if self.triton.is_running():
            return
        self.build(say)
        say(f"starting the a100 stand-in Triton on {self.triton_url} (gRPC, CPU)")
        self.triton.start(timeout=timeout)

    def worker_argv(self, python: str, model: str) -> list[str]:
        return [
            python,
            "-m",
            "sluicegate",
            "worker",
            "--model",
            model,
            "--pool",
            self.pool,
            "--ready-file",
            str(self.ready_file(model)),
        ]

    def worker_env(self, model: str, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env |= {
            "SLUICEGATE_TRITON__URL": self.triton_url,
            "SLUICEGATE_TRITON__TRANSPORT": "shm",
            "SLUICEGATE_TRITON__ADMIN_KEY": self.triton.admin_key(),
            "SLUICEGATE_BATCH__MAX_BATCH_SIZE": str(_STANDIN_MAX_BATCH.get(model, 16)),
            # Seen dead by the router's pool watch 6 s after a kill -9 (10 s by default).
            "SLUICEGATE_SESSION_TIMEOUT_MS": "6000",
        }
        return env

    def up(
        self,
        models: Sequence[str],
        *,
        env: Mapping[str, str],
        say: Callable[[str], None],
        timeout: float = 240,
    ) -> list[Callable[[], object]]:
        """Start the Triton and workers not yet running; returns the stop functions of those."""
        started: list[Callable[[], object]] = []
        if not self.triton.is_running():
            self.start_triton(say, timeout=timeout)
            started.append(self.triton.stop)
        for model in models:
            proc = self.worker(model)
            if proc.is_running():
                continue
            self.ready_file(model).unlink(missing_ok=True)
            say(f"starting the {model} worker of the a100 stand-in")
            proc.start(self.worker_argv(sys.executable, model), env=self.worker_env(model, env))
            started.append(proc.stop)
        for model in models:
            proc = self.worker(model)
            wait_until(
                self.ready_file(model).exists,
                timeout=120,
                what=f"worker {model} (a100 stand-in)",
                alive=proc.is_running,
                log_path=proc.log_path,
            )
        return started

    def status(self, models: Sequence[str]) -> list[tuple[str, int | None, bool, str]]:
        """(part, pid, healthy, where) rows for `sluicegate status`, each marked STAND-IN."""
        rows = [
            (
                "triton a100 (STAND-IN)",
                self.triton.pid(),
                http_ok(f"http://127.0.0.1:{self.ports.http}/v2/health/ready"),
                f"{self.triton_url} (gRPC); not an A100: this machine's CPU, "
                f"serving {self.weights_note()}",
            )
        ]
        for model in models:
            pid = self.worker(model).pid()
            rows.append(
                (
                    f"worker {model} a100 (STAND-IN)",
                    pid,
                    pid is not None and self.ready_file(model).exists(),
                    f"{work_topic(model, self.pool)}, log {self.worker(model).log_path}",
                )
            )
        return rows

    def stop(self, models: Sequence[str]) -> list[str]:
        stopped = []
        for model in models:
            if self.worker(model).stop(grace=45):
                stopped.append(f"worker {model} ({self.pool} stand-in)")
            self.ready_file(model).unlink(missing_ok=True)
        if self.triton.stop():
            stopped.append(f"triton ({self.pool} stand-in)")
        return stopped


def http_ok(url: str) -> bool:
    """True when `url` answers 200 within a second (Triton's /v2/health/ready)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
