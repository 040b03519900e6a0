"""Every shipped compose stack routes to the pools its workers read (issue 13).

The GPU overlays keep a CPU pool for small requests (in-process ONNX Runtime:
the overlay's Triton is the GPU one) and, with the streams overlay, the
router is told every pool those workers read.
"""

from __future__ import annotations

import json

import pytest

from .test_compose import COMBINATIONS, load


@pytest.mark.parametrize(("combo", "gpu_pool"), [("all-nvidia", "a100"), ("all-rocm", "mi200")])
def test_gpu_stacks_route_to_their_gpu_pool_and_keep_cpu(combo: str, gpu_pool: str) -> None:
    services = load(COMBINATIONS[combo])["services"]
    read: set[str] = set()
    for name, svc in services.items():
        command = svc.get("command") or []
        if command[:1] == ["worker"]:
            pool = command[command.index("--pool") + 1]
            read.add(pool)
            if pool == "cpu":
                assert svc["environment"]["SLUICEGATE_BACKEND"] == "onnxruntime", name
    assert read == {gpu_pool, "cpu"}
    for m in ("text-embed", "ocr", "doc-match"):
        assert services[f"worker-{m}-cpu"]["command"][-1] == "cpu"
    routed = json.loads(services["router"]["environment"]["SLUICEGATE_ROUTING__POOLS"])
    assert read <= set(routed)


def test_the_cpu_only_stack_routes_to_cpu_alone_by_liveness() -> None:
    services = load(COMBINATIONS["base+streams"])["services"]
    pools = {
        svc["command"][svc["command"].index("--pool") + 1]
        for svc in services.values()
        if (svc.get("command") or [])[:1] == ["worker"]
    }
    assert pools == {"cpu"}
    # The router is told every pool; its pool watch skips those with no consumer.
    assert "cpu" in json.loads(services["router"]["environment"]["SLUICEGATE_ROUTING__POOLS"])
