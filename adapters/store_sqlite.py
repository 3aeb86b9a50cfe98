"""The SQLite event store's recorder: eventsourcing's own, plus idempotency keys and hash chains.

Here, apart from `adapters.store` (which re-exports every name), so that what needs only the
SQLite recorder — the bulk writer's child process (adapters/bulk_writer.py) — imports neither
psycopg nor SQLAlchemy: 0.07 s to start instead of 0.28 s. The chain arithmetic both
recorders share (`_Chainer`, `frame`, `chain_link`) lives here too. docs/audit.md has the chains.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory

from loop.errors import StoreError

#: The hash chains' tables (see docs/audit.md).
CHAIN_TABLE = "event_chain"
HEAD_TABLE = "chain_head"
IDEMPOTENCY_TABLE = "idempotency_keys"
#: The events' table, the same name on both stores.
EVENTS_TABLE = "stored_events"
#: The hash before the first event of the log, and of each case.
GENESIS = bytes(32)
#: The chains' format: 2 = one hash per event, linking it to the log's previous event and to its
#: case's previous event, over its position, record time and frame (docs/audit.md). Format 1
#: (before 2026-11-28: a log hash and a case hash per event, no record time) is refused.
CHAIN_FORMAT = 2
_SEP = b"\x1f"
#: An event's position (8 bytes, unsigned) and record time (8 bytes, signed µs since the epoch),
#: big-endian, as its hash takes them.
_POSITION_TIME = struct.Struct(">Qq")


def frame(originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    """The exact stored columns of one event, as hashed: id, version, topic, state bytes."""
    parts = (originator_id.encode(), str(version).encode(), topic.encode(), state)
    return _SEP.join(parts)


def chain_link(
    previous: bytes, case_previous: bytes, position: int, recorded_micros: int, framed: bytes
) -> bytes:
    """An event's hash, its link in both chains:
    SHA-256(log's previous hash ‖ case's previous hash ‖ position ‖ record time ‖ frame)."""
    return hashlib.sha256(
        previous + case_previous + _POSITION_TIME.pack(position, recorded_micros) + framed
    ).digest()


#: On SQLite, a case's events through the events' primary key, each joined to the chain row at
#: its rowid, its position (the chain row must name the same event); `{where}`: on `e`.
_CASE_CHAIN_SQLITE = (
    f"FROM {EVENTS_TABLE} e JOIN {CHAIN_TABLE} c ON c.position = e.rowid WHERE {{where}} "
    "AND c.originator_id = e.originator_id AND c.originator_version = e.originator_version"
)
#: The chain row of one case event on SQLite.
CASE_EVENT_HASH_SQLITE = "SELECT c.log_hash " + _CASE_CHAIN_SQLITE.format(
    where="e.originator_id = ? AND e.originator_version = ?"
)
#: A case's chain rows in version order (`:key`, the case's 32 hex digits): (version, position,
#: recorded_at, log_hash). SQLite goes through the events' primary key; PostgreSQL's chain
#: table keeps its own index on the case.
CASE_CHAIN_ROWS_SQLITE = (
    "SELECT c.originator_version, c.position, c.recorded_at, c.log_hash "
    + _CASE_CHAIN_SQLITE.format(where="e.originator_id = :key")
    + " ORDER BY e.originator_version"
)
#: Indexes a SQLite store made by an earlier version has and this one neither writes nor reads:
#: `hazardloop db upgrade` drops them (each costs every stored event an index insert).
RETIRED_SQLITE_INDEXES = (f"{CHAIN_TABLE}_case",)


def chain_format_error(columns: Sequence[str], display: str) -> StoreError | None:
    """The error for a store whose chain table has another format's columns (None: ours)."""
    if "case_hash" not in columns:
        return None
    return StoreError(
        f"the event store {display} keeps its hash chains in format 1 (a log hash and a case "
        f"hash per event, written by hazard-loop before 2026-11-28); this engine reads and "
        f"writes format {CHAIN_FORMAT} only: verify and archive that store with the version "
        "that wrote it (docs/audit.md, 'Chain format')"
    )


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (UTC), as record times are stored."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The inverse of `to_micros`."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _key(originator_id: UUID | str) -> str:
    """An originator id as the chains hash and store it: a UUID's 32 hex digits."""
    return originator_id.hex if isinstance(originator_id, UUID) else str(originator_id)


ChainRow = tuple[int, str, int, int, bytes]
#: Given the (case key, version) of each event whose hash is wanted, that hash, for the events
#: that are in the chain.
CaseLookup = Callable[[Sequence[tuple[str, int]]], Mapping[str, bytes]]
#: The record time the engine passes with its events: its clock, read by the recorder while it
#: holds the write lock (a fixed time, as the library's own recorder tests pass none, is kept).
RecordTime = Callable[[], datetime] | datetime | None


class _Chainer:
    """The chain arithmetic both recorders share; the recorder holds the write lock meanwhile.

    An event's case previous hash is zeros for a case's first version (1; 0 in the library's own
    tests), else the hash of its case's event one version earlier (the rule the verifier holds
    every event to). Keeps the last (version, hash) of each case this recorder
    wrote, saving a lookup per event; the cache is trusted only while the log still ends where
    this recorder left it: the same last position *and* hash.
    """

    case_cache_size = 100_000

    def __init__(self) -> None:
        self.case_heads: dict[str, tuple[int, bytes]] = {}
        self.chained_to: tuple[int, bytes] | None = None
        self._pending: tuple[int, bytes] = (-1, GENESIS)

    def link(
        self,
        last: tuple[int, bytes, int] | None,
        stored_events: Sequence[StoredEvent],
        positions: Sequence[int],
        recorded_at: RecordTime,
        lookup: CaseLookup,
    ) -> tuple[list[ChainRow], bytes, int]:
        """The chain rows of the events just inserted, the new head hash and the record time.

        `last` is the chain's last row before them: (position, log_hash, recorded_at). The
        record time is read here, the write lock held (the engine passes its clock), so it is
        never before the moment the events could be seen; and never before the last one's.
        """
        previous = bytes(last[1]) if last else GENESIS
        last_micros = int(last[2]) if last else 0
        moment = recorded_at() if callable(recorded_at) else recorded_at
        micros = max(to_micros(moment or datetime.now(UTC)), last_micros)
        if last is None or (int(last[0]), previous) != self.chained_to:
            self.case_heads.clear()  # another writer came in between: the cache is stale
        self.chained_to = None  # until this chaining is complete, the cache is not to be trusted
        cases = self.case_heads
        keys = [_key(s.originator_id) for s in stored_events]
        # For each case's first event in this batch, its event one version earlier when the
        # cache does not hold it (a later event of the case in the batch follows this one).
        wanted: dict[str, int] = {}
        seen: set[str] = set()
        for key, stored in zip(keys, stored_events, strict=True):
            if key in seen:
                continue
            seen.add(key)
            version = stored.originator_version
            cached = cases.get(key)
            if version > 1 and (cached is None or cached[0] != version - 1):
                wanted[key] = version - 1
        found = lookup(list(wanted.items())) if wanted else {}
        rows: list[ChainRow] = []
        for key, stored, position in zip(keys, stored_events, positions, strict=True):
            version = stored.originator_version
            cached = cases.pop(key, None)
            if version <= 1:  # a case's first version: 1 (0 in the library's own tests)
                before = GENESIS
            elif cached is not None and cached[0] == version - 1:
                before = cached[1]
            else:  # not in the chain: a gap the library never writes, and `audit verify` names
                before = found.get(key, GENESIS)
            framed = frame(key, version, stored.topic, stored.state)
            previous = chain_link(previous, before, position, micros, framed)
            cases[key] = (version, previous)
            rows.append((position, key, version, micros, previous))
        while len(cases) > self.case_cache_size:
            del cases[next(iter(cases))]  # least recently written first
        self._pending = (positions[-1], previous)
        return rows, previous, micros

    def done(self, positions: Sequence[int]) -> None:
        # Trusted only if the next transaction finds the log still ending where we left it (its
        # last position and hash); if this one rolls back instead and another writer fills the
        # same positions, the hash will not match and the cache is dropped.
        assert self._pending[0] == positions[-1]
        self.chained_to = self._pending


class HazardLoopSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, plus idempotency keys and hash chains."""

    idempotency_table = IDEMPOTENCY_TABLE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chainer = _Chainer()

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
            "log_hash BLOB NOT NULL)"  # the event's hash: its link in both chains
        )
        # No index on the chain's (originator_id, originator_version): on SQLite a case's chain
        # rows are found through the events' primary key and the rowid (CASE_CHAIN_ROWS_SQLITE),
        # and a second index on random case ids cost each stored event 6.5 µs, a tenth of a bulk
        # apply (docs/performance.md, "One index fewer"). Stores created before keep theirs
        # until `hazardloop db upgrade` drops it (RETIRED_SQLITE_INDEXES).
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

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"PRAGMA table_info({CHAIN_TABLE})")
            columns = [str(row["name"]) for row in c.fetchall()]
        error = chain_format_error(columns, str(self.datastore.pool.db_name))
        if error is not None:
            raise error

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
            recorded_at: RecordTime = kwargs.get("recorded_at")
            self._chain(c, stored_events, returning, recorded_at)
        return returning

    def _chain(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        positions: Sequence[int],
        recorded_at: RecordTime,
    ) -> None:
        """Link the events just inserted into both chains (we hold the write lock here)."""
        c.execute(
            f"SELECT position, log_hash, recorded_at FROM {CHAIN_TABLE} "
            "ORDER BY position DESC LIMIT 1"
        )
        row = c.fetchone()
        last = (row["position"], row["log_hash"], row["recorded_at"]) if row else None

        def lookup(wanted: Sequence[tuple[str, int]]) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for key, version in wanted:
                c.execute(CASE_EVENT_HASH_SQLITE, (key, version))
                hit = c.fetchone()
                if hit is not None:
                    found[key] = bytes(hit["log_hash"])
            return found

        rows, previous, micros = self._chainer.link(
            last, stored_events, positions, recorded_at, lookup
        )
        c.executemany(f"INSERT INTO {CHAIN_TABLE} VALUES (?,?,?,?,?)", rows)
        c.execute(
            f"INSERT INTO {HEAD_TABLE} (id, count, log_hash, recorded_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET count=count+excluded.count, "
            "log_hash=excluded.log_hash, recorded_at=excluded.recorded_at",
            (len(rows), previous, micros),
        )
        self._chainer.done(positions)

    def drop_retired_indexes(self) -> list[str]:
        """Drop the indexes of RETIRED_SQLITE_INDEXES this store still has; their names."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name IN "
                f"({','.join('?' * len(RETIRED_SQLITE_INDEXES))})",
                RETIRED_SQLITE_INDEXES,
            )
            names = sorted(str(row["name"]) for row in c.fetchall())
            for name in names:
                c.execute(f'DROP INDEX "{name}"')
        return names

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

    def application_recorder(self) -> ApplicationRecorder:
        pool = self.datastore.pool
        if not pool.is_sqlite_memory_mode:
            use_wal(pool.db_name, float(pool.lock_timeout or 5))
        return super().application_recorder()


def use_wal(db_name: str, timeout: float) -> None:
    """Put a SQLite file in WAL mode before the library's connections open it.

    The library's first connection sets `journal_mode=WAL` when it finds the file is not in it
    (a new store), and SQLite answers "database is locked" at once, without waiting for the
    busy timeout, when another process opens the same new file at that moment (say workers
    started together on a new store). Here it is retried until `timeout` seconds have passed;
    the mode stays with the file, so the library then finds it set.
    """
    deadline = time.monotonic() + timeout
    try:
        conn = sqlite3.connect(db_name, uri=True, timeout=timeout, isolation_level=None)
    except sqlite3.Error:
        return  # the library's own connection says why it cannot open the file
    try:
        while True:
            try:
                if str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    return  # as above (a read-only file, say)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)
    finally:
        conn.close()
