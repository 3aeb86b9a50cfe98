"""Event stores: where `--db` / `HAZARDLOOP_DB` points, and the recorders that keep our extra rows.

The SQLite recorder extends eventsourcing's own, writing in the same transaction as the events:
- the first result of each idempotency key, so a retry can never record twice;
- each event's links in the hash chains (one over the whole log, one per case) and its record
  time, so tampering shows and "what was known at T" is a prefix of the log (docs/audit.md).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory

from loop.errors import StoreError

__all__ = [
    "CHAIN_TABLE",
    "DEFAULT_DB",
    "GENESIS",
    "HEAD_TABLE",
    "HazardLoopSQLiteFactory",
    "HazardLoopSQLiteRecorder",
    "StoreLocation",
    "parse_db",
]

#: Where the embedded store lives when neither `--db` nor HAZARDLOOP_DB says.
DEFAULT_DB = "hazardloop.db"

#: The hash chains' tables (see docs/audit.md).
CHAIN_TABLE = "event_chain"
HEAD_TABLE = "chain_head"
#: The hash before the first event of the log, and of each case.
GENESIS = bytes(32)
_SEP = b"\x1f"


def frame(originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    """The exact stored columns of one event, as hashed: id, version, topic, state bytes."""
    parts = (originator_id.encode(), str(version).encode(), topic.encode(), state)
    return _SEP.join(parts)


def log_link(previous: bytes, position: int, framed: bytes) -> bytes:
    """The log chain's hash at `position`: SHA-256(previous ‖ position ‖ frame)."""
    return hashlib.sha256(previous + position.to_bytes(8, "big") + framed).digest()


def case_link(previous: bytes, log_hash: bytes) -> bytes:
    """The case chain's hash: SHA-256(the case's previous case hash ‖ this event's log hash)."""
    return hashlib.sha256(previous + log_hash).digest()


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (UTC), as record times are stored."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The inverse of `to_micros`."""
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


class HazardLoopSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, plus idempotency keys and hash chains."""

    idempotency_table = "idempotency_keys"
    #: Case hashes kept from this recorder's own writes, saving a lookup per event.
    case_cache_size = 100_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._case_heads: dict[str, bytes] = {}
        self._chained_to = -1

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.idempotency_table} ("
            "key TEXT PRIMARY KEY, "
            "fingerprint TEXT NOT NULL, "
            "result BLOB NOT NULL)"
        )
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} ("
            "position INTEGER PRIMARY KEY, "
            "originator_id TEXT NOT NULL, "
            "originator_version INTEGER NOT NULL, "
            "recorded_at INTEGER NOT NULL, "  # microseconds since the epoch, UTC
            "log_hash BLOB NOT NULL, "
            "case_hash BLOB NOT NULL)"
        )
        statements.append(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {CHAIN_TABLE}_case "
            f"ON {CHAIN_TABLE} (originator_id, originator_version)"
        )
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {CHAIN_TABLE}_recorded ON {CHAIN_TABLE} (recorded_at)"
        )
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {HEAD_TABLE} ("
            "id INTEGER PRIMARY KEY CHECK (id = 1), "
            "count INTEGER NOT NULL, "
            "log_hash BLOB NOT NULL, "
            "recorded_at INTEGER NOT NULL)"
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
        if returning:
            recorded_at: datetime | None = kwargs.get("recorded_at")
            self._chain(c, stored_events, returning, recorded_at)
        return returning

    def _chain(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        positions: Sequence[int],
        recorded_at: datetime | None,
    ) -> None:
        """Link the events just inserted into both chains (we hold the write lock here)."""
        c.execute(
            f"SELECT position, log_hash, recorded_at FROM {CHAIN_TABLE} "
            "ORDER BY position DESC LIMIT 1"
        )
        last = c.fetchone()
        previous = bytes(last["log_hash"]) if last else GENESIS
        last_micros = int(last["recorded_at"]) if last else 0
        micros = max(to_micros(recorded_at or datetime.now(UTC)), last_micros)
        if last is None or int(last["position"]) != self._chained_to:
            self._case_heads.clear()  # another writer came in between: the cache is stale
        self._chained_to = -1  # until this chaining is complete, the cache is not to be trusted
        cases = self._case_heads
        rows = []
        for stored, position in zip(stored_events, positions, strict=True):
            oid = stored.originator_id
            key = oid.hex if isinstance(oid, UUID) else str(oid)
            version = stored.originator_version
            log_hash = log_link(previous, position, frame(key, version, stored.topic, stored.state))
            before = cases.pop(key, None)
            if before is None:
                before = GENESIS
                if version > 1:
                    c.execute(
                        f"SELECT case_hash FROM {CHAIN_TABLE} "
                        "WHERE originator_id=? AND originator_version<? "
                        "ORDER BY originator_version DESC LIMIT 1",
                        (key, version),
                    )
                    row = c.fetchone()
                    if row is not None:
                        before = bytes(row["case_hash"])
            case_hash = case_link(before, log_hash)
            cases[key] = case_hash
            rows.append((position, key, version, micros, log_hash, case_hash))
            previous = log_hash
        while len(cases) > self.case_cache_size:
            del cases[next(iter(cases))]  # least recently written first
        c.executemany(f"INSERT INTO {CHAIN_TABLE} VALUES (?,?,?,?,?,?)", rows)
        c.execute(
            f"INSERT INTO {HEAD_TABLE} (id, count, log_hash, recorded_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET count=count+excluded.count, "
            "log_hash=excluded.log_hash, recorded_at=excluded.recorded_at",
            (len(rows), previous, micros),
        )
        # Trusted only if the next transaction finds the log still ending where we left it; if
        # this one rolls back instead, the position will not match and the cache is dropped.
        self._chained_to = positions[-1]

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
