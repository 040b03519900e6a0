"""The tree's shape: every package folder is installed, and dependencies point one way."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
PARTS = {
    name.removeprefix("sluicegate."): folder for name, folder in SETUPTOOLS["package-dir"].items()
}

# What each part may import of ours (besides itself).
ALLOWED = {
    "schemas": set(),
    "runtime": {"schemas"},
    "inference": {"schemas"},
    "workers": {"schemas", "runtime", "inference"},
    "streams": {"schemas", "runtime"},
    "ops": {"schemas", "runtime", "inference", "workers", "streams"},
}


def _folder(package: str) -> Path:
    head, rest = package, []
    while head not in SETUPTOOLS["package-dir"]:
        head, _, last = head.rpartition(".")
        rest.insert(0, last)
    return REPO / SETUPTOOLS["package-dir"][head] / Path(*rest)


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    listed = {_folder(p) for p in SETUPTOOLS["packages"]}
    on_disk = {
        init.parent
        for part in ALLOWED
        for init in (REPO / PARTS[part]).rglob("__init__.py")
        if "tools" not in init.relative_to(REPO).parts
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert all((folder / "__init__.py").is_file() for folder in listed)
    assert not any(p.is_symlink() for p in (REPO / "sluicegate").iterdir())


def _imports(file: Path) -> set[str]:
    parts: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith("sluicegate."):
                parts.add(name.split(".")[1])
    return parts


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_dependencies_point_one_way(part: str) -> None:
    wrong = {
        f"{file.relative_to(REPO)} imports sluicegate.{other}"
        for file in (REPO / PARTS[part]).rglob("*.py")
        if "tools" not in file.relative_to(REPO).parts
        for other in _imports(file) - ALLOWED[part] - {part}
    }
    assert not wrong, sorted(wrong)
