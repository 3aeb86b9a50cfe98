"""Reading a test's store straight from its tables, whichever the store (SQLite or PostgreSQL).

For checks that must not go through the engine: counts, stored bytes. `position` is the log
position column: SQLite's rowid, PostgreSQL's notification_id.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg

from adapters.store import parse_db


def rows(store: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query (`?` placeholders; `{position}` is the log position column)."""
    location = parse_db(store)
    if location.pg is None:
        conn = sqlite3.connect(location.path)
        try:
            with conn:
                return [tuple(r) for r in conn.execute(sql.format(position="rowid"), params)]
        finally:
            conn.close()
    query = sql.format(position="notification_id").replace("?", "%s")
    with psycopg.connect(**location.psycopg_kwargs()) as conn:
        cur = conn.execute(query, params)  # type: ignore[call-overload]
        return [tuple(r) for r in cur] if cur.description else []


def event_count(store: str) -> int:
    """How many events the store holds."""
    return int(rows(store, "SELECT COUNT(*) FROM stored_events")[0][0])


@contextlib.contextmanager
def write_lock(store: str) -> Iterator[None]:
    """Hold the store's write lock, as a writer between its insert and its commit does:
    SQLite's `BEGIN IMMEDIATE`; on PostgreSQL the events table's EXCLUSIVE lock, the one every
    writer of eventsourcing's recorder takes. Readers carry on; writers wait until the end."""
    location = parse_db(store)
    if location.pg is None:
        lite = sqlite3.connect(location.path, isolation_level=None)
        try:
            lite.execute("BEGIN IMMEDIATE")
            yield
            lite.execute("ROLLBACK")
        finally:
            lite.close()
        return
    with psycopg.connect(**location.psycopg_kwargs()) as pg:
        pg.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
        yield
        pg.rollback()
