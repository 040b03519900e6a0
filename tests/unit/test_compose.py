"""The compose stacks, loaded by the Compose Specification's reference Go loader.

`.cache/bin/composecheck` (ops/tools/composecheck, `make tools`) validates each
combination against the compose schema, merges the overlays, interpolates
`.env.example` and checks references (depends_on, volumes); this test then
checks what the stack promises: every command a service runs in the image the
stack builds exists in that image's `sluicegate` CLI (parsed by the real typer
app, options included), healthchecks, GPU reservations, scrape targets.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ..tooling import cli_error as _cli_error
from ..tooling import go_tool

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"

# Every combination a user is told to run. Its services' commands are checked.
COMBINATIONS: dict[str, tuple[str, ...]] = {
    "base": ("base.yaml",),
    "base+nvidia": ("base.yaml", "nvidia.yaml"),
    "base+rocm": ("base.yaml", "rocm.yaml"),
    "base+observability": ("base.yaml", "observability.yaml"),
    "base+streams": ("base.yaml", "streams.yaml"),
    "all-nvidia": ("base.yaml", "nvidia.yaml", "observability.yaml", "streams.yaml"),
    "all-rocm": ("base.yaml", "rocm.yaml", "observability.yaml", "streams.yaml"),
}


def _checker() -> Path:
    return go_tool("composecheck")


@cache
def load(files: tuple[str, ...]) -> dict[str, Any]:
    args = [str(_checker()), "-project-directory", str(COMPOSE)]
    args += ["-env-file", str(COMPOSE / ".env.example")]
    for f in files:
        args += ["-f", str(COMPOSE / f)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"compose loader refused {files}:\n{done.stderr}"
    project: dict[str, Any] = json.loads(done.stdout)
    return project


def _dockerfile_entrypoint(dockerfile: Path) -> list[str]:
    lines = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith("ENTRYPOINT")]
    assert lines, f"{dockerfile} has no ENTRYPOINT"
    entry: list[str] = json.loads(lines[-1].split(None, 1)[1])
    return entry


def _built_services(project: dict[str, Any]) -> dict[str, list[str]]:
    """Service -> full argv, for services running the image this stack builds."""
    out = {}
    for name, svc in project["services"].items():
        build = svc.get("build")
        if not build:
            continue
        dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
        if dockerfile.resolve() != REPO / "Dockerfile":
            continue  # another image (Triton's); checked by its own test
        entry = svc.get("entrypoint") or _dockerfile_entrypoint(REPO / "Dockerfile")
        out[name] = [*entry, *(svc.get("command") or [])]
    return out


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_every_command_exists_in_the_built_image(combo: str) -> None:
    project = load(COMBINATIONS[combo])
    built = _built_services(project)
    assert built, f"{combo}: no service runs the sluicegate image"
    errors = {}
    for service, argv in built.items():
        assert argv[0] == "sluicegate", f"{service} runs {argv[0]!r}, not the sluicegate CLI"
        if (why := _cli_error(argv[1:])) is not None:
            errors[service] = f"{shlex.join(argv)}: {why}"
    assert not errors, f"{combo}: commands the image does not have:\n" + "\n".join(
        f"  {s}: {e}" for s, e in errors.items()
    )
    # Files a command names must be baked into the image.
    dockerfile = (REPO / "Dockerfile").read_text()
    for argv in built.values():
        for arg in argv:
            if arg.startswith("/app/"):
                assert re.search(rf"^COPY \S+ {re.escape(arg)}$", dockerfile, re.M), arg


def test_base_stack_shape() -> None:
    services = load(COMBINATIONS["base"])["services"]
    assert {"kafka", "topics-init", "triton"} <= set(services)
    assert {f"worker-{m}" for m in ("text-embed", "ocr", "doc-match")} <= set(services)
    kafka = services["kafka"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert services["topics-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for m in ("text-embed", "ocr", "doc-match"):
        w = services[f"worker-{m}"]
        assert w["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"
        assert w["depends_on"]["triton"]["condition"] == "service_healthy"
        # Longer than the worker's own drain (WorkerSettings.shutdown_grace_s = 30 s).
        assert _seconds(w["stop_grace_period"]) > 30
    for svc in services.values():
        assert not svc["image"].endswith(":latest") and ":" in svc["image"], svc["image"]
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", "published ports stay on loopback"


def _seconds(value: str | int) -> float:
    if isinstance(value, int):
        return value / 1e9  # compose-go serialises durations in nanoseconds
    m = re.fullmatch(r"(\d+)s", value)
    assert m, value
    return float(m.group(1))


def test_nvidia_overlay_reserves_a_gpu_and_serves_the_a100_repository() -> None:
    services = load(COMBINATIONS["base+nvidia"])["services"]
    triton = services["triton"]
    dockerfile = Path(triton["build"]["context"]) / triton["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in text
    assert "onnxruntime-gpu" in text and "USER triton-server" in text
    assert triton["entrypoint"] == ["tritonserver"] and '["tritonserver"]' in text
    assert "--model-config-name=a100" in triton["command"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "--model-repository=/models" in triton["command"]
    assert services["models-build"]["command"][:4] == ["models", "build", "--target", "a100"]
    for m in ("text-embed", "ocr", "doc-match"):
        assert services[f"worker-{m}"]["command"][-2:] == ["--pool", "a100"]
        assert "SLUICEGATE_BATCH__BUDGET" in services[f"worker-{m}"]["environment"]


def test_rocm_overlay_passes_the_amd_devices() -> None:
    services = load(COMBINATIONS["base+rocm"])["services"]
    triton = services["triton"]
    assert {d["source"] for d in triton["devices"]} == {"/dev/kfd", "/dev/dri"}
    assert set(triton["group_add"]) == {"video", "render"}
    assert triton["build"]["args"]["ORT_PACKAGE"] == "onnxruntime-rocm"
    assert services["models-build"]["command"][:4] == ["models", "build", "--target", "mi200"]


def test_observability_overlay_wires_traces_metrics_and_grafana() -> None:
    services = load(COMBINATIONS["base+observability"])["services"]
    assert {"otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert services["jaeger"]["image"].split(":")[1].startswith("2.")
    for m in ("text-embed", "ocr", "doc-match"):
        env = services[f"worker-{m}"]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
        assert env["SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:19092", "overlay kept base env"
    import yaml

    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert "triton:8002" in targets
    assert {f"worker-{m}:9464" for m in ("text-embed", "ocr", "doc-match")} <= targets
    mounts = {v["target"]: Path(v["source"]) for v in services["grafana"]["volumes"]}
    provisioning = mounts["/etc/grafana/provisioning"]
    assert (provisioning / "datasources" / "sluicegate.yaml").is_file()
    provider = yaml.safe_load((provisioning / "dashboards" / "sluicegate.yaml").read_text())
    # The provider reads the folder the overlay mounts the repository's dashboards at.
    path = provider["providers"][0]["options"]["path"]
    assert mounts[path].is_dir() and any(mounts[path].glob("*.json"))


def test_env_example_covers_every_interpolated_variable() -> None:
    declared = {
        ln.split("=", 1)[0]
        for ln in (COMPOSE / ".env.example").read_text().splitlines()
        if ln and not ln.startswith("#")
    }
    used = set()
    for f in COMPOSE.glob("*.yaml"):
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)", f.read_text()))
    assert used <= declared, f"not in .env.example: {sorted(used - declared)}"
    # PUBLISH_*_PORT: host ports, read by compose only (never by a process inside).
    assert all(
        v.startswith(("SLUICEGATE_", "OTEL_"))
        or v.endswith(("_VERSION", "_ID", "_PASSWORD"))
        or re.fullmatch(r"PUBLISH_\w+_PORT", v)
        for v in declared
    )


def test_a_broken_file_is_refused_by_the_loader(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  x:\n    image: a:1\n    depends_on: [missing]\n    bogus: 1\n")
    done = subprocess.run(
        [str(_checker()), "-project-directory", str(tmp_path), "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "bogus" in done.stderr


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0:", "0")), users
    assert _dockerfile_entrypoint(REPO / "Dockerfile") == ["sluicegate"]
    # The context is the repository root: the multi-GB caches must stay out of it.
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".venv", ".cache", ".state"} <= set(ignored)


def test_the_image_copies_every_package_folder() -> None:
    """`pip install .` in the Dockerfile needs every folder pyproject's package-dir maps
    (the first real `docker build` failed on the missing runtime/ and inference/)."""
    import tomllib

    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    dockerfile = (REPO / "Dockerfile").read_text()
    missing = [d for d in dirs.values() if f"COPY {d} ./{d}\n" not in dockerfile]
    assert not missing, f"Dockerfile does not COPY {missing}"


def test_published_ports_move_only_the_host_side(tmp_path: Path) -> None:
    """compose/.env is every service's env_file too: a SLUICEGATE_* port there would
    move the process inside its container (Triton went unhealthy on :8000)."""
    example = (COMPOSE / ".env.example").read_text()
    assert not re.search(r"^SLUICEGATE_\w*_PORT=", example, re.M)
    moved = re.sub(
        r"^(PUBLISH_\w+_PORT)=(\d+)$", lambda m: f"{m[1]}={int(m[2]) + 1}", example, flags=re.M
    )
    env = tmp_path / ".env"
    env.write_text(moved)
    args = [str(_checker()), "-project-directory", str(COMPOSE), "-env-file", str(env)]
    for f in COMBINATIONS["base+observability"]:
        args += ["-f", str(COMPOSE / f)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    ports = [p for svc in services.values() for p in svc.get("ports", [])]
    assert len(ports) >= 9
    for port in ports:
        assert int(port["published"]) == int(port["target"]) + 1, port
    triton = services["triton"]
    assert triton["environment"]["SLUICEGATE_TRITON_HTTP_PORT"] == "8000"
    kafka = services["kafka"]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].endswith("localhost:9093")
    assert any(v["target"] == "/var/lib/kafka/data" for v in kafka["volumes"])


@pytest.mark.parametrize("path", ["topics.yaml", "ops/k8s/topics.yaml"])
def test_topics_yaml_holds_every_topic_the_processes_read(path: str) -> None:
    """topics-init applies topics.yaml and nothing else creates topics in compose (nor
    in Kubernetes): the router died on a missing sg.telemetry.rollup in the first
    real run."""
    import yaml

    from sluicegate.schemas.settings import TopicSettings
    from sluicegate.schemas.topics import POOLS
    from sluicegate.streams.topology import compacted_topics, default_topics, streams_topics

    spec = yaml.safe_load((REPO / path).read_text())
    declared = {t["name"]: t for t in spec["topics"]}
    topics = TopicSettings()
    needed = default_topics(topics, POOLS) + streams_topics(topics)
    assert set(needed) <= set(declared), sorted(set(needed) - set(declared))
    for name in compacted_topics(topics):
        assert declared[name].get("cleanup_policy") == "compact", name


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_the_project_image_is_built_by_topics_init_alone(combo: str) -> None:
    """Two services with `build:` for one tag build it twice, in parallel (a defect the
    first real run found; the GPU overlays' CPU workers brought it back once)."""
    services = load(COMBINATIONS[combo])["services"]
    builders = {
        name
        for name, svc in services.items()
        if "build" in svc and "sluicegate:local" in str(svc.get("image", "sluicegate:local"))
    }
    assert builders <= {"topics-init"}, sorted(builders)
