"""Every command-looking block in README.md and docs/*.md either runs in the
doc test (tests/integration/test_docs.py) or says why not."""

from __future__ import annotations

from pathlib import Path

from ..docblocks import all_blocks, blocks


def test_every_block_that_looks_runnable_is_run_or_marked() -> None:
    problems = [p for b in all_blocks() if (p := b.problem()) is not None]
    assert not problems, "\n".join(problems)


def test_the_docs_have_blocks_that_run() -> None:
    runs = {b.runner for b in all_blocks() if b.runs}
    assert runs >= {"sh", "python", "js"}, runs


def test_the_rules_catch_an_unmarked_command_and_a_bad_mark(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n```\nsluicegate submit --model ocr\n```\n\n"
        "<!-- doc-test: skip -->\n```sh\nmake demo\n```\n\n"
        "<!-- doc-test: skip: starts a stack -->\n\n```sh\nmake up\n```\n\n"
        '```json\n{"a": 1}\n```\n\n```python\nprint(1)\n```\n'
    )
    found = blocks(doc)
    assert [(b.line, b.info, b.runs) for b in found] == [
        (3, "", False), (8, "sh", False), (14, "sh", False), (18, "json", False),
        (22, "python", True),
    ]  # fmt: skip
    problems = [b.problem() for b in found]
    assert problems[0] is not None and "doc.md:3" in problems[0] and "```sh" in problems[0]
    assert problems[1] is not None and "doc.md:8" in problems[1] and "<why>" in problems[1]
    assert problems[2:] == [None, None, None]
    assert found[2].skip_reason == "starts a stack"
