"""Event stores: where `--db` / `HAZARDLOOP_DB` points, and the recorders that keep our extra rows.

The SQLite recorder extends eventsourcing's own: the first result of each idempotency key is
written in the same transaction as the events it produced, so a retry can never record twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory

from loop.errors import StoreError

__all__ = [
    "DEFAULT_DB",
    "HazardLoopSQLiteFactory",
    "HazardLoopSQLiteRecorder",
    "StoreLocation",
    "parse_db",
]

#: Where the embedded store lives when neither `--db` nor HAZARDLOOP_DB says.
DEFAULT_DB = "hazardloop.db"


class HazardLoopSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, plus the idempotency table."""

    idempotency_table = "idempotency_keys"

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.idempotency_table} ("
            "key TEXT PRIMARY KEY, "
            "fingerprint TEXT NOT NULL, "
            "result BLOB NOT NULL)"
        )
        return statements

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        rows: Sequence[tuple[str, str, bytes]] | None = kwargs.get("idempotency")
        if rows:
            c.executemany(
                f"INSERT INTO {self.idempotency_table} (key, fingerprint, result) VALUES (?,?,?)",
                rows,
            )
        return returning

    def select_idempotency(self, key: str) -> tuple[str, bytes] | None:
        """The fingerprint and first result stored for `key`, if any."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT fingerprint, result FROM {self.idempotency_table} WHERE key=?", (key,)
            )
            row = c.fetchone()
        if row is None:
            return None
        return str(row["fingerprint"]), bytes(row["result"])


class HazardLoopSQLiteFactory(SQLiteFactory):
    """The SQLite infrastructure factory with our application recorder."""

    application_recorder_class = HazardLoopSQLiteRecorder


@dataclass(frozen=True)
class StoreLocation:
    """A parsed `--db` value: which backend, and the eventsourcing settings that open it."""

    backend: str  # "sqlite" (PostgreSQL arrives with the scale-out work)
    path: Path
    url: str

    def env(self) -> dict[str, str]:
        """eventsourcing environment settings for this store."""
        return {
            "PERSISTENCE_MODULE": "adapters.store:HazardLoopSQLiteFactory",
            "SQLITE_DBNAME": str(self.path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }


def parse_db(value: str | None) -> StoreLocation:
    """Read a `--db` value: a SQLAlchemy-style URL (`sqlite:///file.db`) or a plain file path.

    None falls back to HAZARDLOOP_DB, then to `hazardloop.db` in the working directory.
    """
    raw = value or os.environ.get("HAZARDLOOP_DB") or DEFAULT_DB
    if "://" not in raw:
        return StoreLocation("sqlite", Path(raw).expanduser(), f"sqlite:///{raw}")
    parsed = urlparse(raw)
    scheme = parsed.scheme.split("+", 1)[0].lower()
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
        path = unquote(raw.split("://", 1)[1])
        if path.startswith("/"):
            path = path[1:]
        if not path or path == ":memory:":
            raise StoreError(
                "an in-memory SQLite store keeps nothing: give a file, e.g. sqlite:///hazards.db"
            )
        return StoreLocation("sqlite", Path(path).expanduser(), raw)
    if scheme in ("postgresql", "postgres"):
        raise StoreError(
            "PostgreSQL stores are not supported by this version yet; use a SQLite file"
        )
    raise StoreError(f"unknown store URL scheme {parsed.scheme!r}: use a file path or sqlite:///")
