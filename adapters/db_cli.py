"""`hazardloop db init|upgrade`: create or bring up to date a store's tables, on either store.

- the event store's tables (events, idempotency keys, hash chains, tipster keys) by the
  library's own create-table mechanism (`CREATE TABLE IF NOT EXISTS`, run when the engine opens);
- the API tokens' and webhook subscribers' tables (`adapters.tokens`, `adapters.webhooks`), so a
  deployment whose runtime database user may not create tables has them from the start;
- the read models' tables and views by the projection runner (`_reconcile`, then
  `create_all`): on `upgrade`, a read model whose stored columns differ from the code's is
  dropped with its position, to be rebuilt by the next catch-up, an index added since is
  created in place, and a table that became a view (`steps`) is dropped for the view;
- on `upgrade` of a SQLite store, the indexes an earlier version made and this one no longer
  uses (`adapters.store.RETIRED_SQLITE_INDEXES`: the chain's index on the case) are dropped.

Exit status: 0 done, 2 usage or store error. Prints one JSON object.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import typer
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from adapters.cli_options import DbOption
from adapters.store import HazardLoopSQLiteRecorder, location_of, parse_db
from loop.errors import HazardLoopError, StoreError

__all__ = ["db_app"]

db_app = typer.Typer(
    help="The store's schema: create it (init) or bring it up to this version's (upgrade).",
    no_args_is_help=True,
)


def _fail(exc: HazardLoopError) -> typer.Exit:
    sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
    return typer.Exit(2)


def _schema(db: str | None, *, upgrade: bool) -> dict[str, Any]:
    from adapters.bootstrap import Settings, build_engine, build_runner
    from adapters.tokens import create_tables as create_token_tables
    from adapters.webhooks import create_tables as create_subscriber_tables

    location = parse_db(db)
    engine = build_engine(Settings(db=db) if db else Settings())
    try:
        views = None
        try:
            before: dict[str, int] = {}
            dropped: list[str] = []
            if upgrade:
                before = _positions(engine)
                if isinstance(engine.recorder, HazardLoopSQLiteRecorder):
                    dropped = engine.recorder.drop_retired_indexes()
            runner = build_runner(engine)  # reconciles the read models, creates what is missing
            views = runner.engine
            create_token_tables(views)
            create_subscriber_tables(views)
            found = inspect(views)
            tables = sorted(t for t in found.get_table_names() if t != "sqlite_sequence")
            view_names = sorted(found.get_view_names())
            lags = runner.status()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot create the read models' tables: {exc}") from exc
        finally:
            if views is not None:
                views.dispose()
        out: dict[str, Any] = {
            "store": location_of(engine).display,
            "backend": location.backend,
            "events": engine.recorder.max_notification_id() or 0,
            "tables": tables,
            "views": view_names,
            "projections": [{"name": r.name, "position": r.position} for r in lags],
        }
        if upgrade:
            # Read models whose tables were dropped (their columns changed): rebuilt by the
            # next catch-up, from the events.
            out["to_rebuild"] = sorted(r.name for r in lags if before.get(r.name, 0) > r.position)
            # Indexes an earlier version made that this one neither writes nor reads.
            out["dropped_indexes"] = dropped
        return out
    finally:
        engine.close()


def _positions(app: Any) -> dict[str, int]:
    """Each read model's tracked position, before anything is changed."""
    from sqlalchemy import select

    from adapters.bootstrap import views_engine
    from projections.tables import tracking

    probe = views_engine(app)
    try:
        if not inspect(probe).has_table(tracking.name):
            return {}
        with probe.connect() as conn:
            return {
                str(n): int(p)
                for n, p in conn.execute(select(tracking.c.name, tracking.c.position))
            }
    finally:
        probe.dispose()


@db_app.command("init")
def init_cmd(db: DbOption = None) -> None:
    """Create the store's tables where they are missing (safe to run again)."""
    try:
        out = _schema(db, upgrade=False)
    except HazardLoopError as exc:
        raise _fail(exc) from None
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


@db_app.command("upgrade")
def upgrade_cmd(db: DbOption = None) -> None:
    """Bring an existing store's tables to this version: create what is missing, drop read
    models whose columns changed (the next catch-up rebuilds them from the events)."""
    try:
        out = _schema(db, upgrade=True)
    except HazardLoopError as exc:
        raise _fail(exc) from None
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
