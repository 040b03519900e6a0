"""The `sluicegate` command line against the stack that `up` started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sluicegate.ops.samples import cer, render_text_image
from sluicegate.ops.stack.stack import LocalStack

pytestmark = pytest.mark.integration


def sluicegate(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluicegate", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_status_reports_every_part_ready(stack: LocalStack, stack_env: dict[str, str]) -> None:
    done = sluicegate("status", env=stack_env)
    assert done.returncode == 0, done.stdout + done.stderr
    for part in ("kafka", "triton", "worker ocr", "worker text-embed", "worker doc-match"):
        assert part in done.stdout
    assert "down" not in done.stdout.replace("sluicegate down", "")


def test_submit_wait_json_prints_the_result(
    stack: LocalStack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    image = tmp_path / "order.png"
    image.write_bytes(render_text_image("Order number 77812 confirmed", glyph_px=48))
    done = sluicegate(
        "submit", "--model", "ocr", "--image", str(image), "--wait", "--json", env=stack_env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and len(result["request_id"]) == 32
    assert cer("Order number 77812 confirmed", result["outputs"]["text"]) <= 0.05
    assert result["timings"]["batch_size"] >= 1


def test_submit_by_reference_and_doc_match(
    stack: LocalStack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    image = tmp_path / "invoice.png"
    image.write_bytes(render_text_image("Invoice 2041 total due", glyph_px=32))
    done = sluicegate(
        "submit",
        "--model",
        "doc-match",
        "--image",
        str(image),
        "--text",
        "invoice total",
        "--by-reference",
        "--wait",
        "--json",
        env=stack_env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok"
    assert 0.0 < result["outputs"]["similarity"] <= 1.0


def test_submit_json_is_one_compact_line_per_request_and_follows_the_stack(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    # Only the stack's variables (SLUICEGATE_KAFKA_PORT, the state dir): no bootstrap servers.
    env = {k: v for k, v in stack_env.items() if k != "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS"}
    sent = sluicegate("submit", "--model", "text-embed", "--text", "fire and forget", "--json",
                      env=env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    [line] = sent.stdout.splitlines()
    doc = json.loads(line)
    assert doc["status"] == "sent" and doc["topic"] == "sg.requests" and " " not in line

    lines = tmp_path / "requests.jsonl"
    ids = [f"jsonl-{i}" for i in range(3)]
    lines.write_text("".join(
        json.dumps({"request_id": rid, "model": "text-embed", "texts": [f"line {rid}"]}) + "\n"
        for rid in ids
    ))  # fmt: skip
    done = sluicegate("submit", "--requests", str(lines), "--wait", "--json", env=env)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["request_id"] for r in results) == ids
    assert all(r["status"] == "ok" and len(r["outputs"]["embedding"]) == 384 for r in results)
    assert all("error" not in r for r in results), "an ok result carries no error field"


def test_submit_explains_a_missing_image(stack_env: dict[str, str]) -> None:
    done = sluicegate("submit", "--model", "ocr", "--image", "/nonexistent.png", env=stack_env)
    assert done.returncode == 1
    assert "does not exist" in done.stderr


def test_schema_dump_is_json_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluicegate", "schema", "dump", "request"],
        text=True,
        capture_output=True,
        check=True,
    )
    schema = json.loads(done.stdout)
    assert schema["title"] == "InferenceRequest"
    assert {"request_id", "model"} <= set(schema["required"])
