"""Writes ops/k8s/base.yaml (namespace, variants volume, the topics Job),
ops/k8s/streams.yaml (the router and the telemetry rollups) and
ops/k8s/pool-<pool>.yaml (a100, mi200, cpu): per model, a Deployment, a
PodDisruptionBudget and a KEDA ScaledObject. `sluicegate generate k8s`
rewrites them; tests/unit/test_k8s.py fails when they are stale, so edit
here, not there.

One pod = one GPU (or, for cpu, a few cores): a Triton container that loads
only this model (the pool's repository, built by an init container) and the
worker that reads `sg.work.<model>.<pool>` and calls Triton on localhost.
KEDA scales each Deployment on what its backlog costs: the rollups'
`sluicegate_backlog_cost{model,pool}` (tokens or pixels waiting; exported
for every pool even before it ran a batch) through a `prometheus` trigger,
1 replica per `COST_THRESHOLD` waiting, at most one per partition; see
docs/scaling.md. The router is told every pool and routes only to those
whose work topic has a live consumer, which is why pools keep one replica.

Several workers per GPU: one Python worker process cannot keep a fast card
busy (docs/scaling.md, "Workers per GPU": `sluicegate bench` measures it
against a simulated H100/A100), so a GPU pod runs `workers_per_gpu` worker
containers (`worker`, `worker-2`, ...) in one consumer group, all calling the
pod's one Triton on localhost. Only Triton holds the `nvidia.com/gpu`; the
workers are its clients and need no share of the card, so neither MPS nor
the device plugin's time-slicing is involved: Triton runs their batches on
its model instances, one after another per instance. (Time-slicing or MPS,
which advertise one card as several `nvidia.com/gpu`, would instead put
several *Triton pods* on one card: time-slicing without memory isolation,
MPS with per-client limits; not needed here and not used.) Each worker
container is one consumer, so the GPU work topics get
`workers_per_gpu x max_replicas` partitions (ops/k8s/topics.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "sluicegate"
MODELS = ("text-embed", "ocr", "doc-match")
IMAGE = "sluicegate:0.1.0"
# The worker drains in-flight batches for SLUICEGATE_SHUTDOWN_GRACE_S after
# SIGTERM; Kubernetes must wait longer before its SIGKILL (preStop included).
SHUTDOWN_GRACE_S = 30
PRESTOP_S = 5
TERMINATION_GRACE_S = SHUTDOWN_GRACE_S + PRESTOP_S + 25
POOLS: dict[str, dict[str, Any]] = {
    "a100": {
        "triton_image": "sluicegate-triton:a100",  # compose/triton-nvidia.Dockerfile
        "gpu": "nvidia.com/gpu",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "triton_args": ["--model-config-name=a100"],
        "max_replicas": 12,  # pods; x workers_per_gpu = partitions of the work topic
        # Worker processes feeding the pod's GPU. The simulated-H100 bench asks for far
        # more for short texts (docs/scaling.md); the node's CPUs per GPU bound it:
        # 4 x 2 CPUs requested = 8 of an 8-GPU node's ~12-16 per GPU.
        "workers_per_gpu": 4,
    },
    "mi200": {
        "triton_image": "sluicegate:rocm",  # Dockerfile with ORT_PACKAGE=onnxruntime-rocm
        "gpu": "amd.com/gpu",
        "node_selector": {"amd.com/gpu.product-name": "AMD_Instinct_MI250X"},
        "triton_args": ["--model-config-name=mi200"],
        "max_replicas": 12,
        "workers_per_gpu": 4,
    },
    "cpu": {
        "triton_image": IMAGE,  # pytriton's server, Python backend, ONNX Runtime on CPU
        "gpu": None,
        "node_selector": {},
        "triton_args": [],
        "max_replicas": 12,
        "workers_per_gpu": 1,  # a CPU pod's Triton is as slow as its worker
    },
}
# Cost one replica should hold before KEDA adds another: 2,000 requests of
# ~64 tokens for text-embed; 64 page-sized (1 MP) images for OCR / doc-match.
COST_THRESHOLD = {"text-embed": "128000", "ocr": "64000000", "doc-match": "64000000"}
# Where KEDA reads the rollups' metrics (a Prometheus scraping sg-telemetry).
PROMETHEUS = "http://prometheus.monitoring.svc:9090"
# The worker's ready and heartbeat files (`--ready-file`, `--heartbeat-file`).
PROBE_DIR = "/run/sluicegate"
# The heartbeat is touched every 5 s (ops/serve.py); older than this: not ready.
HEARTBEAT_STALE_S = 30


def _labels(model: str, pool: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "sluicegate-worker",
        "sluicegate/model": model,
        "sluicegate/pool": pool,
    }


def _fresh(max_age_s: int) -> str:
    """Shell test: the heartbeat file was touched less than `max_age_s` seconds ago."""
    return f"[ $(( $(date +%s) - $(stat -c %Y {PROBE_DIR}/alive) )) -lt {max_age_s} ]"


def _exec_probe(test: str, *, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["sh", "-c", test]},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def _deployment(model: str, pool: str, p: dict[str, Any]) -> dict[str, Any]:
    name = f"sg-{model}-{pool}"
    env = [
        {"name": "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS", "value": "kafka-bootstrap:9092"},
        {"name": "SLUICEGATE_TRITON__URL", "value": "127.0.0.1:8001"},
        {"name": "SLUICEGATE_SHUTDOWN_GRACE_S", "value": str(SHUTDOWN_GRACE_S)},
        {"name": "OTEL_SERVICE_NAME", "value": f"sluicegate-worker-{model}"},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4317"},
    ]
    triton_cmd = ["sluicegate", "triton", "--repository", "/models", *p["triton_args"]]
    build = ["models", "build", "--target", pool, "--dest", "/models"]
    build += ["--variants", "/variants", "--verify"] if p["gpu"] else ["--verify"]
    requests: dict[str, str] = {"cpu": "4", "memory": "16Gi"}
    limits: dict[str, str] = {"memory": "32Gi"}
    if p["gpu"]:
        requests[p["gpu"]] = limits[p["gpu"]] = "1"
    else:
        requests, limits = {"cpu": "4", "memory": "4Gi"}, {"memory": "8Gi"}
    triton_env = [{"name": "SLUICEGATE_TRITON_HOST", "value": "0.0.0.0"}]
    if pool == "a100":
        triton_cmd = [
            "tritonserver",
            "--model-repository=/models",
            "--model-control-mode=explicit",
            f"--load-model={model}",
            "--exit-on-error=true",
            *p["triton_args"],
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": _labels(model, pool)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _labels(model, pool)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": _labels(model, pool)},
                "spec": {
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
                    "nodeSelector": p["node_selector"],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                    "initContainers": [
                        {
                            "name": "models-build",
                            "image": IMAGE,
                            "args": build,
                            "volumeMounts": [
                                {"name": "models", "mountPath": "/models"},
                                {"name": "variants", "mountPath": "/variants", "readOnly": True},
                            ],
                        }
                    ],
                    "containers": [
                        {
                            "name": "triton",
                            "image": p["triton_image"],
                            "command": triton_cmd,
                            "env": triton_env,
                            "ports": [
                                {"name": "grpc", "containerPort": 8001},
                                {"name": "metrics", "containerPort": 8002},
                            ],
                            "resources": {"requests": requests, "limits": limits},
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": 8000},
                                "periodSeconds": 5,
                            },
                            # Triton stops after the worker: it answers the drain's last batches.
                            "lifecycle": {
                                "preStop": {
                                    "exec": {
                                        "command": ["sleep", str(SHUTDOWN_GRACE_S + PRESTOP_S)]
                                    }
                                }
                            },
                            "volumeMounts": [
                                {"name": "models", "mountPath": "/models", "readOnly": True},
                                {"name": "dshm", "mountPath": "/dev/shm"},
                            ],
                        },
                        *(
                            _worker_container(model, pool, i, env)
                            for i in range(p["workers_per_gpu"])
                        ),
                    ],
                    "volumes": [
                        {"name": "models", "emptyDir": {}},
                        {
                            "name": "variants",
                            "persistentVolumeClaim": {
                                "claimName": "sluicegate-model-variants",
                                "readOnly": True,
                            },
                        },
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
                        *(
                            {
                                "name": _probes(i),
                                "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
                            }
                            for i in range(p["workers_per_gpu"])
                        ),
                    ],
                },
            },
        },
    }


def _probes(i: int) -> str:
    """The probe-file volume of worker container `i` (each has its own ready/alive files)."""
    return "probes" if i == 0 else f"probes-{i + 1}"


def _worker_container(model: str, pool: str, i: int, env: list[dict[str, str]]) -> dict[str, Any]:
    """Worker `i` of the pod: `worker`, `worker-2`, ...; one consumer of the pool's group.

    The pod's containers share one network namespace, so each serves its
    Prometheus metrics on its own port (9464, 9465, ...).
    """
    port = 9464 + i
    return {
        "name": "worker" if i == 0 else f"worker-{i + 1}",
        "image": IMAGE,
        "args": [
            *("worker", "--model", model, "--pool", pool),
            *("--ready-file", f"{PROBE_DIR}/ready"),
            *("--heartbeat-file", f"{PROBE_DIR}/alive"),
        ],
        "env": [*env, {"name": "OTEL_EXPORTER_PROMETHEUS_PORT", "value": str(port)}],
        # Ready: joined its group (after Triton answered; the triton
        # container's own probe gates the pod too) and the loop runs.
        "readinessProbe": _exec_probe(
            f"test -f {PROBE_DIR}/ready && {_fresh(HEARTBEAT_STALE_S)}",
            period_s=5,
            failures=3,
        ),
        # Alive: the event loop touched its heartbeat recently (every
        # 5 s, also while it waits for Triton); a stuck loop is restarted.
        "livenessProbe": _exec_probe(_fresh(HEARTBEAT_STALE_S * 2), period_s=10, failures=3),
        "volumeMounts": [{"name": _probes(i), "mountPath": PROBE_DIR}],
        "ports": [{"name": "metrics" if i == 0 else f"metrics-{i + 1}", "containerPort": port}],
        "resources": {
            "requests": {"cpu": "2", "memory": "2Gi"},
            "limits": {"memory": "4Gi"},
        },
        # Let endpoints and the group settle before the drain starts.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
    }


def _pdb(model: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"sg-{model}-{pool}", "namespace": NAMESPACE},
        # One pod at a time: each drain hands its partitions to the others.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(model, pool)}},
    }


def _scaled_object(model: str, pool: str, p: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"sg-{model}-{pool}", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"name": f"sg-{model}-{pool}"},
            "minReplicaCount": 1,
            "maxReplicaCount": p["max_replicas"],
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                        },
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": PROMETHEUS,
                        # max(): one series per rollups replica; `or vector(0)` while
                        # Prometheus has not scraped the rollups yet.
                        "query": (
                            f'max(sluicegate_backlog_cost{{model="{model}",pool="{pool}"}})'
                            " or vector(0)"
                        ),
                        "threshold": COST_THRESHOLD[model],
                        "activationThreshold": "0",
                    },
                }
            ],
        },
    }


def _base() -> list[dict[str, Any]]:
    topics = (Path(__file__).parent / "topics.yaml").read_text()
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "sluicegate-model-variants", "namespace": NAMESPACE},
            # Filled once with `sluicegate models variants` output (docs/scaling.md).
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sluicegate-topics", "namespace": NAMESPACE},
            "data": {"topics.yaml": topics},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "sluicegate-topics-apply", "namespace": NAMESPACE},
            "spec": {
                "backoffLimit": 10,
                "template": {
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                        "containers": [
                            {
                                "name": "topics",
                                "image": IMAGE,
                                "args": ["topics", "apply", "/etc/sluicegate/topics.yaml"],
                                "env": [
                                    {
                                        "name": "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS",
                                        "value": "kafka-bootstrap.kafka:9092",
                                    }
                                ],
                                "volumeMounts": [
                                    {"name": "topics", "mountPath": "/etc/sluicegate"}
                                ],
                            }
                        ],
                        "volumes": [{"name": "topics", "configMap": {"name": "sluicegate-topics"}}],
                    }
                },
            },
        },
    ]


def _streams() -> list[dict[str, Any]]:
    """The router (told every pool) and the telemetry rollups (metrics for KEDA)."""
    kafka_env = {"name": "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS", "value": "kafka-bootstrap:9092"}
    pools = json.dumps(list(POOLS))
    docs: list[dict[str, Any]] = []
    for name, env in (
        ("router", [kafka_env, {"name": "SLUICEGATE_ROUTING__POOLS", "value": pools}]),
        ("telemetry", [kafka_env, {"name": "SLUICEGATE_METRICS_HOST", "value": "0.0.0.0"}]),
    ):
        labels = {"app.kubernetes.io/name": f"sluicegate-{name}"}
        container: dict[str, Any] = {
            "name": name,
            "image": IMAGE,
            "args": [
                name,
                *("--ready-file", f"{PROBE_DIR}/ready"),
                *("--heartbeat-file", f"{PROBE_DIR}/alive"),
            ],
            "env": env,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            # The same probes as the workers': ready once it joined its group (the
            # router after restoring sg.router.state), alive while its loop beats.
            "readinessProbe": _exec_probe(
                f"test -f {PROBE_DIR}/ready && {_fresh(HEARTBEAT_STALE_S)}", period_s=5, failures=3
            ),
            "livenessProbe": _exec_probe(_fresh(HEARTBEAT_STALE_S * 2), period_s=10, failures=3),
            "volumeMounts": [{"name": "probes", "mountPath": PROBE_DIR}],
        }
        if name == "telemetry":
            container["ports"] = [{"name": "metrics", "containerPort": 9464}]
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"sg-{name}", "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "terminationGracePeriodSeconds": 45,
                            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                            "containers": [container],
                            "volumes": [{"name": "probes", "emptyDir": {"medium": "Memory"}}],
                        },
                    },
                },
            }
        )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "sg-telemetry",
                "namespace": NAMESPACE,
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9464"},
            },
            "spec": {
                "selector": {"app.kubernetes.io/name": "sluicegate-telemetry"},
                "ports": [{"name": "metrics", "port": 9464, "targetPort": "metrics"}],
            },
        }
    )
    return docs


def render(pool: str) -> str:
    p = POOLS[pool]
    docs = []
    for model in MODELS:
        docs += [_deployment(model, pool, p), _pdb(model, pool), _scaled_object(model, pool, p)]
    head = f"# Generated by ops/k8s/generate.py ({pool} pool); do not edit.\n"
    return head + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


def generated() -> dict[Path, str]:
    """Every manifest this module writes (path -> text)."""
    here = Path(__file__).parent
    files = {here / f"pool-{pool}.yaml": render(pool) for pool in POOLS}
    head = "# Generated by ops/k8s/generate.py; do not edit.\n"
    files[here / "base.yaml"] = head + "---\n".join(
        yaml.safe_dump(d, sort_keys=False) for d in _base()
    )
    files[here / "streams.yaml"] = head + "---\n".join(
        yaml.safe_dump(d, sort_keys=False) for d in _streams()
    )
    return files


def write() -> list[Path]:
    """Write the manifests (`sluicegate generate k8s`); return their paths."""
    files = generated()
    for path, text in files.items():
        path.write_text(text)
    return list(files)
