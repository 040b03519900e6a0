"""Running scenarios on chaos stacks and printing the table (`sluicegate chaos run`)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.table import Table

from .run import ChaosRun, Mode, Options, Report
from .scenarios import SCENARIOS, Scenario
from .stack import ChaosStack

Progress = Callable[[str], None]


def run_scenarios(
    names: Sequence[str],
    *,
    requests: int,
    mode: Mode,
    cache_dir: Path,
    state_dir: Path | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> list[Report]:
    """Run each scenario on a stack of its broker count; stacks are shared where they can be."""
    say = progress or (lambda _m: None)
    reports: list[Report] = []
    root = Path(state_dir or tempfile.mkdtemp(prefix="sg-chaos-"))
    by_brokers: dict[int, list[Scenario]] = {}
    for name in names:
        scenario = SCENARIOS[name]
        by_brokers.setdefault(scenario.brokers, []).append(scenario)
    for brokers, scenarios in sorted(by_brokers.items()):
        stack = ChaosStack(root=root / f"brokers-{brokers}", cache_dir=cache_dir, brokers=brokers)
        say(f"starting a chaos stack: {brokers} broker(s), Triton (text-embed) in {stack.root}")
        try:
            stack.start()
            for scenario in scenarios:
                say(f"scenario {scenario.name}: {scenario.summary} ({requests} requests, {mode})")
                reports.append(
                    run_one(stack, scenario, requests=requests, mode=mode, options=options)
                )
                say(f"scenario {scenario.name}: {'PASS' if reports[-1].passed else 'FAIL'}")
        finally:
            stack.stop()
    return reports


def run_one(
    stack: ChaosStack,
    scenario: Scenario,
    *,
    requests: int,
    mode: Mode,
    options: Options | None = None,
) -> Report:
    """One scenario on an already started stack (the stack is left running).

    A server that died outside any scenario (e.g. the machine's OOM killer) is
    restarted first, and the report says so.
    """
    notes = []
    if stack.brokers == 1 and not stack.kafka.is_running():
        stack.kafka.start(timeout=120)
        notes.append("Kafka was down before the run; restarted")
    if not stack.triton.is_running():
        stack.triton.stop(grace=1)
        stack.start_triton()
        notes.append("Triton was down before the run; restarted")
    stack.extra_env.clear()
    stack.slow_triton(0)
    for name in stack.running_routers() + stack.running_workers():
        stack.stop_worker(name)
    stack.workers.clear()
    stack.routers.clear()
    run = ChaosRun(
        stack=stack,
        scenario=scenario.name,
        mode=mode,
        requests=requests,
        workers=scenario.workers,
        routers=scenario.routers,
        replication=min(3, stack.brokers),
        options=options,
    )
    run.report.notes += notes
    if scenario.prepare is not None:
        scenario.prepare(run)
    return asyncio.run(run.execute(scenario.inject, seed=scenario.seed))


def table(reports: Sequence[Report]) -> Table:
    t = Table(title="sluicegate chaos")
    for col in (
        "scenario",
        "mode",
        "sent",
        "results",
        "lost",
        "duplicated",
        "by status",
        "max worker RSS MiB",
        "rebalances",
        "seconds",
        "faults injected",
        "verdict",
    ):
        t.add_column(col, overflow="fold")
    for r in reports:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r.by_status.items()))
        verdict = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
        if r.notes:
            verdict += " (" + "; ".join(r.notes) + ")"
        t.add_row(
            r.scenario,
            r.mode,
            str(r.sent),
            str(r.results),
            str(r.lost),
            str(r.duplicated),
            statuses,
            f"{r.max_worker_rss_mb:.0f}",
            str(r.rebalances),
            f"{r.seconds:.0f}",
            "\n".join(r.faults),
            verdict,
        )
    return t
