"""`sluicegate chaos run|list` is registered, lists its scenarios and refuses unknown ones."""

from __future__ import annotations

from typer.testing import CliRunner

from sluicegate.ops.chaos.scenarios import SCENARIOS
from sluicegate.ops.cli import app


def test_chaos_help_and_unknown_scenario() -> None:
    runner = CliRunner()
    group = runner.invoke(app, ["chaos", "--help"])
    assert group.exit_code == 0 and "run" in group.output and "list" in group.output
    shown = runner.invoke(app, ["chaos", "run", "--help"])
    assert shown.exit_code == 0 and "--requests" in shown.output and "--mode" in shown.output
    refused = runner.invoke(app, ["chaos", "run", "--scenario", "meteor-strike"])
    assert refused.exit_code == 2
    listed = runner.invoke(app, ["chaos", "list"])
    assert listed.exit_code == 0 and all(name in listed.output for name in SCENARIOS)
    assert len(SCENARIOS) == 9


def test_scenario_names_match_the_issue_list() -> None:
    assert list(SCENARIOS) == [
        "kill-worker",
        "scale-workers",
        "kill-router",
        "two-routers",
        "broker-restart",
        "triton-restart",
        "slow-triton",
        "overload",
        "leader-kill",
    ]
    assert SCENARIOS["leader-kill"].brokers == 3
    assert SCENARIOS["kill-router"].routers == 2 and SCENARIOS["two-routers"].routers == 2
