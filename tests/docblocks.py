"""The code blocks of README.md and docs/*.md, and which of them a test must run.

A fenced block whose info string is a language we run (`sh`, `bash`,
`python`, `js`) is executed by tests/integration/test_docs.py against the
test stack, unless the line just above its fence (blank lines aside) marks it:

    <!-- doc-test: skip: why it cannot run here -->

A block in any other language, or with no info string, is data (JSON,
diagrams, sample output); but when one of its lines looks like a command a
user would type (`sluicegate ...`, `kcat`, `node`, `make`, `docker`, ...),
tests/unit/test_doc_blocks.py fails until it gets a language (and runs) or a
mark. Failures name the file and the line of the opening fence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNERS = {"sh": "sh", "bash": "sh", "python": "python", "js": "js", "javascript": "js"}
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^`\s]*)")
_MARK = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->$")
_COMMAND = re.compile(
    r"^\s*(\$\s+)?([A-Z_][A-Z0-9_]*=\S*\s+)*(\.venv/bin/)?"
    r"(sluicegate|make|kcat|node|npm|python3?|pip|docker|curl|kafka-\w+)(\s|$)"
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str  # the info string's first word, lower case ("" when none)
    text: str
    mark: str | None  # what the `doc-test:` comment above the fence says

    @property
    def where(self) -> str:
        path = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{path}:{self.line}"

    @property
    def runner(self) -> str | None:
        return RUNNERS.get(self.info)

    @property
    def skip_reason(self) -> str | None:
        if self.mark is None or not self.mark.startswith("skip:"):
            return None
        return self.mark.removeprefix("skip:").strip() or None

    @property
    def runs(self) -> bool:
        return self.runner is not None and self.mark is None

    def problem(self) -> str | None:
        """Why this block breaks the rules above, or None."""
        if self.mark is not None and self.skip_reason is None:
            return f"{self.where}: write the mark as `<!-- doc-test: skip: <why> -->`"
        if self.runner is None and self.mark is None and looks_runnable(self.text):
            return (
                f"{self.where}: this block looks like commands but is not run; give its fence "
                "a language (```sh, ```python, ```js) so tests/integration/test_docs.py runs "
                "it, or mark it `<!-- doc-test: skip: <why> -->`"
            )
        return None


def looks_runnable(text: str) -> bool:
    return any(_COMMAND.match(line) for line in text.splitlines())


def doc_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one markdown file."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, info = opening.group(1), opening.group(2).lower()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(above)
        out.append(
            Block(
                path=path,
                line=i + 1,
                info=info,
                text="\n".join(lines[i + 1 : end]) + "\n",
                mark=mark.group(1) if mark else None,
            )
        )
        i = end + 1
    return out


def all_blocks(root: Path = REPO) -> list[Block]:
    return [b for path in doc_files(root) for b in blocks(path)]
