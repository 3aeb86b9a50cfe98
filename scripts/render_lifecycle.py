"""Re-render the transition table in docs/lifecycle.md from loop/lifecycle.py.

Usage: python scripts/render_lifecycle.py   (rewrites the part between the TABLE markers)
"""

from __future__ import annotations

import re
from pathlib import Path

from loop.lifecycle import render_markdown_table, render_mermaid

DOC = Path(__file__).resolve().parents[1] / "docs" / "lifecycle.md"


def render(text: str) -> str:
    """The page with its table and diagram brought up to date."""
    text = re.sub(
        r"<!-- BEGIN TABLE -->\n.*?<!-- END TABLE -->",
        lambda _: f"<!-- BEGIN TABLE -->\n{render_markdown_table()}<!-- END TABLE -->",
        text,
        flags=re.S,
    )
    return re.sub(
        r"```mermaid\n.*?```", lambda _: f"```mermaid\n{render_mermaid()}```", text, flags=re.S
    )


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
