"""mypy --strict over the package as it installs, without links in the tree.

The parts live in top-level folders mapped by setuptools' `package-dir`
(pyproject.toml); mypy's command line can only derive module names from
folders, so this hands it each file with its installed module name. Options
come from `[tool.mypy]` as usual. `make lint` runs it.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[2]


def sources() -> Iterator[BuildSource]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setuptools["packages"]:
        # The nearest mapped ancestor gives the folder (as setuptools resolves it).
        head, rest = package, []
        while head not in setuptools["package-dir"]:
            head, _, last = head.rpartition(".")
            rest.insert(0, last)
        folder = ROOT / setuptools["package-dir"][head] / Path(*rest)
        for file in sorted(folder.glob("*.py")):
            module = package if file.stem == "__init__" else f"{package}.{file.stem}"
            yield BuildSource(str(file.relative_to(ROOT)), module)


def main() -> int:
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), "-c", "pass"])
    files = list(sources())
    try:
        result = build.build(files, options)
    except CompileError as exc:
        print("\n".join(exc.messages))
        return 2
    for line in result.errors:
        print(line)
    if result.errors:
        print(f"mypy: {len(result.errors)} error line(s)")
        return 1
    print(f"mypy --strict: no issues in {len(files)} modules of the package")
    return 0


if __name__ == "__main__":
    sys.exit(main())
