"""Event stores: where `--db` / `HAZARDLOOP_DB` points, and the recorders that keep our extra rows.

Two stores, one behaviour. The SQLite recorder extends eventsourcing's own SQLite recorder and the
PostgreSQL recorder extends eventsourcing's own PostgreSQL recorder; both write, in the same
transaction as the events:
- the first result of each idempotency key (scoped by actor by the service:
  `loop.application.scoped_key`; older stores also hold bare keys), so a retry can never record
  twice;
- each event's hash, which links it into both hash chains (one over the whole log, one per case)
  and binds its record time, so tampering shows and "what was known at T" is a prefix of the log
  that cannot be moved (docs/audit.md).

The same events give byte-identical chain heads on both stores: positions are dense (1, 2, 3, …)
on both, the hashes are computed by the same functions over the same stored bytes. How
PostgreSQL writers are serialised so positions follow commit order: docs/postgres.md.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse
from uuid import UUID

import psycopg
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory
from eventsourcing.utils import resolve_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier
from sqlalchemy.engine import URL

from loop.errors import StoreError

__all__ = [
    "CHAIN_TABLE",
    "DEFAULT_DB",
    "GENESIS",
    "HEAD_TABLE",
    "IDEMPOTENCY_TABLE",
    "HazardLoopPostgresFactory",
    "HazardLoopPostgresRecorder",
    "HazardLoopSQLiteFactory",
    "HazardLoopSQLiteRecorder",
    "PostgresParams",
    "StoreLocation",
    "location_of",
    "parse_db",
]

#: Where the embedded store lives when neither `--db` nor HAZARDLOOP_DB says.
DEFAULT_DB = "hazardloop.db"

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
#: The advisory lock under which a PostgreSQL store's tables are created (any fixed 64-bit key).
SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"hazardloop:schema").digest()[:8], "big", signed=True)
#: The key under which the application's environment keeps the store's URL (see `location_of`).
STORE_URL_KEY = "STORE_URL"


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
CASE_CHAIN_ROWS_POSTGRES = (
    "SELECT originator_version, position, recorded_at, log_hash "
    f"FROM {CHAIN_TABLE} WHERE originator_id = :key ORDER BY originator_version"
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


class HazardLoopPostgresRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder, plus idempotency keys and hash chains.

    - Writers are serialised by the library's own `LOCK TABLE stored_events IN EXCLUSIVE MODE`,
      taken before the insert and held until commit; readers (plain SELECTs) are not blocked.
    - Positions are dense, as SQLite's rowids are: each insert numbers its events from the
      largest committed position + 1, read under that lock, instead of from the `bigserial`
      sequence, whose values a rolled-back insert (a version conflict) would burn for good.
      So the same saves give the same positions, and the same chain heads, on both stores.
    - The idempotency rows, the chain rows and the head are written after the events, under
      the same lock, in the same transaction.
    """

    idempotency_table = IDEMPOTENCY_TABLE

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = EVENTS_TABLE
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.enable_db_functions:
            raise StoreError(
                "POSTGRES_ENABLE_DB_FUNCTIONS is not supported: the hash chains are written by "
                "the recorder, not by the library's insert function"
            )
        self._chainer = _Chainer()
        schema = Identifier(datastore.schema)
        table = Identifier(events_table_name)
        self._t = {
            "events": Composed([schema, SQL("."), table]),
            "chain": Composed([schema, SQL("."), Identifier(CHAIN_TABLE)]),
            "head": Composed([schema, SQL("."), Identifier(HEAD_TABLE)]),
            "idem": Composed([schema, SQL("."), Identifier(self.idempotency_table)]),
        }
        t = self._t
        # Dense positions, numbered under the table lock (see the class docstring).
        self.insert_events_statement = SQL(
            "INSERT INTO {events} "
            "(originator_id, originator_version, topic, state, notification_id) "
            "SELECT e.originator_id, e.originator_version, e.topic, e.state, "
            "(SELECT COALESCE(MAX(notification_id), 0) FROM {events}) + e.n "
            "FROM unnest(%s::{schema}.{stored_event_type}[]) WITH ORDINALITY "
            "AS e(originator_id, originator_version, topic, state, n) "
            "ORDER BY e.n "
            "RETURNING notification_id"
        ).format(
            events=t["events"],
            schema=schema,
            stored_event_type=Identifier(self.stored_event_type_name),
        )
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {idem} ("
                    "key text PRIMARY KEY, "
                    "fingerprint text NOT NULL, "
                    "result bytea NOT NULL)"
                ).format(idem=t["idem"]),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {chain} ("
                    "position bigint PRIMARY KEY, "
                    "originator_id text NOT NULL, "
                    "originator_version bigint NOT NULL, "
                    "recorded_at bigint NOT NULL, "  # microseconds since the epoch, UTC
                    "log_hash bytea NOT NULL)"  # the event's hash: its link in both chains
                ).format(chain=t["chain"]),
                SQL(
                    "CREATE UNIQUE INDEX IF NOT EXISTS {name} "
                    "ON {chain} (originator_id, originator_version)"
                ).format(name=Identifier(f"{CHAIN_TABLE}_case"), chain=t["chain"]),
                SQL("CREATE INDEX IF NOT EXISTS {name} ON {chain} (recorded_at)").format(
                    name=Identifier(f"{CHAIN_TABLE}_recorded"), chain=t["chain"]
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {head} ("
                    "id integer PRIMARY KEY CHECK (id = 1), "
                    "count bigint NOT NULL, "
                    "log_hash bytea NOT NULL, "
                    "recorded_at bigint NOT NULL)"
                ).format(head=t["head"]),
            ]
        )
        self._last_statement = SQL(
            "SELECT position, log_hash, recorded_at FROM {chain} ORDER BY position DESC LIMIT 1"
        ).format(chain=t["chain"])
        self._cases_statement = SQL(
            "SELECT c.originator_id, c.log_hash "
            "FROM {chain} c JOIN unnest(%s::text[], %s::bigint[]) AS w(id, version) "
            "ON c.originator_id = w.id AND c.originator_version = w.version"
        ).format(chain=t["chain"])
        self._insert_chain_statement = SQL(
            "INSERT INTO {chain} "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::bigint[], "
            "%s::bytea[])"
        ).format(chain=t["chain"])
        self._upsert_head_statement = SQL(
            "INSERT INTO {head} AS h (id, count, log_hash, recorded_at) VALUES (1, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET count = h.count + excluded.count, "
            "log_hash = excluded.log_hash, recorded_at = excluded.recorded_at"
        ).format(head=t["head"])
        # RETURNING, and the rows fetched at once: a key stored before is then the statement's
        # own unique violation, raised here inside the library's transaction (which it aborts),
        # not a `PipelineAborted` at the pipeline's end, whenever psycopg reads the results.
        self._insert_idempotency_statement = SQL(
            "INSERT INTO {idem} (key, fingerprint, result) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[]) RETURNING key"
        ).format(idem=t["idem"])
        self._select_idempotency_statement = SQL(
            "SELECT fingerprint, result FROM {idem} WHERE key = %s"
        ).format(idem=t["idem"])

    def create_table(self) -> None:
        """Create the tables, unless they are all there already.

        - `CREATE INDEX IF NOT EXISTS` takes a SHARE lock on the events table before it finds
          the index exists, so an engine opening while a writer holds the EXCLUSIVE lock would
          wait for that writer to commit: a store whose schema is complete is not touched.
        - PostgreSQL does not serialise `CREATE TYPE` / `CREATE TABLE IF NOT EXISTS` among
          themselves (two at once: a unique violation in the catalogue), so the creation runs
          under an advisory lock, on a connection of its own (not one of the pool's, which may
          hold a single connection), and checks again once it holds it.
        """
        if not self._schema_complete():
            self._create_schema()
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (self.datastore.schema, CHAIN_TABLE),
            )
            columns = [str(row["column_name"]) for row in curs.fetchall()]
        error = chain_format_error(columns, f"in schema {self.datastore.schema!r} (PostgreSQL)")
        if error is not None:
            raise error

    def _create_schema(self) -> None:
        given = self.datastore.pool.kwargs
        assert isinstance(given, dict)
        kwargs = {k: v for k, v in given.items() if k != "row_factory"}
        with psycopg.connect(**kwargs, autocommit=True) as lock:
            lock.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            try:
                if not self._schema_complete():
                    super().create_table()
            finally:
                lock.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

    def _schema_complete(self) -> bool:
        """Whether every table, index and type of the event store exists (type adapters are
        registered if so)."""
        relations = [
            self.events_table_name,
            self.notification_id_index_name,
            IDEMPOTENCY_TABLE,
            CHAIN_TABLE,
            f"{CHAIN_TABLE}_case",
            f"{CHAIN_TABLE}_recorded",
            HEAD_TABLE,
        ]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)) AS found, "
                "(SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = %s AND t.typname = %s) AS types",
                (self.datastore.schema, relations, self.datastore.schema,
                 self.stored_event_type_name),
            )  # fmt: skip
            row = curs.fetchone()
        if row is not None and row["found"] == len(relations) and row["types"] == 1:
            self.datastore.register_type_adapters()
            return True
        return False

    def _fetch_ids_after_insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """After the events' insert, still holding the table lock: idempotency rows, chains."""
        positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        rows: Sequence[tuple[str, str, bytes]] | None = kwargs.get("idempotency")
        if rows:
            keys, fingerprints, results = zip(*rows, strict=True)
            curs.execute(
                self._insert_idempotency_statement, (list(keys), list(fingerprints), list(results))
            )
            curs.fetchall()
        if positions:
            self._chain(curs, stored_events, positions, kwargs.get("recorded_at"))
        return positions

    def _chain(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        positions: Sequence[int],
        recorded_at: RecordTime,
    ) -> None:
        curs.execute(self._last_statement, prepare=True)
        row = curs.fetchone()
        last = (row["position"], row["log_hash"], row["recorded_at"]) if row else None

        def lookup(wanted: Sequence[tuple[str, int]]) -> dict[str, bytes]:
            curs.execute(self._cases_statement, ([k for k, _ in wanted], [v for _, v in wanted]))
            return {str(r["originator_id"]): bytes(r["log_hash"]) for r in curs.fetchall()}

        rows, previous, micros = self._chainer.link(
            last, stored_events, positions, recorded_at, lookup
        )
        columns = [list(column) for column in zip(*rows, strict=True)]
        curs.execute(self._insert_chain_statement, columns)
        curs.execute(self._upsert_head_statement, (len(rows), previous, micros), prepare=True)
        self._chainer.done(positions)

    def select_idempotency(self, key: str) -> tuple[str, bytes] | None:
        """The fingerprint and first result stored for `key`, if any."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_idempotency_statement, (key,), prepare=True)
            row = curs.fetchone()
        if row is None:
            return None
        return str(row["fingerprint"]), bytes(row["result"])


class HazardLoopPostgresFactory(PostgresFactory):
    """The PostgreSQL infrastructure factory with our application recorder, on `stored_events`
    (the library would name the table after the application; we keep SQLite's name)."""

    application_recorder_class = HazardLoopPostgresRecorder

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls: type[PostgresApplicationRecorder] = (
            resolve_topic(topic) if topic else self.application_recorder_class
        )
        recorder = cls(datastore=self.datastore, events_table_name=EVENTS_TABLE)
        if self.env_create_table():
            recorder.create_table()
        return recorder


# ---------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class PostgresParams:
    """Where a PostgreSQL store is, and how the engine's connections to it behave."""

    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    pool_size: int = 2
    max_overflow: int = 8
    lock_timeout: int = 30  # seconds a writer waits for the events table's lock
    connect_timeout: int = 10  # seconds to wait for a connection


@dataclass(frozen=True)
class StoreLocation:
    """A parsed `--db` value: which backend, and the settings that open it.

    `backend` is "sqlite" (a file: `file`) or "postgres" (a server: `pg`).
    """

    backend: str
    url: str
    file: Path | None = None
    pg: PostgresParams | None = None

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgres"

    @property
    def path(self) -> Path:
        """The SQLite file. A PostgreSQL store has none: code that needs a file says so."""
        if self.file is None:
            raise StoreError(
                f"{self.display} is a PostgreSQL store: this needs a SQLite store file"
            )
        return self.file

    @property
    def display(self) -> str:
        """The store for messages and logs: a path, or the URL without its password."""
        if self.pg is not None:
            p = self.pg
            return f"postgresql://{p.user}@{p.host}:{p.port}/{p.dbname}"
        return str(self.file)

    def env(self) -> dict[str, str]:
        """eventsourcing environment settings for this store."""
        if self.pg is not None:
            p = self.pg
            return {
                "PERSISTENCE_MODULE": "adapters.store:HazardLoopPostgresFactory",
                "POSTGRES_HOST": p.host,
                "POSTGRES_PORT": str(p.port),
                "POSTGRES_USER": p.user,
                "POSTGRES_PASSWORD": p.password,
                "POSTGRES_DBNAME": p.dbname,
                "POSTGRES_POOL_SIZE": str(p.pool_size),
                "POSTGRES_MAX_OVERFLOW": str(p.max_overflow),
                "POSTGRES_LOCK_TIMEOUT": str(p.lock_timeout),
                "POSTGRES_CONNECT_TIMEOUT": str(p.connect_timeout),
                "POSTGRES_SCHEMA": "public",
                STORE_URL_KEY: self.url,
            }
        return {
            "PERSISTENCE_MODULE": "adapters.store:HazardLoopSQLiteFactory",
            "SQLITE_DBNAME": str(self.file),
            "SQLITE_LOCK_TIMEOUT": "30",
            STORE_URL_KEY: self.url,
        }

    def sqlalchemy_url(self) -> URL:
        """The same database for SQLAlchemy (the read models)."""
        if self.pg is not None:
            p = self.pg
            return URL.create(
                "postgresql+psycopg",
                username=p.user,
                password=p.password or None,
                host=p.host,
                port=p.port,
                database=p.dbname,
            )
        return URL.create("sqlite", database=str(self.file))

    def psycopg_kwargs(self) -> dict[str, Any]:
        """Connection arguments for `psycopg.connect(**kwargs)` (PostgreSQL only)."""
        if self.pg is None:
            raise StoreError(f"{self.display} is a SQLite store, not PostgreSQL")
        p = self.pg
        kwargs: dict[str, Any] = {
            "host": p.host,
            "port": p.port,
            "user": p.user,
            "dbname": p.dbname,
            "connect_timeout": p.connect_timeout,
        }
        if p.password:
            kwargs["password"] = p.password
        return kwargs


def location_of(app: Any) -> StoreLocation:
    """The store an engine built by `adapters.bootstrap` was opened on."""
    env = app.env
    url = env.get(STORE_URL_KEY) if hasattr(env, "get") else None
    if url:
        return parse_db(url)
    path = env.get("SQLITE_DBNAME") if hasattr(env, "get") else None
    if path:
        return parse_db(path)
    raise StoreError("the engine was not opened on a store this program knows")


def _int_setting(name: str, default: int, minimum: int, env: Mapping[str, str]) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise StoreError(f"{name} must be a whole number of at least {minimum}, not {raw!r}")
    return value


_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


def _parse_postgres(raw: str, env: Mapping[str, str]) -> StoreLocation:
    parsed = urlparse(raw)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    known = {"host", "port", "user", "password", "dbname", "pool_size", "lock_timeout"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise StoreError(
            f"unknown option {unknown[0]!r} in the store URL: "
            f"options are {', '.join(sorted(known))}"
        )
    try:
        url_port = parsed.port
    except ValueError:
        raise StoreError(f"the store URL's port is not a number: {raw.split('@')[-1]!r}") from None
    host = query.get("host") or unquote(parsed.hostname or "") or "localhost"
    user = unquote(parsed.username or "") or query.get("user") or getpass.getuser()
    password = unquote(parsed.password or "") or query.get("password") or env.get("PGPASSWORD", "")
    dbname = unquote(parsed.path.lstrip("/")) or query.get("dbname", "")
    if not dbname:
        raise StoreError(
            "the PostgreSQL store URL names no database: postgresql://user@host:port/DATABASE"
        )
    if "/" in dbname:
        raise StoreError(f"the store URL's database name {dbname!r} contains '/'")
    port = url_port
    if port is None and "port" in query:
        port = _int_setting("port", 5432, 1, query)
    local = {**env, **{f"HAZARDLOOP_{k.upper()}": v for k, v in query.items()}}
    params = PostgresParams(
        host=host,
        port=port or 5432,
        user=user,
        password=password,
        dbname=dbname,
        pool_size=_int_setting("HAZARDLOOP_POOL_SIZE", 2, 1, local),
        max_overflow=_int_setting("HAZARDLOOP_POOL_OVERFLOW", 8, 0, local),
        lock_timeout=_int_setting("HAZARDLOOP_LOCK_TIMEOUT", 30, 0, local),
        connect_timeout=_int_setting("HAZARDLOOP_CONNECT_TIMEOUT", 10, 1, local),
    )
    return StoreLocation("postgres", raw, pg=params)


def parse_db(value: str | None, env: Mapping[str, str] | None = None) -> StoreLocation:
    """Read a `--db` value: a plain file path, `sqlite:///file.db`, or a PostgreSQL URL
    (`postgresql://user[:password]@host[:port]/database`, also `postgres://` and
    `postgresql+psycopg://`).

    None falls back to HAZARDLOOP_DB, then to `hazardloop.db` in the working directory.
    PostgreSQL connection settings come from HAZARDLOOP_POOL_SIZE, HAZARDLOOP_POOL_OVERFLOW,
    HAZARDLOOP_LOCK_TIMEOUT and HAZARDLOOP_CONNECT_TIMEOUT (or the URL's query, e.g.
    `?pool_size=4`); a password not in the URL comes from PGPASSWORD.
    """
    env = os.environ if env is None else env
    raw = value or env.get("HAZARDLOOP_DB") or DEFAULT_DB
    if "://" not in raw:
        # The URL spells the path percent-encoded, as the sqlite:/// branch below reads it back
        # (a '%20' in a file's name is three characters, not a space: found by review).
        return StoreLocation("sqlite", f"sqlite:///{quote(raw)}", file=Path(raw).expanduser())
    parsed = urlparse(raw)
    scheme = parsed.scheme.lower()
    if scheme.split("+", 1)[0] == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
        path = unquote(raw.split("://", 1)[1])
        if path.startswith("/"):
            path = path[1:]
        if not path or path == ":memory:":
            raise StoreError(
                "an in-memory SQLite store keeps nothing: give a file, e.g. sqlite:///hazards.db"
            )
        return StoreLocation("sqlite", raw, file=Path(path).expanduser())
    if scheme in _PG_SCHEMES:
        return _parse_postgres(raw, env)
    raise StoreError(
        f"unknown store URL scheme {parsed.scheme!r}: use a file path, sqlite:///FILE "
        "or postgresql://USER@HOST:PORT/DATABASE"
    )
