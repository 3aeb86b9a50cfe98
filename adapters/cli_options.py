"""Options every `hazardloop` command group shares."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["DbOption"]

#: Where the store is: every command that opens one takes it.
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Store: a SQLite file path or sqlite:/// URL, or a postgresql:// URL "
        "(default $HAZARDLOOP_DB).",
    ),
]
