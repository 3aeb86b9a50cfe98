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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import psycopg
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import resolve_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier
from sqlalchemy.engine import URL

# Defined in adapters.store_sqlite (the bulk writer imports that alone), and importable from here,
# where they were defined before.
from adapters.store_sqlite import (
    _CASE_CHAIN_SQLITE as _CASE_CHAIN_SQLITE,
    _POSITION_TIME as _POSITION_TIME,
    _SEP as _SEP,
    CASE_CHAIN_ROWS_SQLITE as CASE_CHAIN_ROWS_SQLITE,
    CASE_EVENT_HASH_SQLITE as CASE_EVENT_HASH_SQLITE,
    CHAIN_FORMAT as CHAIN_FORMAT,
    CHAIN_TABLE as CHAIN_TABLE,
    EVENTS_TABLE as EVENTS_TABLE,
    GENESIS as GENESIS,
    HEAD_TABLE as HEAD_TABLE,
    IDEMPOTENCY_TABLE as IDEMPOTENCY_TABLE,
    RETIRED_SQLITE_INDEXES as RETIRED_SQLITE_INDEXES,
    CaseLookup as CaseLookup,
    ChainRow as ChainRow,
    HazardLoopSQLiteFactory as HazardLoopSQLiteFactory,
    HazardLoopSQLiteRecorder as HazardLoopSQLiteRecorder,
    RecordTime as RecordTime,
    _Chainer as _Chainer,
    _key as _key,
    chain_format_error as chain_format_error,
    chain_link as chain_link,
    frame as frame,
    from_micros as from_micros,
    to_micros as to_micros,
    use_wal as use_wal,
)
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

#: The advisory lock under which a PostgreSQL store's tables are created (any fixed 64-bit key).
SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"hazardloop:schema").digest()[:8], "big", signed=True)
#: The key under which the application's environment keeps the store's URL (see `location_of`).
STORE_URL_KEY = "STORE_URL"
#: A case's chain rows in version order on PostgreSQL, whose chain table keeps its own index on
#: the case (SQLite: `CASE_CHAIN_ROWS_SQLITE`).
CASE_CHAIN_ROWS_POSTGRES = (
    "SELECT originator_version, position, recorded_at, log_hash "
    f"FROM {CHAIN_TABLE} WHERE originator_id = :key ORDER BY originator_version"
)


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
