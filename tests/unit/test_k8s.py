"""ops/k8s: strict decoding into the real Kubernetes and KEDA API types, and the promises.

`.cache/bin/k8scheck` (ops/tools/k8scheck, `make tools`) decodes every document
into its k8s.io/api or KEDA v1alpha1 Go type with unknown fields refused: an
offline schema check (no schema download). The rest checks what the pools
promise: GPU vendor resources (none for cpu), a PDB per Deployment, a KEDA
ScaledObject per work topic scaling on that pool's backlog cost, a
termination grace longer than the worker's drain, and the router told every
pool that has Deployments.
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
    assert kinds.count("ScaledObject") == kinds.count("PodDisruptionBudget") == 9
    assert kinds.count("Deployment") == 9 + 2  # the pools', the router's and the rollups'
    assert "Job" in kinds and "Service" in kinds


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
    for path, text in generate.generated().items():
        assert path.read_text() == text, f"{path.name} is stale: run `sluicegate generate k8s`"


def test_pools_request_their_gpu_and_drain_before_the_kill() -> None:
    docs = _docs()
    deployments = {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == "Deployment" and "sluicegate/pool" in d["metadata"]["labels"]
    }
    for name, dep in deployments.items():
        pool = dep["metadata"]["labels"]["sluicegate/pool"]
        model = dep["metadata"]["labels"]["sluicegate/model"]
        pod = dep["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        resources = containers["triton"]["resources"]
        gpu = {"a100": "nvidia.com/gpu", "mi200": "amd.com/gpu", "cpu": None}[pool]
        if gpu is None:
            assert not any(k.endswith("/gpu") for k in resources["requests"]), name
        else:
            assert resources["requests"][gpu] == resources["limits"][gpu] == "1", name
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
    assert len(deployments) == 9


def test_the_router_is_told_every_pool_and_the_rollups_are_scrapable() -> None:
    docs = _docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}

    def env(name: str) -> dict[str, str]:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert cli_error(container["args"]) is None, container["args"]
        return {e["name"]: e["value"] for e in container["env"]}

    assert set(json.loads(env("sg-router")["SLUICEGATE_ROUTING__POOLS"])) == set(generate.POOLS)
    assert env("sg-telemetry")["SLUICEGATE_METRICS_HOST"] == "0.0.0.0"
    service = next(d for d in docs if d["kind"] == "Service")
    assert (
        service["spec"]["selector"]
        == (deployments["sg-telemetry"]["spec"]["template"]["metadata"]["labels"])
    )


def test_each_work_topic_has_a_pdb_and_a_keda_scaler_on_its_backlog_cost() -> None:
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
        # Backlog cost (tokens / pixels waiting), not record count: the rollups
        # export it for every pool even before its first batch.
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert f'sluicegate_backlog_cost{{model="{model}",pool="{pool}"}}' in meta["query"]
        assert float(meta["threshold"]) > 0 and meta["activationThreshold"] == "0"
        topic = f"sg.work.{model}.{pool}"
        # More consumers than partitions would sit idle.
        assert so["spec"]["maxReplicaCount"] <= partitions[topic]
        topics.add(topic)
    expected = {f"sg.work.{m}.{p}" for m in generate.MODELS for p in generate.POOLS}
    assert topics == expected
