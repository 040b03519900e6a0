"""`sluicegate up --workers-per-device N`: N worker parts per model, one group, one card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluicegate.ops.cli import app
from sluicegate.ops.stack.stack import LocalStack, StackSettings

from .test_compose import COMBINATIONS, COMPOSE, load


def test_each_model_gets_n_parts_on_one_card(tmp_path: Path) -> None:
    stack = LocalStack(StackSettings(state_dir=tmp_path, workers_per_device=3))
    parts = [stack._worker_part("text-embed", r) for r in stack.replicas()]
    assert [p.name for p in parts] == [
        "worker-text-embed",
        "worker-text-embed-r1",
        "worker-text-embed-r2",
    ]
    assert len({p.ready_file for p in parts}) == 3
    cards = {p.env["SLUICEGATE_SIMULATED__DEVICE_FILE"] for p in parts}
    assert cards == {str(tmp_path.resolve() / "simulated" / "gpu0.dev")}
    # No part names a group of its own: they share sg.worker.<model>.<pool>.
    assert not any("SLUICEGATE_GROUP_ID" in p.env for p in parts)


def test_status_and_down_follow_the_running_stack_not_the_settings(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"models": ["text-embed"], "workers_per_device": 2})
    )
    stack = LocalStack(StackSettings(state_dir=tmp_path))
    assert list(stack.replicas()) == [0, 1]
    names = {row.name for row in stack.status() if row.name.startswith("worker text-embed")}
    assert names == {"worker text-embed 1/2", "worker text-embed 2/2"}


def test_up_help_names_the_option() -> None:
    result = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--workers-per-device" in result.output


@pytest.mark.parametrize(("combo", "pool"), [("all-nvidia", "a100"), ("all-rocm", "mi200")])
def test_compose_gpu_workers_scale_with_one_variable(combo: str, pool: str) -> None:
    services = load(COMBINATIONS[combo])["services"]
    gpu_workers = {
        name: svc for name, svc in services.items() if (svc.get("command") or [])[-1:] == [pool]
    }
    assert set(gpu_workers) == {"worker-text-embed", "worker-ocr", "worker-doc-match"}
    # .env.example's SLUICEGATE_WORKERS_PER_DEVICE=1, interpolated by the compose loader.
    assert {svc["deploy"]["replicas"] for svc in gpu_workers.values()} == {1}
    for f in ("nvidia.yaml", "rocm.yaml"):
        text = (COMPOSE / f).read_text()
        assert text.count("replicas: ${SLUICEGATE_WORKERS_PER_DEVICE:-1}") == 3


def test_k8s_gpu_pods_run_several_workers_on_one_gpu() -> None:
    from sluicegate.ops.k8s import generate
    from sluicegate.streams.topicspec import load_topic_file

    partitions = {
        t.name: t.partitions
        for t in load_topic_file(Path(generate.__file__).parent / "topics.yaml").resolved()
    }
    for pool, p in generate.POOLS.items():
        n = p["workers_per_gpu"]
        for model in generate.MODELS:
            pod = generate._deployment(model, pool, p)["spec"]["template"]["spec"]
            workers = [c for c in pod["containers"] if c["name"].startswith("worker")]
            assert len(workers) == n
            # Only Triton holds the GPU; the workers are its clients.
            assert not any(str(p["gpu"]) in str(w["resources"]) for w in workers)
            ports = [w["ports"][0]["containerPort"] for w in workers]
            mounts = [w["volumeMounts"][0]["name"] for w in workers]
            assert len(set(ports)) == n and len(set(mounts)) == n  # one pod, one netns
            # Every worker of every pod KEDA may start gets a partition.
            assert p["max_replicas"] * n <= partitions[f"sg.work.{model}.{pool}"]
        assert pool == "cpu" or n > 1
