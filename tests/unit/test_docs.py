"""The docs are part of the product: they must say what the code does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from loop.commands import COMMAND_CLASSES
from loop.errors import all_error_classes
from loop.lifecycle import Status

ROOT = Path(__file__).resolve().parents[2]


def _render_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "render", ROOT / "scripts" / "render_lifecycle.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestLifecyclePage:
    """docs/lifecycle.md is rendered from the one transition table."""

    def test_the_page_shows_the_table_and_diagram_of_the_code(self) -> None:
        text = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
        assert _render_module().render(text) == text, "run: python scripts/render_lifecycle.py"


class TestContractPage:
    """docs/contract.md names every command, field, status and error code."""

    def test_every_command_and_field_is_documented(self) -> None:
        text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
        for name, cls in COMMAND_CLASSES.items():
            assert f"`{name}`" in text, name
            for field in cls.model_fields:
                assert f"`{field}`" in text, f"{name}.{field}"

    def test_every_status_and_error_code_is_documented(self) -> None:
        text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
        for status in Status:
            assert f"`{status.value}`" in text, status
        for cls in all_error_classes():
            assert f"`{cls.code}`" in text, cls.code


class TestIndicatorsPage:
    """docs/indicators.md defines every indicator the accountability report computes."""

    def test_every_indicator_is_documented_with_its_names_and_formula(self) -> None:
        from projections.reports import INDICATORS

        text = (ROOT / "docs" / "indicators.md").read_text(encoding="utf-8")
        for key, zh, en, formula in INDICATORS:
            row = next((line for line in text.splitlines() if f"`{key}`" in line), None)
            assert row is not None, key
            assert zh in row, key
            assert en in row, key
            assert f"`{formula}`" in row, key
