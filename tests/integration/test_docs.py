"""Every runnable code block of README.md and docs/*.md, run against the session stack.

Which blocks run, and how a block is marked as not runnable:
tests/docblocks.py. Each block runs as a user would run it, from a fresh
directory that holds `scan.png` (an image with text), `.venv` (this
checkout's) and `node_modules` (`make doc-clients`: kafkajs,
@msgpack/msgpack), with kcat on PATH. The only rewrite: the stack's
bootstrap address replaces the docs' `127.0.0.1:9092`. The environment
names the stack the way `sluicegate up` leaves it for a shell
(`SLUICEGATE_KAFKA_PORT`, `SLUICEGATE_STATE_DIR`), with no
`SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS`. A block passes when it exits 0 (the
CLI's `--wait` exits 2 for a result that is not `ok`; the examples exit
non-zero when their result is not `ok` or missing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sluicegate.ops.samples import render_text_image
from sluicegate.ops.stack.stack import LocalStack

from ..docblocks import REPO, Block, all_blocks

pytestmark = pytest.mark.integration

RUNNABLE = [b for b in all_blocks() if b.runs]
KCAT = REPO / ".cache" / "bin" / "kcat"
NODE_MODULES = REPO / ".cache" / "node" / "node_modules"
DOCS_BOOTSTRAP = "127.0.0.1:9092"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for needed in (KCAT, NODE_MODULES):
        assert needed.exists(), f"{needed} is missing: run `make doc-clients` (make test does)"
    root = tmp_path_factory.mktemp("docs")
    (root / "scan.png").write_bytes(render_text_image("Invoice 2041 total due", glyph_px=40))
    (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (root / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def doc_env(stack: LocalStack, stack_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in stack_env.items() if k != "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS"}
    # The stack's state dir holds the stack.json that `up` wrote (clients follow it).
    assert (stack.settings.state_dir / "stack.json").is_file()
    path = [str(KCAT.parent), str(Path(sys.prefix) / "bin"), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(path)
    env["KAFKAJS_NO_PARTITIONER_WARNING"] = "1"
    return env


def _command(block: Block, script: Path) -> list[str]:
    if block.runner == "sh":
        return ["bash", "-e", "-o", "pipefail", str(script)]
    if block.runner == "python":
        return [sys.executable, str(script)]
    return ["node", str(script)]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_doc_block_runs(
    block: Block, stack: LocalStack, workdir: Path, doc_env: dict[str, str]
) -> None:
    text = block.text.replace(DOCS_BOOTSTRAP, stack.settings.bootstrap_servers)
    suffix = {"sh": ".sh", "python": ".py", "js": ".mjs"}[block.runner or ""]
    script = workdir / f"block-{block.path.stem}-{block.line}{suffix}"
    script.write_text(text)
    try:
        done = subprocess.run(
            _command(block, script), cwd=workdir, env=doc_env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.where}: the block ran past 300 s\n{exc.stdout!r}\n{exc.stderr!r}")
    assert done.returncode == 0, (
        f"{block.where} ({block.info} block) exited {done.returncode}\n--- block:\n{text}"
        f"--- stdout:\n{done.stdout[-3000:]}\n--- stderr:\n{done.stderr[-3000:]}"
    )
