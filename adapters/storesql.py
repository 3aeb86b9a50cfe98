"""Store-neutral SQL for the adapters: the same reads and tables on SQLite and PostgreSQL.

- `select_rows(app, sql, **params)` reads the event store's own tables (the hash chain) through
  the recorder's own connections, with `:name` parameters whichever the backend;
- `store_engine(location)` is a SQLAlchemy engine on the store's database where no engine has
  been built (the `tokens` commands), and `create_tables` creates our own tables in it (API
  tokens, webhook subscribers) safely beside other processes doing the same.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from eventsourcing.sqlite import SQLiteDatastore
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import Pool

from adapters.store import StoreLocation
from loop.application import HazardLoop
from projections.tables import advisory_key, lock_schema

__all__ = [
    "advisory_key",
    "create_tables",
    "db_error",
    "select_rows",
    "session_lock",
    "store_engine",
    "to_pyformat",
]

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def to_pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (a literal `%` doubled)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


def select_rows(app: HazardLoop, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one read (`:name` parameters) on the event store's connections; rows as tuples.

    Raises eventsourcing's `PersistenceError` (the caller says what could not be read).
    """
    datastore = app.recorder.datastore  # type: ignore[attr-defined]
    sqlite = isinstance(datastore, SQLiteDatastore)
    with datastore.transaction(commit=False) as c:
        c.execute(sql if sqlite else to_pyformat(sql), params)
        rows = c.fetchall()
    # sqlite3.Row indexes by position; psycopg's dict rows keep the selected columns in order.
    return [tuple(r) if sqlite else tuple(r.values()) for r in rows]


def store_engine(location: StoreLocation) -> Engine:
    """A SQLAlchemy engine on the store's database (`adapters.bootstrap.views_engine` is this
    for an open engine; commands that open no engine use it directly).

    SQLite: a file engine that waits up to 30 s for the write lock; the store's folder is
    created if missing (OSError if it cannot be). PostgreSQL: a pooled psycopg 3 engine
    (HAZARDLOOP_POOL_SIZE connections, HAZARDLOOP_POOL_OVERFLOW more when busy).
    """
    if location.pg is None:
        location.path.parent.mkdir(parents=True, exist_ok=True)
        return create_engine(location.sqlalchemy_url(), connect_args={"timeout": 30})
    engine = create_engine(
        location.sqlalchemy_url(),
        pool_size=location.pg.pool_size,
        max_overflow=location.pg.max_overflow,
        pool_pre_ping=True,
        connect_args={"connect_timeout": location.pg.connect_timeout},
    )
    # Pooled connections are closed when the engine goes, not left to the server (nor to the
    # garbage collector, which warns); `dispose()` starts a new pool: followed too.
    pools: list[Pool] = [engine.pool]
    event.listen(engine, "engine_disposed", lambda e: pools.append(e.pool))
    weakref.finalize(engine, _dispose_pools, pools)
    return engine


def _dispose_pools(pools: list[Pool]) -> None:
    for pool in pools:
        pool.dispose()


def db_error(exc: BaseException) -> str:
    """A database error as a person reads it: the driver's own message, without SQLAlchemy's
    statement and link (the same shape on SQLite and PostgreSQL)."""
    orig = getattr(exc, "orig", None)
    return str(orig if isinstance(orig, Exception) else exc).strip()


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create the tables of `metadata` that do not exist yet, safely beside other processes
    doing the same: if one is missing, the check and the creation run again under the
    database's write lock (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL a transaction-scoped
    advisory lock, as two sessions creating one table at once collide in the catalogue even
    with IF NOT EXISTS). When all are there, nothing is locked.
    """
    with engine.connect() as probe:
        present = set(inspect(probe).get_table_names())
    if all(table.name in present for table in metadata.sorted_tables):
        return  # the usual case: no write lock needed
    with engine.begin() as conn:
        lock_schema(conn, "hazardloop:create-tables")
        metadata.create_all(conn)


@contextmanager
def session_lock(engine: Engine, name: str) -> Iterator[Connection | None]:
    """Hold PostgreSQL's session advisory lock `name` on a connection of its own while inside.

    Yields the connection holding it, or None if another session holds it. Released when the
    block ends, or by the server when the connection dies (even if this process is killed).
    """
    conn = engine.connect()
    try:
        held = conn.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(name)}
        ).scalar_one()
        conn.commit()  # the lock is the session's: no transaction stays open while it is held
        if not held:
            yield None
            return
        try:
            yield conn
        finally:
            with suppress(SQLAlchemyError):  # a dead connection has released it already
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(name)})
                conn.commit()
    finally:
        conn.close()
