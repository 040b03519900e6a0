"""ops/k8s: strict decoding into the real Kubernetes and KEDA API types, and the promises.

`.cache/bin/k8scheck` (ops/tools/k8scheck, `make tools`) decodes every document
into its k8s.io/api or KEDA v1alpha1 Go type with unknown fields refused: an
offline schema check (no schema download). The rest checks what the pools
promise: GPU vendor resources, a PDB per Deployment, a KEDA ScaledObject per
work topic on the worker's consumer group, and a termination grace longer
than the worker's drain.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluicegate.ops.k8s import generate
from sluicegate.streams.topicspec import load_topic_file
from sluicegate.workers.config import WorkerSettings

from ..tooling import cli_error, go_tool

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "ops" / "k8s"
MANIFESTS = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "topics.yaml")


def _checker() -> Path:
    return go_tool("k8scheck")


def _docs() -> list[dict[str, Any]]:
    return [d for f in MANIFESTS for d in yaml.safe_load_all(Path(f).read_text()) if d]


def test_every_manifest_decodes_strictly_into_its_api_type() -> None:
    done = subprocess.run(
        [str(_checker()), *MANIFESTS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
    assert kinds.count("Deployment") == kinds.count("ScaledObject") == 6
    assert kinds.count("PodDisruptionBudget") == 6 and "Job" in kinds


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"spec": {"replicas": 1, "replicaz": 2}}, 'unknown field "replicaz"'),
        ({"spec": {"replicas": "two"}}, "cannot unmarshal string"),
    ],
)
def test_a_broken_manifest_is_refused(tmp_path: Path, patch: dict[str, Any], error: str) -> None:
    deployment = next(d for d in _docs() if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], **patch["spec"]}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = subprocess.run([str(_checker()), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and error in done.stderr, done.stderr


def test_a_misspelt_keda_field_is_refused(tmp_path: Path) -> None:
    scaled = next(d for d in _docs() if d["kind"] == "ScaledObject")
    scaled["spec"]["maxReplicas"] = 3  # the field is maxReplicaCount
    path = tmp_path / "so.yaml"
    path.write_text(yaml.safe_dump(scaled))
    done = subprocess.run([str(_checker()), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "maxReplicas" in done.stderr, done.stderr


def test_generated_files_are_current() -> None:
    for pool in generate.POOLS:
        assert (K8S / f"pool-{pool}.yaml").read_text() == generate.render(pool), (
            "stale: run `sluicegate generate k8s`"
        )


def test_pools_request_their_gpu_and_drain_before_the_kill() -> None:
    docs = _docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, dep in deployments.items():
        pool = dep["metadata"]["labels"]["sluicegate/pool"]
        model = dep["metadata"]["labels"]["sluicegate/model"]
        pod = dep["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        gpu = {"a100": "nvidia.com/gpu", "mi200": "amd.com/gpu"}[pool]
        assert containers["triton"]["resources"]["requests"][gpu] == "1", name
        assert containers["triton"]["resources"]["limits"][gpu] == "1", name
        worker = containers["worker"]
        assert cli_error(worker["args"]) is None, worker["args"]
        assert worker["args"][:5] == ["worker", "--model", model, "--pool", pool]
        env = {e["name"]: e["value"] for e in worker["env"]}
        drain = float(env.get("SLUICEGATE_SHUTDOWN_GRACE_S", WorkerSettings().shutdown_grace_s))
        pre_stop = float(worker["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pod["terminationGracePeriodSeconds"] > drain + pre_stop, name
        # Triton outlives the worker's drain, so the last batches get answers.
        triton_stop = float(containers["triton"]["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert drain + pre_stop <= triton_stop < pod["terminationGracePeriodSeconds"]
        (init,) = pod["initContainers"]
        assert cli_error(init["args"]) is None, init["args"]
        if containers["triton"]["command"][0] == "sluicegate":
            assert cli_error(containers["triton"]["command"][1:]) is None
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert len(deployments) == 6


def test_each_work_topic_has_a_pdb_and_a_keda_scaler_on_the_worker_group() -> None:
    docs = _docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    scalers = [d for d in docs if d["kind"] == "ScaledObject"]
    partitions = {t.name: t.partitions for t in load_topic_file(K8S / "topics.yaml").resolved()}
    topics = set()
    for so in scalers:
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        labels = target["spec"]["template"]["metadata"]["labels"]
        model, pool = labels["sluicegate/model"], labels["sluicegate/pool"]
        assert pdbs[target["metadata"]["name"]]["spec"]["selector"]["matchLabels"] == labels
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["topic"] == f"sg.work.{model}.{pool}"
        assert meta["consumerGroup"] == WorkerSettings(model=model, pool=pool).group()
        # More consumers than partitions would sit idle.
        assert so["spec"]["maxReplicaCount"] <= partitions[meta["topic"]]
        topics.add(meta["topic"])
    expected = {f"sg.work.{m}.{p}" for m in generate.MODELS for p in generate.POOLS}
    assert topics == expected
