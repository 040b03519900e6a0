"""Where the time goes: py-spy on the null-model worker or the router draining a backlog.

`sluicegate bench profile` (`make profile`) starts a one-node Kafka of its
own on free loopback ports, seeds a backlog of the benchmark's text mix,
starts the target as its own process, the way `sluicegate up` runs it:

    worker   `sluicegate worker --model text-embed` with the null backend
             (everything but the model: decode, price, batch, answer, commit)
    router   `sluicegate router` with an unlimited quota

and samples it with py-spy (`record --nonblocking --nolineno --format raw`)
from the moment it joined its group until it has drained the backlog. Idle
threads are left out, so the shares are of the time the process was busy.
It writes OUT/<target>.folded (collapsed stacks: speedscope and
flamegraph.pl read them) and OUT/<target>.md (rate, top frames by own time
and by cumulative time), and returns the same as `Profile`.

py-spy reads the target's memory with ptrace: run as the process's owner
(a container needs `--cap-add SYS_PTRACE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from sluicegate.ops.stack.process import ManagedProcess, StackError
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import encode
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    delete_topics,
    ensure_topics,
    streams_topics,
)

from .relay import count_outputs, produce_backlog
from .servers import local_kafka
from .workload import text_workload

__all__ = ["TARGETS", "Profile", "profile", "py_spy", "top_frames"]

# Frames every busy sample passes through (the CLI, the event loop, thread
# pools): left out of the cumulative ranking, where they would fill the top.
_PLUMBING: tuple[str, ...] = ("(asyncio/", "(typer/", "(click/", "(<frozen runpy>)")
_PLUMBING += ("(threading.py)", "(concurrent/futures/thread.py)")
_PLUMBING += ("(sluicegate/__main__.py)", "(ops/cli_serve.py)")
_PLUMBING_FRAMES = ("serve_until_signalled (", "main (ops/cli.py)")

TARGETS = ("worker", "router")
Say = Callable[[str], None]


@dataclass(frozen=True)
class Profile:
    target: str
    records: int
    rate_rps: float  # records out per second while draining
    samples: int
    own: list[tuple[str, float]]  # (frame, share of busy samples), most first
    cumulative: list[tuple[str, float]]
    folded: Path

    def markdown(self) -> str:
        lines = [
            f"# Profile: {self.target}",
            "",
            f"{self.records} records drained at {self.rate_rps:,.0f} records/s; "
            f"{self.samples} busy samples (py-spy, idle threads left out). "
            f"Stacks: `{self.folded.name}` (open in speedscope).",
            "",
        ]
        for title, rows in (("own time", self.own), ("cumulative time", self.cumulative)):
            lines += [f"## Top frames by {title}", "", "| share | frame |", "|---:|---|"]
            lines += [f"| {share:.1%} | `{frame}` |" for frame, share in rows]
            lines.append("")
        return "\n".join(lines)


def top_frames(
    folded: str, *, n: int = 15
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, top `n` by own time, top `n` by cumulative time) of collapsed stacks.

    Each line is `frame;frame;...;frame COUNT`, outermost first (py-spy's raw
    format; its first frame names the process or thread and is skipped when it
    is not a function). A frame counts once per stack for cumulative time, so
    recursion does not count twice, and the CLI's, the event loop's and the
    thread pools' own frames are left out of it (every sample passes them).
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if "(" in f]  # "func (file)"; not thread labels
        if not frames:
            continue
        k = int(count)
        samples += k
        own[frames[-1]] += k
        for frame in set(frames):
            if not _plumbing(frame):
                total[frame] += k
    if samples == 0:
        return 0, [], []

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, c / samples) for frame, c in counter.most_common(n)]

    return samples, share(own), share(total)


def _plumbing(frame: str) -> bool:
    return any(p in frame for p in _PLUMBING) or frame.startswith(_PLUMBING_FRAMES)


def py_spy() -> str:
    """The py-spy executable beside this Python, else on PATH."""
    found = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise StackError("py-spy is not installed; run `make venv` (it is in the dev extra)")
    return found


def _requests(count: int) -> list[bytes]:
    """The bench's text mix, each text made unique: the router would answer repeats
    from its cache, or hold them for the first copy's result (coalescing)."""
    workload = text_workload(seed=7)
    return [
        encode(
            InferenceRequest(
                request_id=f"p{i}-{uuid.uuid4().hex[:6]}",
                model=workload.model,
                texts=[f"[{i}] {text}" for text in workload.item(i).inputs.texts],
            )
        )
        for i in range(count)
    ]


@contextlib.asynccontextmanager
async def _target(
    target: str,
    kafka: KafkaSettings,
    topics: TopicSettings,
    group: str,
    *,
    state: Path,
    log_copy: Path,
) -> AsyncIterator[int]:
    """The target process, ready (joined its group); yields its pid.

    Stopped on exit, its log copied to `log_copy`.
    """
    proc = ManagedProcess(name=f"profile-{target}", state_dir=state)
    ready = state / f"{target}.ready"
    env = dict(
        os.environ,
        SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        PYTHONUNBUFFERED="1",
        **topics.as_env(),
    )
    argv = [sys.executable, "-m", "sluicegate"]
    if target == "worker":
        env.update(SLUICEGATE_BACKEND="null", SLUICEGATE_GROUP_ID=group)
        argv += ["worker", "--model", "text-embed"]
    else:
        env.update(
            SLUICEGATE_ROUTER_GROUP_ID=group,
            # Unlimited quota: the profile is of the router's work, not a tenant's budget.
            SLUICEGATE_QUOTA__DEFAULT__RATE="1e12",
            SLUICEGATE_QUOTA__DEFAULT__BURST="1e12",
        )
        argv += ["router"]
    proc.start([*argv, "--ready-file", str(ready)], env=env)
    try:
        await asyncio.to_thread(proc.wait_for, ready, what=f"the {target} to join its group")
        pid = proc.pid()
        assert pid is not None
        yield pid
    finally:
        await asyncio.to_thread(proc.stop, grace=30)
        if proc.log_path.exists():
            shutil.copyfile(proc.log_path, log_copy)


async def _profile_one(
    target: str, kafka: KafkaSettings, *, count: int, out: Path, state: Path, say: Say
) -> Profile:
    topics = TopicSettings.prefixed(f"profile.{target}.{uuid.uuid4().hex[:6]}")
    names = [*default_topics(topics), *streams_topics(topics)]
    await ensure_topics(kafka, names, compacted=compacted_topics(topics))
    source = topics.requests if target == "router" else topics.work("text-embed", "cpu")
    sink = topics.work("text-embed", "cpu") if target == "router" else topics.results
    try:
        say(f"{target}: seeding a backlog of {count} text-embed requests")
        await produce_backlog(kafka, source, _requests(count))
        folded = out / f"{target}.folded"
        group, log = f"{topics.requests}.{target}", out / f"{target}.log"
        async with _target(target, kafka, topics, group, state=state, log_copy=log) as pid:
            say(f"{target}: sampling pid {pid} with py-spy while it drains")
            spy = await asyncio.create_subprocess_exec(
                *(py_spy(), "record", "--pid", str(pid), "--rate", "250", "--nonblocking"),
                *("--nolineno", "--format", "raw", "--output", str(folded)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                seen, rate = await count_outputs(kafka, sink, expected=count, timeout_s=600)
            finally:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
                _, err = await asyncio.wait_for(spy.communicate(), timeout=60)
        if not folded.exists():
            raise StackError(f"py-spy wrote no profile: {err.decode(errors='replace').strip()}")
        if seen < count:
            raise StackError(f"the {target} drained {seen} of {count} records in 600 s")
    finally:
        await delete_topics(kafka, names)
    samples, own, cumulative = top_frames(folded.read_text())
    result = Profile(target, count, rate, samples, own, cumulative, folded)
    (out / f"{target}.md").write_text(result.markdown())
    return result


async def profile(
    targets: list[str], *, count: int, out: Path, cache_dir: Path, say: Say
) -> list[Profile]:
    """Profile each target in turn on one Kafka of its own; see the module docstring.

    `out` must exist.
    """
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown profile target(s) {unknown}; choose from {list(TARGETS)}")
    py_spy()  # fail before Kafka starts
    with tempfile.TemporaryDirectory(prefix="sg-profile-") as tmp:
        with local_kafka(cache_dir, Path(tmp), say) as kafka:
            return [
                await _profile_one(t, kafka, count=count, out=out, state=Path(tmp), say=say)
                for t in targets
            ]
