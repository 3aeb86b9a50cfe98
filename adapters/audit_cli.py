"""`hazardloop audit …`: the chain head, and verification of the whole log against it.

Exit status: 0 verified clean, 1 a break was found (named on stderr), 2 usage or store error.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from adapters.cli_options import DbOption
from adapters.store import parse_db
from loop.application import HazardLoop
from loop.errors import HazardLoopError, HazardNotFound

__all__ = ["audit_app", "dossier_cmd", "tipster_app"]

audit_app = typer.Typer(
    help="Tamper evidence: the chain head, and verifying every stored event against it.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _fail(exc: HazardLoopError) -> typer.Exit:
    sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
    return typer.Exit(2)


@audit_app.command("head")
def head_cmd(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print the head the store records, COUNT:HASH (not verified: use `audit verify`)."""
    from adapters.audit import head

    try:
        found = head(parse_db(db))
    except HazardLoopError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(orjson.dumps({"head": str(found), "count": found.count}).decode() + "\n")
    else:
        sys.stdout.write(f"{found}\n")


@audit_app.command("verify")
def verify_cmd(
    db: DbOption = None,
    against: Annotated[
        str | None,
        typer.Option("--against", help="A published head COUNT:HASH the log must still extend."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute both hash chains from the stored bytes; name the first break and its kind."""
    from adapters.audit import parse_head, verify

    started = time.perf_counter()
    try:
        pinned = parse_head(against) if against else None
        result = verify(parse_db(db), pinned)
    except HazardLoopError as exc:
        raise _fail(exc) from None
    seconds = time.perf_counter() - started
    if as_json:
        data = result.to_dict() | {"seconds": round(seconds, 3)}
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    elif result.ok:
        sys.stdout.write(f"{result.head}\n")
    for b in result.breaks:
        subject = f" (case {b.subject})" if b.subject else ""
        sys.stderr.write(f"BROKEN: {b.kind} at position {b.position}{subject}: {b.message}\n")
    if result.ok:
        against_text = f", extends {result.against}" if result.against else ""
        sys.stderr.write(
            f"verified {result.events} events in {seconds:.2f} s{against_text}: intact\n"
        )
        return
    raise typer.Exit(1)


def dossier_cmd(
    hazard_id: Annotated[str, typer.Argument(help="The hazard's id.")],
    db: DbOption = None,
    fmt: Annotated[str, typer.Option("--format", help="html | json")] = "html",
    known_at: Annotated[
        str | None,
        typer.Option(
            "--known-at",
            help="As the engine knew it then: a date, RFC 3339, or a printed chain head "
            "COUNT:HASH (the first COUNT events).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """A case's dossier: timeline, each step's holder and deadline, extensions, evidence, proof."""
    from adapters.bootstrap import Settings, build_engine
    from adapters.dossier import build_dossier, render_dossier
    from adapters.nightly import write_atomically

    try:
        engine = build_engine(Settings(db=db) if db else Settings(), existing=True)
        moment = _known_at(known_at, engine) if known_at is not None else None
        data = render_dossier(build_dossier(engine, hazard_id, known_at=moment), fmt)
    except HazardNotFound as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
        raise typer.Exit(1) from None
    except HazardLoopError as exc:
        raise _fail(exc) from None
    if out is None:
        sys.stdout.buffer.write(data)
        return
    write_atomically(out, data)
    sys.stderr.write(f"wrote {out}\n")


def _known_at(text: str, engine: HazardLoop) -> datetime | int:
    """--known-at: a printed chain head COUNT:HASH (checked against this store: the first COUNT
    events), or a date or date-time as every command reads one (`adapters.nightly.parse_moment`:
    YYYY-MM-DD in ASCII digits, its last second local time, or RFC 3339); InvalidCommand
    otherwise, naming the value."""
    from adapters.audit import is_head_text, parse_head
    from adapters.nightly import parse_moment
    from adapters.timetravel import position_of_head

    if is_head_text(text):
        return position_of_head(engine, parse_head(text))
    return parse_moment(text, engine.policy.tz, "--known-at")


tipster_app = typer.Typer(
    help="Confidential tipsters: erase a public tip's reporter for good.", no_args_is_help=True
)


@tipster_app.command("erase")
def tipster_erase_cmd(
    hazard_id: Annotated[str, typer.Argument(help="The hazard whose tipster is to be erased.")],
    db: DbOption = None,
) -> None:
    """Destroy the case's tipster key: the name can never be read again; no chain breaks.

    Prints `erased` (this run destroyed a key) and `final_on_disk` (its old bytes are out of
    the store's files); when another connection still reads an older snapshot, the key is
    destroyed but `final_on_disk` is false and a note on stderr says to run this again."""
    from adapters.bootstrap import Settings, build_engine

    try:
        engine = build_engine(Settings(db=db) if db else Settings(), existing=True)
        engine.get_hazard(hazard_id)
        assert engine.vault is not None
        done = engine.vault.erase(hazard_id)
    except HazardNotFound as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
        raise typer.Exit(1) from None
    except HazardLoopError as exc:
        raise _fail(exc) from None
    result = {"hazard_id": hazard_id, "erased": done.erased, "final_on_disk": done.final_on_disk}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    if not done.final_on_disk:
        sys.stderr.write(
            f"note: the tipster key of {hazard_id} is destroyed, but another connection (a "
            "running server or report) still reads an older snapshot, so its old bytes may "
            "remain in the store's files: once it ends, run "
            f"`hazardloop tipster erase {hazard_id}` again\n"
        )
