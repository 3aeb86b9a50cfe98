"""The layout shows the architecture: dependencies point inward, and public names are declared."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "loop": {"projections", "adapters", "scripts"},
    "projections": {"adapters", "scripts"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


class TestLayers:
    """Inner layers never import outer ones."""

    @pytest.mark.parametrize("package", sorted(FORBIDDEN))
    def test_package_imports_nothing_from_outer_layers(self, package: str) -> None:
        offenders = {
            str(path.relative_to(ROOT)): sorted(_imported_packages(path) & FORBIDDEN[package])
            for path in (ROOT / package).rglob("*.py")
        }
        assert {k: v for k, v in offenders.items() if v} == {}

    def test_the_checker_sees_a_forbidden_import(self, tmp_path: Path) -> None:
        module = tmp_path / "bad.py"
        module.write_text("from adapters.store import parse_db\nimport projections\n")
        assert _imported_packages(module) >= {"adapters", "projections"}


class TestPublicNames:
    """Every name a module lists in `__all__` exists."""

    @pytest.mark.parametrize(
        "module",
        ["loop.errors", "loop.commands", "loop.lifecycle", "loop.hazard", "loop.application",
         "loop.policy", "adapters.store", "adapters.bootstrap", "adapters.cli"],
    )  # fmt: skip
    def test_all_names_exist(self, module: str) -> None:
        mod = importlib.import_module(module)
        missing = [name for name in mod.__all__ if not hasattr(mod, name)]
        assert missing == []
