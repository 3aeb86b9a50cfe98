"""Reading a test's store straight from its tables, whichever the store (SQLite or PostgreSQL).

For checks that must not go through the engine: counts, stored bytes. `position` is the log
position column: SQLite's rowid, PostgreSQL's notification_id.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from adapters.store import parse_db


def rows(store: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query (`?` placeholders; `{position}` is the log position column)."""
    location = parse_db(store)
    if location.pg is None:
        with sqlite3.connect(location.path) as conn:
            return [tuple(r) for r in conn.execute(sql.format(position="rowid"), params)]
    query = sql.format(position="notification_id").replace("?", "%s")
    with psycopg.connect(**location.psycopg_kwargs()) as conn:
        return [tuple(r) for r in conn.execute(query, params)]  # type: ignore[call-overload]


def event_count(store: str) -> int:
    """How many events the store holds."""
    return int(rows(store, "SELECT COUNT(*) FROM stored_events")[0][0])
