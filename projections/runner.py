"""Drives projections through the event log: pull in order, fold, commit rows and position together.

Catching up is a pull loop over the application's notification log (SQLite has no
subscriptions); every report catches up first, so it reflects every stored event. `run` is the
long-lived worker: it follows new events, waiting between polls (woken early by PostgreSQL's
NOTIFY where the store sends one), survives the database going away and coming back, and stops
between chunks when asked. docs/projections.md says why no event is skipped or seen twice.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, Protocol, TypeGuard, TypeVar, cast
from uuid import UUID

import orjson
import structlog
from eventsourcing import persistence as es
from eventsourcing.persistence import (
    ApplicationRecorder,
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    find_id_convertor,
    pass_through_convertor,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic, retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier
from sqlalchemy import Connection, Engine, Index, Table, delete, insert, inspect, select, update
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError as SAInterfaceError,
    OperationalError,
    TimeoutError as SATimeoutError,
)

from loop.application import HazardLoop
from loop.gc_pause import no_cyclic_gc
from projections.cases import stored_time
from projections.helper import (
    HEX_DIGITS,
    Foldable,
    FoldHelper,
    FoldHelperError,
    can_fork,
    usable_cpus,
)
from projections.tables import (
    METADATA,
    VIEW_SQL,
    VIEWS,
    drop_views,
    lock_schema,
    tracking,
    view_names,
)

__all__ = [
    "DEFER_INDEXES_FROM",
    "FOLD_HELPER_FROM",
    "FOLD_HELPER_FROM_PG",
    "REBUILD_CHUNK_SIZE",
    "LagReport",
    "Projection",
    "ProjectionRunner",
    "StaleTracking",
    "StopRequest",
    "is_connection_error",
    "log_reader",
    "reading_mapper",
    "row_decoder",
]


class Projection(Protocol):
    """A read model: its tables, and how a chunk of events changes them.

    A projection that also needs the application (e.g. to read a case's earlier events from the
    event store) defines `attach(app)`; the runner calls it once, when it is built.
    """

    name: str
    tables: tuple[Table, ...]

    def reset(self) -> None:
        """Forget any cached state (after a rollback, or before a rebuild)."""

    def process(self, conn: Connection, items: Sequence[tuple[int, Any]]) -> None:
        """Fold `(position, domain event)` pairs, in log order, into the tables via `conn`."""


#: From this many events behind, a catch-up folds cases on a second core (`ProjectionRunner`).
FOLD_HELPER_FROM = 20_000
#: The same on PostgreSQL, where the server's backend needs the same CPUs: measured on the
#: 2-CPU machine, helpers cost 5-20 % at 62,000 events behind and gained 28 % at 621,000 and
#: 40 % at 6.2M (docs/performance.md, "Fold helpers on PostgreSQL, again").
FOLD_HELPER_FROM_PG = 500_000


def _index_names(conn: Connection) -> set[str]:
    """The names of the indexes in the views' database (its current schema on PostgreSQL)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    elif dialect == "postgresql":
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        found = inspect(conn)
        return {str(i["name"]) for t in found.get_table_names() for i in found.get_indexes(t)}
    return {str(name) for (name,) in conn.exec_driver_sql(sql)}


#: The name of the lock (`lock_schema`) under which the read models' schema is created or
#: changed (not the event store's, nor `create_tables`').
READ_MODELS_LOCK = "hazardloop:read-models"


#: The rights `_grants` reads and `_grant_again` grants (information_schema's names).
_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                         "TRIGGER"})  # fmt: skip


def _grants(conn: Connection) -> list[tuple[str, str, str, bool]]:
    """PostgreSQL: (table or view, grantee, privilege, grantable) for every right granted on the
    read models of the current schema to a role other than their owner; [] elsewhere."""
    if conn.dialect.name != "postgresql":
        return []
    names = [t.name for t in METADATA.sorted_tables] + list(VIEWS.tables)
    found = conn.exec_driver_sql(
        "SELECT g.table_name, g.grantee, g.privilege_type, g.is_grantable = 'YES' "
        "FROM information_schema.role_table_grants g "
        "JOIN pg_class c ON c.relname = g.table_name "
        "AND c.relnamespace = to_regnamespace(g.table_schema) "
        "WHERE g.table_schema = current_schema() AND g.table_name = ANY(%(names)s) "
        "AND g.grantee <> pg_get_userbyid(c.relowner)",
        {"names": names},
    )
    return [(str(t), str(g), str(p), bool(o)) for t, g, p, o in found if str(p) in _PRIVILEGES]


@dataclass(frozen=True)
class _Drift:
    """How the stored read models differ from the code's (`ProjectionRunner._drift`)."""

    existing: set[str]  # the tables stored
    retired: set[str]  # stored tables the code has as views now (`steps`)
    stale: list[Projection]  # projections whose stored columns differ: dropped, rebuilt
    missing_indexes: list[Index]  # of the other projections' stored tables


def _shareable(app: HazardLoop) -> bool:
    """Whether another process can open the application's event store (not an in-memory one)."""
    name = str(app.env.get("SQLITE_DBNAME", ""))
    return ":memory:" not in name and "mode=memory" not in name


#: From this many events behind, a catch-up from zero builds the views' secondary indexes once at
#: its end instead of row by row (`ProjectionRunner`, docs/projections.md "Rebuilding").
DEFER_INDEXES_FROM = 100_000


#: Events per transaction of a catch-up whose fold helpers build their projection from zero over
#: a log of twice as many events or more (`ProjectionRunner.rebuild_chunk_size`;
#: docs/projections.md, "Rebuilding: bigger transactions").
REBUILD_CHUNK_SIZE = 500_000


#: Events per slice of a catch-up under two chunks behind (see `_start_helper`).
FOLD_SLICE_SHORT = 10_000

#: At most this many helpers by default, however many CPUs (each reads its part of every chunk).
MAX_FOLD_HELPERS = 8


class _Helpers:
    """Fold helpers sharing one projection's cases, each folding those of its part."""

    def __init__(self, projection: Foldable, helpers: list[FoldHelper]) -> None:
        self.projection = projection
        self.helpers = helpers

    def start(self) -> None:
        """Fork every helper and wait until each has opened the store: its error if one could
        not (every helper stopped then, none left behind)."""
        try:
            for i, h in enumerate(self.helpers):
                h.start([c for c in (o.connection for o in self.helpers[:i]) if c is not None])
            for h in self.helpers:
                h.ready()
        except BaseException:
            self.stop(kill=True)
            raise

    @property
    def folded(self) -> int:
        return sum(h.folded for h in self.helpers)

    @property
    def folded_last(self) -> int:
        """Events the helpers folded for the last chunk they finished."""
        return sum(h.folded_last for h in self.helpers)

    def whole_chunks(self, chunk_size: int) -> bool:
        """Whether each helper folds a chunk in one slice (one batch per chunk)."""
        return all(h.slice_size >= chunk_size for h in self.helpers)

    def fold(self, first: int, last: int, count: int) -> Iterator[Any]:
        """Every helper starts on the chunk at once; their batches, slice by slice."""
        return _interleave([h.fold(first, last, count) for h in self.helpers])

    def stop(self, *, kill: bool = False) -> None:
        for h in self.helpers:
            h.stop(kill=kill)


def _interleave(streams: list[Iterator[Any]]) -> Iterator[Any]:
    """One item from each stream in turn, until all have ended."""
    while streams:
        for stream in list(streams):
            batch = next(stream, _END)
            if batch is _END:
                streams.remove(stream)
            else:
                yield batch


_END = object()


def _ask(helper: _Helpers, done: int, chunk: Chunk) -> Iterator[Any] | None:
    """Ask the helpers for `chunk` past the position `done` their projection has reached; None
    when it is past the chunk already."""
    if done >= chunk.last:
        return None
    first = max(chunk.start, done + 1)
    return helper.fold(first, chunk.last, chunk.count_from(first))


@dataclass(frozen=True)
class _Ahead:
    """A chunk read, and asked of the fold helpers, before the one before it committed."""

    chunk: Chunk
    batches: Iterator[Any] | None


class StaleTracking(Exception):
    """Raised when another runner advanced a projection first; the chunk is rolled back."""


@dataclass(frozen=True)
class LagReport:
    """Where a projection stands against the head of the event log."""

    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return self.head - self.position


class ProjectionRunner:
    """Catches projections up with the event log, one transaction per chunk."""

    def __init__(
        self,
        app: HazardLoop,
        engine: Engine,
        projections: Sequence[Projection],
        *,
        chunk_size: int = 100_000,
        page_cache_kib: int = 256 * 1024,
        fold_helper_from: int | None = None,
        fold_slice: int | None = None,
        fold_helpers: int | None = None,
        defer_indexes_from: int = DEFER_INDEXES_FROM,
        rebuild_chunk_size: int = REBUILD_CHUNK_SIZE,
    ) -> None:
        self.app = app
        self.engine = engine
        self.projections = list(projections)
        self.chunk_size = chunk_size
        self.page_cache_kib = page_cache_kib
        #: From this many events behind, `catch_up` folds cases in forked helper processes
        #: (projections/helper.py), each chunk in slices of `fold_slice` events (None: the
        #: whole chunk when two chunks behind or more, else FOLD_SLICE_SHORT), the next chunk
        #: while the runner writes one; 0: never. By default FOLD_HELPER_FROM when the event
        #: store is SQLite, FOLD_HELPER_FROM_PG on PostgreSQL: there the server's own
        #: processes share the CPUs, so on the 2-CPU machine measured helpers made a small
        #: catch-up slower and only a long one faster (docs/performance.md).
        sqlite_store = isinstance(app.recorder, SQLiteApplicationRecorder)
        self.fold_helper_from = (
            fold_helper_from
            if fold_helper_from is not None
            else (FOLD_HELPER_FROM if sqlite_store else FOLD_HELPER_FROM_PG)
        )
        self.fold_slice = fold_slice
        #: How many helpers share the cases (by id): as many as the CPUs this process may use
        #: (the runner's own work, reading and writing, is the smaller part), at most 8.
        self.fold_helpers = (
            fold_helpers if fold_helpers is not None else min(usable_cpus(), MAX_FOLD_HELPERS)
        )
        #: From this many events behind, a catch-up that starts a projection from zero drops
        #: the secondary indexes of its tables and builds them once at the end (0: never).
        self.defer_indexes_from = defer_indexes_from
        #: Events per transaction of a catch-up whose fold helpers fold their projection from
        #: zero with at least twice as many events to read (a rebuild, a new store's first
        #: catch-up); fewer transactions write fewer rows: a case whose events span two chunks
        #: has its rows written in each. Any other catch-up: `chunk_size`. 0: always
        #: `chunk_size`.
        self.rebuild_chunk_size = rebuild_chunk_size
        #: The events per transaction of the last catch-up (`chunk_size` before any).
        self.last_chunk_size = chunk_size
        #: Catch-ups that built their indexes at the end, so far.
        self.deferred = 0
        #: Hazard events folded by helpers for this runner so far.
        self.helped = 0
        #: The next chunk, read and given to the helpers before the last one committed.
        self._ahead: _Ahead | None = None
        self.mapper = reading_mapper(app)
        #: Reads the log in rows (`log_reader`), decoded as `self.mapper` decodes them.
        self.read = log_reader(app.recorder)
        self.decode = row_decoder(self.mapper)
        for p in self.projections:
            attach = getattr(p, "attach", None)
            if attach is not None:
                attach(app)  # e.g. to fold a case again from the event store
        #: The positions our last chunk left, while what the projections hold in memory (cases
        #: folded up to there) is known to match the tables; None when nothing is held.
        self._committed: dict[str, int] | None = None
        #: Called with the first and last position of each chunk read, before it is projected.
        self.on_chunk: Callable[[int, int], None] | None = None
        #: What other roles were granted on the read models, read by `_reconcile` before it
        #: dropped any (PostgreSQL; empty when it dropped none).
        self._grants: list[tuple[str, str, str, bool]] = []
        self._prepare_schema()

    def _prepare_schema(self) -> None:
        """Make the stored read models the code's (`_reconcile`, then `create_all`), safely
        beside other processes doing the same (workers started together on a new store): when
        anything is to be made or changed, it is checked again and done under `lock_schema`,
        in one transaction. When nothing is, nothing is locked (a runtime role that may not
        create tables, a SQLite writer holding the lock, are not waited for)."""
        with self.engine.connect() as probe:
            if self._schema_ready(probe):
                return
        with self.engine.begin() as conn:
            lock_schema(conn, READ_MODELS_LOCK)
            self._reconcile(conn)
            METADATA.create_all(conn)
            self._grant_again(conn)  # in the same transaction: no moment without the rights

    def _schema_ready(self, conn: Connection) -> bool:
        """Whether `_reconcile` and `create_all` would find nothing to do."""
        drift = self._drift(conn)
        return (
            not (drift.retired or drift.stale or drift.missing_indexes)
            and set(METADATA.tables) <= drift.existing
            and set(VIEW_SQL) <= view_names(conn)
        )

    def _drift(self, conn: Connection) -> _Drift:
        """How the stored read models differ from the code's (what `_reconcile` mends)."""
        found = inspect(conn)
        existing = set(found.get_table_names())
        stale: list[Projection] = []
        missing: list[Index] = []
        for p in self.projections:
            tables = [t for t in p.tables if t.name in existing]
            if any({c["name"] for c in found.get_columns(t.name)} != set(t.columns.keys())
                   for t in tables):  # fmt: skip
                stale.append(p)
                continue
            for t in tables:
                have = {i["name"] for i in found.get_indexes(t.name)}
                missing += [index for index in t.indexes if index.name not in have]
        return _Drift(existing, existing & set(VIEWS.tables), stale, missing)

    def _grant_again(self, conn: Connection) -> None:
        """Grant again what `_reconcile` found granted on read models it then dropped (those
        `create_all` made again have no grants): each right once more, to the same role. In
        the transaction that dropped and made them, so that the rights are never lost (were
        the process killed between two transactions, the next start would find the schema
        ready and the rights gone; found by review)."""
        if not self._grants:
            return
        quoted = conn.dialect.identifier_preparer.quote_identifier
        now = set(_grants(conn))
        for grant in self._grants:
            if grant in now:
                continue
            name, grantee, privilege, grantable = grant
            role = "PUBLIC" if grantee == "PUBLIC" else quoted(grantee)
            option = " WITH GRANT OPTION" if grantable else ""
            conn.exec_driver_sql(f"GRANT {privilege} ON {quoted(name)} TO {role}{option}")

    def _reconcile(self, conn: Connection) -> None:
        """Make the stored views match the code's tables before anything is read.

        Read models are derived: a projection whose stored columns differ from the code's (an
        older version) loses its tables and position and is rebuilt by the next catch-up; an
        index added since is created in place. The views over the tables are dropped with them
        (`create_all` makes them again), and a table the code no longer has is dropped (`steps`,
        a table before it became a view of `step_segments`). On PostgreSQL, what other roles
        were granted on whatever is dropped is granted again on what is made in its place (a
        runtime role that may not create tables keeps its rights through `db upgrade`). Runs in
        `conn`'s transaction, under `lock_schema`.
        """
        drift = self._drift(conn)
        self._grants = []
        if drift.retired or drift.stale:
            self._grants = _grants(conn)  # before anything they are granted on is dropped
            drop_views(conn)
        for name in sorted(drift.retired):
            conn.exec_driver_sql(f"DROP TABLE {name}")
        for p in drift.stale:
            for t in p.tables:
                t.drop(conn, checkfirst=True)
            if tracking.name in drift.existing:
                conn.execute(delete(tracking).where(tracking.c.name == p.name))
        for index in drift.missing_indexes:
            index.create(conn)

    @property
    def committed(self) -> dict[str, int] | None:
        """The positions this runner last read or committed (None before, or after a failure)."""
        return self._committed

    def positions(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows: dict[str, int] = {
                str(name): int(pos)
                for name, pos in conn.execute(select(tracking.c.name, tracking.c.position))
            }
        return {p.name: int(rows.get(p.name, 0)) for p in self.projections}

    def head(self) -> int:
        """The position of the newest event in the log (0 when empty)."""
        return int(self.app.recorder.max_notification_id() or 0)

    def status(self) -> list[LagReport]:
        head = self.head()
        return [LagReport(name, pos, head) for name, pos in self.positions().items()]

    def catch_up(
        self,
        *,
        until: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Process every event not yet seen (up to `until`); return how many were read."""
        with no_cyclic_gc():
            return self._catch_up(until, progress)

    def _catch_up(self, until: int | None, progress: Callable[[int], None] | None) -> int:
        positions = self.positions()
        # Where the catch-up ends matters only to a projection that starts from zero.
        target = self._target(until) if 0 in positions.values() else 0
        size = self._chunk_size_for(positions, target)  # first: nothing to undo should it fail
        deferred = self._defer_indexes(positions, target)
        configured = self.chunk_size
        self.chunk_size = self.last_chunk_size = size
        try:
            return self._chunks(until, progress)
        finally:
            self.chunk_size = configured
            if deferred:
                self._build_indexes(deferred)
                self.deferred += 1

    def _chunk_size_for(self, positions: dict[str, int], target: int) -> int:
        """Events per transaction for a catch-up from `positions` to `target`:
        `rebuild_chunk_size` when fold helpers will fold their projection from zero with twice
        that or more to read (the case measured: the runner then holds only the helpers'
        batches and the events the other projections take), else `chunk_size`."""
        bigger = self.rebuild_chunk_size
        folded = self._foldable()
        if bigger <= self.chunk_size or folded is None or positions[folded.name] != 0:
            return self.chunk_size
        if target < max(2 * bigger, self.fold_helper_from) or not self._may_help():
            return self.chunk_size
        return bigger

    def _may_help(self) -> bool:
        """Whether fold helpers may run at all: on, possible on this machine, and the store
        one that other processes can open."""
        return bool(self.fold_helper_from) and can_fork() and _shareable(self.app)

    def _defer_indexes(self, positions: dict[str, int], target: int) -> list[Index]:
        """Before a catch-up from `positions` to `target`: the secondary indexes of projections
        that start from zero with a backlog of `defer_indexes_from` events or more, dropped
        (built again at the end). Any other catch-up first builds whatever index is missing
        (one left by a catch-up that was killed, say)."""
        fresh = [p for p in self.projections if positions[p.name] == 0]
        if fresh and not 0 < self.defer_indexes_from <= target:
            fresh = []
        if not fresh:
            self._build_indexes(self._indexes(self.projections))
            return []
        deferred = self._indexes(fresh)
        with self.engine.begin() as conn:
            lock_schema(conn, READ_MODELS_LOCK)  # another runner may drop or build them too
            for index in deferred:
                index.drop(conn, checkfirst=True)
        self._build_indexes(self._indexes(p for p in self.projections if p not in fresh))
        return deferred

    @staticmethod
    def _indexes(projections: Iterable[Projection]) -> list[Index]:
        """The secondary indexes of these projections' tables (not those of a key or of a
        UNIQUE constraint: the writes need them)."""
        return [i for p in projections for t in p.tables for i in t.indexes if not i.unique]

    def _build_indexes(self, indexes: list[Index]) -> None:
        """Create those of `indexes` that the database lacks (one query when none is missing;
        else they are looked for again under `lock_schema`: another runner may build them)."""
        if not indexes:
            return
        with self.engine.connect() as probe:
            have = _index_names(probe)
        if all(index.name in have for index in indexes):
            return
        with self.engine.begin() as conn:
            lock_schema(conn, READ_MODELS_LOCK)
            have = _index_names(conn)
            for index in indexes:
                if index.name not in have:
                    index.create(conn)

    def _chunks(self, until: int | None, progress: Callable[[int], None] | None) -> int:
        seen = 0
        helper: _Helpers | None = None
        try:
            while True:
                if helper is None:
                    helper = self._start_helper(until)
                try:
                    n = self._step(until, helper)
                except StaleTracking:
                    self._forget()
                    self._stop_helper(helper, kill=True)
                    helper = None
                    continue
                except BaseException:
                    self._stop_helper(helper, kill=True)
                    helper = None
                    raise
                if n == 0:
                    return seen
                seen += n
                if progress is not None:
                    progress(n)
        finally:
            self._stop_helper(helper)

    def _target(self, until: int | None) -> int:
        """The position a catch-up to `until` (None: the head of the log) ends at."""
        head = self.head()
        return head if until is None else min(until, head)

    def _foldable(self) -> Foldable | None:
        """The projection a helper may fold for: the first with `fold`, `store_all`, `wants`."""
        for p in self.projections:
            if all(hasattr(p, a) for a in ("fold", "store_all", "wants")):
                return p  # type: ignore[return-value]
        return None

    def _start_helper(self, until: int | None) -> _Helpers | None:
        """A fold helper, when the backlog is worth one and this machine and store allow it."""
        threshold = self.fold_helper_from
        folded = self._foldable()
        if folded is None or not self._may_help():
            return None
        positions = self.positions()
        if self._committed is not None and positions != self._committed:
            self._forget()  # the helper starts with our cases: they must be current
        backlog = self._target(until) - positions[folded.name]
        if backlog < threshold:
            return None
        # Over several chunks the helpers fold the next chunk while the runner writes one,
        # and whole-chunk batches collapse a case's rows once; a backlog of a chunk or two
        # goes in slices, so that the runner writes while the helpers fold (both measured:
        # docs/performance.md, "Fold helpers").
        slice_size = self.fold_slice or (
            self.chunk_size
            if backlog >= 2 * self.chunk_size
            else min(self.chunk_size, FOLD_SLICE_SHORT)
        )
        app, dialect = self.app, self.engine.dialect.name
        k = max(1, self.fold_helpers)
        helpers = _Helpers(
            folded,
            [
                FoldHelper(
                    folded,
                    open_store=lambda: type(app)(env=dict(app.env), policy=app.policy,
                                                 calendar=app.calendar, clock=app.clock),
                    make_reader=lambda a: log_reader(a.recorder),
                    make_decoder=lambda a: row_decoder(reading_mapper(a)),
                    stored_time=lambda: stored_time(dialect),
                    slice_size=slice_size,
                    part=(i, k),
                )
                for i in range(k)
            ],
        )  # fmt: skip
        try:
            helpers.start()
        except FoldHelperError as exc:
            # e.g. the server refuses another connection: fold in this process instead.
            structlog.get_logger("hazardloop.projections").warning(
                "fold helpers unavailable, folding in one process", error=_one_line(exc)
            )
            return None
        return helpers

    def _stop_helper(self, helper: _Helpers | None, *, kill: bool = False) -> None:
        """Stop a helper; the cases it folded are not ours, so ours are forgotten (a case not
        in memory is folded again from the event store when its next event comes)."""
        self._ahead = None
        if helper is not None:
            try:
                self.helped += helper.folded
                helper.stop(kill=kill)
            finally:
                helper.projection.reset()

    def _forget(self) -> None:
        for p in self.projections:
            p.reset()
        self._committed = None
        self._ahead = None

    def _step(self, until: int | None, helper: _Helpers | None = None) -> int:
        ahead, self._ahead = self._ahead, None
        positions = self.positions()
        if self._committed is not None and positions != self._committed:
            # Another runner (a report's catch-up, a rebuild) moved a projection since our last
            # chunk: the cases we hold were folded up to our position, not to the new one.
            if helper is not None:
                raise StaleTracking("a projection was advanced by another runner")
            self._forget()
        self._committed = None
        start = min(positions.values()) + 1
        if until is not None and start > until:
            self._committed = positions
            return 0
        batches: Any = None
        if ahead is not None:
            if helper is None or ahead.chunk.start != start:
                raise StaleTracking("the chunk read ahead is not the next one")
            chunk, batches = ahead.chunk, ahead.batches
        else:
            chunk = self._read_chunk(start, until, helper)
        if not chunk.count:
            self._committed = positions
            return 0
        last = chunk.last
        if self.on_chunk is not None:
            self.on_chunk(start, last)
        decode = self.decode
        folded: Any = helper.projection if helper is not None else None
        following: _Ahead | None = None
        if helper is not None and positions[folded.name] < last:
            if batches is None:  # the helpers start on the chunk now
                batches = _ask(helper, positions[folded.name], chunk)
            # And on the next one as soon as they are done with this: they fold it while this
            # one is written. Should this one fail, the caller stops them (they are ahead).
            following = self._read_ahead(helper, positions, last, until)
            if batches is not None and helper.whole_chunks(self.chunk_size):
                # One batch per helper: wait for them before the transaction, so that SQLite's
                # write lock is held while the rows are written, not while they are folded.
                try:
                    batches = list(batches)
                    self._check_folded(helper, positions, chunk)
                except BaseException:
                    self._forget()
                    raise
            else:
                batches = self._checked(batches, helper, positions, chunk)
        decoded = [(n, decode(o, v, t, b)) for n, o, v, t, b in chunk.rows]
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    # The view B-trees a chunk updates, kept in memory rather than re-read from
                    # the file for each row (SQLite's default page cache is 2 MiB).
                    conn.exec_driver_sql(f"PRAGMA cache_size=-{self.page_cache_kib}")
                for p in self.projections:
                    pos = positions[p.name]
                    if pos >= last:
                        continue
                    # Claim the chunk first: this takes the write lock, and fails if another
                    # runner moved the position since we read it.
                    self._advance(conn, p.name, pos, last)
                    if p is folded:
                        continue
                    items = decoded if pos < start else [x for x in decoded if x[0] > pos]
                    p.process(conn, items)
                if batches is not None:
                    folded.store_all(conn, batches)
        except (StaleTracking, IntegrityError, OperationalError) as exc:
            self._forget()
            if isinstance(exc, OperationalError) and "locked" not in str(exc):
                raise
            raise StaleTracking(str(exc)) from exc
        except BaseException:
            self._forget()
            raise
        self._committed = {name: max(pos, last) for name, pos in positions.items()}
        self._ahead = following
        return chunk.count

    def _check_folded(self, helper: _Helpers, positions: dict[str, int], chunk: Chunk) -> None:
        """The helpers, between them, folded every event of the chunk their projection takes
        (no case in no part, none in two): against SQLite's count by topic."""
        folded: Any = helper.projection
        if positions[folded.name] >= chunk.start:
            return  # the chunk in part only: its counts by topic do not apply
        want = sum(n for topic, n in chunk.topics().items() if folded.wants(topic))
        got = helper.folded_last
        if got != want:
            raise FoldHelperError(
                f"the fold helpers folded {got} events of positions {chunk.start}..{chunk.last}, "
                f"which hold {want} for {folded.name}"
            )

    def _checked(
        self,
        batches: Iterator[Any] | None,
        helper: _Helpers,
        positions: dict[str, int],
        chunk: Chunk,
    ) -> Iterator[Any] | None:
        """`batches`, checked (`_check_folded`) once the last has come."""
        if batches is None:
            return None

        def checked(stream: Iterator[Any]) -> Iterator[Any]:
            yield from stream
            self._check_folded(helper, positions, chunk)

        return checked(batches)

    def _read_chunk(self, start: int, until: int | None, helper: _Helpers | None) -> Chunk:
        """The next chunk of the log. While helpers fold, the rows of only the events the
        other projections take (all of them, if one does not say which: no `wants`)."""
        if helper is not None:
            folded: Any = helper.projection
            wanted = [getattr(p, "wants", None) for p in self.projections if p is not folded]
            if all(w is not None for w in wanted):
                takes = [w for w in wanted if w is not None]
                return read_chunk(
                    self.read, start, self.chunk_size, until, lambda t: any(w(t) for w in takes)
                )
        return full_chunk(start, self.read(start, self.chunk_size, until))

    def _read_ahead(
        self, helper: _Helpers, positions: dict[str, int], last: int, until: int | None
    ) -> _Ahead | None:
        """Read the chunk after `last` (as the next `_step` would, once this chunk commits)
        and ask the helpers to fold it after the current one."""
        after = {name: max(pos, last) for name, pos in positions.items()}
        start = min(after.values()) + 1
        if until is not None and start > until:
            return None
        chunk = self._read_chunk(start, until, helper)
        if not chunk.count:
            return None
        return _Ahead(chunk, _ask(helper, after[helper.projection.name], chunk))

    def run(
        self,
        *,
        interval: float = 0.5,
        stop: StopRequest | None = None,
        log: Any = None,
        max_backoff: float = 5.0,
    ) -> int:
        """Follow the event log until `stop` is requested; return how many events were read.

        Each chunk commits its view rows and the tracking positions in one transaction, as in
        `catch_up`. When the log has nothing new, wait up to `interval` seconds (woken at once
        by the store's NOTIFY on PostgreSQL) and poll again. When the database cannot be
        reached (a restart, a dropped connection), the chunk is rolled back, the connections
        are dropped, and the worker retries with a growing back-off (up to `max_backoff`
        seconds), logging each attempt; it resumes from the positions in the tracking table.
        A stop request is honoured between chunks; a second one (`StopRequest.install`) ends
        the current chunk at once, rolled back.
        """
        stop = stop if stop is not None else StopRequest()
        log = log if log is not None else structlog.get_logger("hazardloop.projections")
        waiter = _waiter_for(self.app, interval)
        self.on_chunk = lambda first, last: log.debug("chunk read", first=first, last=last)
        log.info("projection worker started", chunk_size=self.chunk_size, interval=interval,
                 wake_up=waiter.kind, projections=[p.name for p in self.projections])  # fmt: skip
        seen = failures = 0
        down_since = 0.0
        stop.abortable = True
        try:
            while not stop.requested:
                try:
                    with no_cyclic_gc():
                        n = self._step(None)
                except StaleTracking:
                    self._forget()
                    continue
                except Exception as exc:
                    if not is_connection_error(exc):
                        log.error("projection failed", error=_one_line(exc))
                        raise
                    if failures == 0:
                        down_since = time.monotonic()
                    failures += 1
                    delay = min(max_backoff, 0.1 * 2 ** min(failures - 1, 16))
                    log.warning("store unreachable, reconnecting", attempt=failures,
                                retry_in=round(delay, 2), error=_one_line(exc))  # fmt: skip
                    self._drop_connections()
                    waiter.reset()
                    stop.wait(delay)
                    continue
                if failures:
                    log.info("reconnected", attempts=failures,
                             down_seconds=round(time.monotonic() - down_since, 3),
                             positions=self._committed)  # fmt: skip
                    failures = 0
                if n:
                    seen += n
                    log.debug("projected", events=n, positions=self._committed)
                    continue
                waiter.wait(stop)
        except StopNow:
            log.info("stopped mid-chunk: the chunk was rolled back")
        finally:
            stop.abortable = False
            waiter.close()
            self.on_chunk = None
        log.info("projection worker stopped", events=seen, positions=self._committed)
        return seen

    def _drop_connections(self) -> None:
        """Forget pooled connections that a database restart has broken."""
        self._forget()
        with contextlib.suppress(Exception):
            self.engine.dispose()
        pool = getattr(getattr(self.app.recorder, "datastore", None), "pool", None)
        check = getattr(pool, "check", None)
        if check is not None:
            with contextlib.suppress(Exception):
                check()  # psycopg_pool: test idle connections, replace the broken ones

    @staticmethod
    def _advance(conn: Connection, name: str, old: int, new: int) -> None:
        if old == 0:
            exists = conn.execute(
                select(tracking.c.position).where(tracking.c.name == name)
            ).first()
            if exists is None:
                conn.execute(insert(tracking).values(name=name, position=new))
                return
        result = conn.execute(
            update(tracking)
            .where(tracking.c.name == name, tracking.c.position == old)
            .values(position=new)
        )
        if result.rowcount != 1:
            raise StaleTracking(f"projection {name} was advanced by another runner")

    def rebuild(self, names: Sequence[str] | None = None) -> int:
        """Drop the named projections' rows and positions, then catch up from zero."""
        chosen = [p for p in self.projections if names is None or p.name in names]
        with self.engine.begin() as conn:
            for p in chosen:
                for table in p.tables:
                    conn.execute(delete(table))
                conn.execute(delete(tracking).where(tracking.c.name == p.name))
                p.reset()
        return self.catch_up()


class StopNow(BaseException):
    """Raised by a second stop signal to abandon the chunk in progress (rolled back)."""


class StopRequest:
    """Asks a running worker to stop: set by a signal handler, polled between chunks."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        #: Whether a second request may abandon work in progress (set while a worker runs).
        self.abortable = False

    def set(self) -> None:
        self.requested = True

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, returning early once a stop is requested."""
        end = time.monotonic() + seconds
        while not self.requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def install(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Handle `signals` in this (main) thread: the first asks to stop after the current
        chunk, a second abandons the chunk (rolled back) by raising `StopNow`."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested and self.abortable:
                raise StopNow
            self.signal = signum
            self.set()

        for s in signals:
            signal.signal(s, handler)


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or the connection broke (worth
    retrying after a pause), as raised by SQLAlchemy, eventsourcing or the drivers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _TRANSIENT):
            return True
        if type(current).__module__.startswith("psycopg") and type(current).__name__ in (
            "OperationalError", "InterfaceError", "PoolTimeout", "AdminShutdown",
            "CannotConnectNow", "CrashShutdown",
        ):  # fmt: skip
            return True
        current = current.__cause__ or current.__context__
    return False


_TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    SAInterfaceError,
    SATimeoutError,
    es.OperationalError,
    es.InterfaceError,
    ConnectionError,
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


class _Sleeper:
    """Waits between polls by sleeping: SQLite, or when NOTIFY cannot be listened to."""

    kind = "poll"

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def wait(self, stop: StopRequest) -> None:
        stop.wait(self.interval)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Listener(_Sleeper):
    """Waits for PostgreSQL's NOTIFY, which eventsourcing's recorder sends in every insert
    transaction (delivered on commit), or `interval` at most: a notification is only a hint
    to poll now, so one lost while reconnecting costs at most one interval."""

    kind = "listen/notify"

    def __init__(self, interval: float, channel: str, connect: Callable[[], Any]) -> None:
        super().__init__(interval)
        self.channel = channel
        self.connect = connect
        self.conn: Any = None

    def wait(self, stop: StopRequest) -> None:
        if self.conn is None:
            try:
                self.conn = self.connect()
                self.conn.execute(f'LISTEN "{self.channel}"')
            except Exception:
                self.reset()
                stop.wait(self.interval)
            # Listening now (or not at all): poll once more before waiting, for whatever
            # committed between the last poll and the LISTEN, whose notification never came.
            return
        end = time.monotonic() + self.interval
        try:
            while not stop.requested:
                left = end - time.monotonic()
                if left <= 0:
                    return
                for _ in self.conn.notifies(timeout=min(left, 0.2), stop_after=1):
                    return
        except Exception:
            self.reset()

    def reset(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def close(self) -> None:
        self.reset()


def _waiter_for(app: HazardLoop, interval: float) -> _Sleeper:
    """A NOTIFY listener when the event store is eventsourcing's PostgreSQL recorder."""
    recorder = app.recorder
    channel = getattr(recorder, "channel_name", None)
    pool = getattr(getattr(recorder, "datastore", None), "pool", None)
    kwargs = getattr(pool, "kwargs", None)
    if not isinstance(channel, str) or not isinstance(kwargs, dict):
        return _Sleeper(interval)
    params = {k: v for k, v in kwargs.items() if k != "row_factory"}

    def connect() -> Any:
        import psycopg

        return psycopg.connect(autocommit=True, connect_timeout=5, **params)

    return _Listener(interval, channel, connect)


class _OrjsonDecoding(Transcoder):
    """Decodes what the application's `JSONTranscoder` wrote, parsing with orjson (2-3x faster).

    The values are the same: standard JSON parses to the same Python values with `json` and
    orjson, and each `{"_type_": name, "_data_": data}` object is turned back, innermost first,
    by the application's own registered transcodings, as `JSONTranscoder`'s object hook does
    (the library's ISO date-time transcoding is its `datetime.fromisoformat`, called directly).
    What orjson refuses (NaN, integers past 64 bits) goes to the application's transcoder.
    """

    def __init__(self, transcoder: JSONTranscoder) -> None:
        self.transcoder = transcoder

    def encode(self, obj: Any) -> bytes:
        return self.transcoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self.transcoder.decode(data)
        return self._revive(parsed)

    def _revive(self, obj: Any) -> Any:
        """Turn transcoded objects back, innermost first (what the object hook does)."""
        if type(obj) is dict:
            names = self.transcoder.names
            for key, value in obj.items():
                kind = type(value)
                if kind is dict:
                    if (
                        len(value) == 2
                        and type(data := value.get("_data_")) is str
                        and ("_type_" in value)
                    ):  # a leaf: a date-time…, as `_decode_obj` turns it back
                        transcoding = names.get(value["_type_"])
                        if type(transcoding) is DatetimeAsISO:
                            obj[key] = _fromisoformat(data)
                        elif transcoding is not None:
                            obj[key] = transcoding.decode(data)
                        else:
                            obj[key] = self.transcoder._decode_obj(value)  # not registered
                    else:
                        obj[key] = self._revive(value)
                elif kind is list:
                    obj[key] = self._revive(value)
            if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
                return self.transcoder._decode_obj(obj)
            return obj
        for i, value in enumerate(obj):
            kind = type(value)
            if kind is dict or kind is list:
                obj[i] = self._revive(value)
        return obj


_fromisoformat = datetime.fromisoformat


def _decodes_as_the_library(transcoder: Transcoder) -> TypeGuard[JSONTranscoder]:
    """Whether `transcoder` decodes as eventsourcing's `JSONTranscoder` (it may encode its own
    way, as `loop.encoding.FastJSONTranscoder` does, to the same bytes)."""
    return isinstance(transcoder, JSONTranscoder) and all(
        getattr(type(transcoder), name) is getattr(JSONTranscoder, name)
        for name in ("__init__", "decode", "_decode_obj")
    )


def reading_mapper(app: HazardLoop) -> Mapper[Any]:
    """The application's mapper, or the same with orjson parsing when it decodes as the stock
    JSON one."""
    mapper = app.mapper
    transcoder = mapper.transcoder
    if type(mapper) is Mapper and _decodes_as_the_library(transcoder):
        return Mapper(_OrjsonDecoding(transcoder), mapper.compressor, mapper.cipher)
    return mapper


#: Turns a row's (originator_id, originator_version, topic, state) into its domain event.
RowDecoder = Callable[[Any, int, str, bytes], Any]


def row_decoder(mapper: Mapper[Any]) -> RowDecoder:
    """`mapper.to_domain_event` for rows (`log_reader`).

    The library's `Mapper`: the same steps, with what depends only on the topic (the class, its
    version, how its originator ids are converted) looked up once per topic; a failure is the
    mapper's own (it is asked again, and raises its `MapperDeserialisationError`). Any other
    mapper: its own `to_domain_event`.
    """
    if type(mapper) is not Mapper:
        to_event = mapper.to_domain_event
        return lambda oid, version, topic, state: to_event(StoredEvent(oid, version, topic, state))
    cipher, compressor, transcoder = mapper.cipher, mapper.compressor, mapper.transcoder
    transcode = transcoder.decode
    #: topic -> (class, class_version, originator id type, id conversion or None)
    topics: dict[str, tuple[type, int, type, Callable[[Any], Any] | None]] = {}
    new = object.__new__
    set_dict = object.__setattr__

    def learn(topic: str, oid: Any) -> tuple[type, int, type, Callable[[Any], Any] | None]:
        cls = resolve_topic(topic)
        convert = find_id_convertor(cls, type(oid))  # type: ignore[arg-type]
        conversion = None if convert is pass_through_convertor else convert
        known = topics[topic] = (cls, getattr(cls, "class_version", 1), type(oid), conversion)
        return known

    def decode(oid: Any, version: int, topic: str, state: bytes) -> Any:
        known = topics.get(topic)
        if known is None or type(oid) is not known[2]:
            known = learn(topic, oid)
        cls, class_version, _, convert = known
        try:
            data = state
            if cipher:
                data = cipher.decrypt(data)
            if compressor:
                data = compressor.decompress(data)
            event_state: dict[str, Any] = transcode(data)
        except Exception:
            return mapper.to_domain_event(StoredEvent(oid, version, topic, state))
        event_state["originator_id"] = oid if convert is None else convert(oid)
        event_state["originator_version"] = version
        if "class_version" in event_state or class_version > 1:
            from_version = event_state.pop("class_version", 1)
            while from_version < class_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
                from_version += 1
        event: Any = new(cls)
        set_dict(event, "__dict__", event_state)
        return event

    return decode


# ---------------------------------------------------------------------------- reading the log
#
# `recorder.select_notifications` builds a frozen `Notification` dataclass (and, on SQLite, a
# `UUID`) for every row it reads: 6-7 µs per event here, where the query itself costs about
# 2 µs. The runner reads every event of the log in order, so it reads through `log_reader`
# instead: the same rows of the same table, in the same order, with the same bounds and the same
# visibility, as plain tuples `(position, originator_id, originator_version, topic, state)`, each
# value what `select_notifications` puts in the `Notification`'s field of that name.

#: (position, originator_id, originator_version, topic, state), as `select_notifications` has them.
Row = tuple[int, Any, int, str, bytes]
#: Reads rows of the log: `reader(start, limit, stop)`.
LogReader = Callable[[int, int, "int | None"], Sequence[Row]]


def log_reader(recorder: ApplicationRecorder) -> LogReader:
    """How to read the log of `recorder` in rows: positions `start <= position <= stop` (when
    a stop is given), ascending, at most `limit` of them.

    - **SQLite** (eventsourcing's `SQLiteApplicationRecorder`, ours included): the library's
      statement in the library's read transaction (`BEGIN`, `SELECT`, rollback: one snapshot),
      on the cursor's plain tuples; each originator id made a `UUID` once per read, as the
      recorder converts it (`originator_id_type`).
    - **PostgreSQL** (eventsourcing's `PostgresApplicationRecorder`, ours included): the
      library's statement on a connection of its pool (autocommit: one READ COMMITTED
      statement, which sees every transaction committed before it began, as
      `select_notifications` does; neither takes a lock), prepared, with plain tuples, retried
      as the library retries it.
    - Any other recorder, or one whose class reads notifications its own way (it overrides
      `select_notifications`): `select_notifications` itself, its notifications made tuples.
    """
    kind = type(recorder)
    if (
        isinstance(recorder, SQLiteApplicationRecorder)
        and kind.select_notifications is SQLiteApplicationRecorder.select_notifications
    ):
        return _SQLiteReader(recorder)
    if (
        isinstance(recorder, PostgresApplicationRecorder)
        and kind.select_notifications is PostgresApplicationRecorder.select_notifications
    ):
        return _PostgresReader(recorder)
    return _NotificationReader(recorder)


class _NotificationReader:
    """Any recorder: its own `select_notifications`, in rows."""

    kind = "select_notifications"

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder

    def __call__(self, start: int, limit: int, stop: int | None) -> list[Row]:
        notes = self.recorder.select_notifications(start=start, limit=limit, stop=stop)
        return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]


_S = TypeVar("_S")


def _bounded(
    statement: _S, statement_to: _S, start: int, limit: int, stop: int | None
) -> tuple[_S, tuple[int, ...]]:
    """The statement for `start <= position (<= stop)`, `limit` rows, and its parameters."""
    if stop is None:
        return statement, (start, limit)
    return statement_to, (start, stop, limit)


class _SQLiteReader:
    """eventsourcing's SQLite application recorder: its statement, plain tuples."""

    kind = "sqlite"

    def __init__(self, recorder: SQLiteApplicationRecorder) -> None:
        self.recorder = recorder
        table = recorder.events_table_name
        columns = "rowid, originator_id, originator_version, topic, state"
        # The library's own statement, with the columns named in the order of a Row.
        rows = f"SELECT {columns} FROM {table} WHERE rowid>=? "
        self.statement = rows + "ORDER BY rowid LIMIT ?"
        self.statement_to = rows + "AND rowid<=? ORDER BY rowid LIMIT ?"
        # A chunk's extent, counted by SQLite (`chunk`): what a full read would have returned.
        span = f"SELECT rowid FROM {table} WHERE rowid>=? "
        self.span = f"SELECT count(*), max(rowid) FROM ({span}ORDER BY rowid LIMIT ?)"
        self.span_to = (
            f"SELECT count(*), max(rowid) FROM ({span}AND rowid<=? ORDER BY rowid LIMIT ?)"
        )
        self.topics = (
            f"SELECT topic, count(*) FROM {table} WHERE rowid BETWEEN ? AND ? GROUP BY topic"
        )
        self.of_topics = (
            f"SELECT {columns} FROM {table} WHERE rowid BETWEEN ? AND ? AND topic IN ({{}}) "
            "ORDER BY rowid"
        )
        self.counting = f"SELECT count(*) FROM {table} WHERE rowid BETWEEN ? AND ?"
        # A part of the cases (`part`): the id's last byte, from its text, as `case_part` has it.
        digit = f"(instr('{HEX_DIGITS}', lower(substr(originator_id, {{}}, 1))) - 1)"
        self.of_part = (
            f"SELECT {columns} FROM {table} WHERE rowid>=? AND rowid<=? "
            f"AND ({digit.format(-2)} * 16 + {digit.format(-1)}) % ? = ? ORDER BY rowid LIMIT ?"
        )

    def __call__(self, start: int, limit: int, stop: int | None) -> list[Row]:
        statement, params = _bounded(self.statement, self.statement_to, start, limit, stop)
        return self._rows(statement, params)

    def chunk(
        self, start: int, limit: int, stop: int | None, wanted: Callable[[str], bool]
    ) -> Chunk:
        """The chunk `self(start, limit, stop)` would read, with the rows of only the topics
        `wanted` takes: SQLite counts the others and leaves them where they are."""
        statement, params = _bounded(self.span, self.span_to, start, limit, stop)
        with self.recorder.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None
            count, last = cursor.execute(statement, params).fetchone()
            if not count:
                return Chunk(start, 0, 0, [], self.count, dict)
            counts = {str(t): int(n) for t, n in cursor.execute(self.topics, (start, last))}
        topics = [t for t in counts if wanted(t)]
        rows: list[Row] = []
        if topics:  # another snapshot: these positions are committed and never change
            marks = ", ".join("?" * len(topics))
            rows = self._rows(self.of_topics.format(marks), (start, last, *topics))
        return Chunk(start, int(last), int(count), rows, self.count, lambda: counts)

    def count(self, start: int, stop: int) -> int:
        """How many events lie at positions `start`..`stop`."""
        with self.recorder.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None
            return int(cursor.execute(self.counting, (start, stop)).fetchone()[0])

    @property
    def parts(self) -> bool:
        """Whether `part` can be used: the store's ids are UUIDs (as text: 32 hex digits and
        dashes), so that every id falls in exactly one part."""
        return self.recorder.datastore.originator_id_type == "uuid"

    def part(self, start: int, limit: int, stop: int, i: int, k: int) -> list[Row]:
        """Like `self(start, limit, stop)`, only the events of cases in part `i` of `k`
        (`projections.helper.case_part`): SQLite skips the others."""
        return self._rows(self.of_part, (start, stop, k, i, limit))

    def _rows(self, statement: str, params: tuple[Any, ...]) -> list[Row]:
        # The library's read transaction: BEGIN, the SELECT, rollback (one snapshot), with its
        # errors turned into eventsourcing's, as in `select_notifications`.
        with self.recorder.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # tuples, not sqlite3.Row
            cursor.execute(statement, params)
            rows: list[Row] = cursor.fetchall()
        if self.recorder.datastore.originator_id_type != "uuid":
            return rows
        # As `convert_originator_id`: a UUID of the stored text, made once per case and read.
        uuids: dict[str, UUID] = {}
        out: list[Row] = []
        append = out.append
        for position, originator_id, version, topic, state in rows:
            uuid = uuids.get(originator_id)
            if uuid is None:
                uuid = uuids[originator_id] = UUID(originator_id)
            append((position, uuid, version, topic, state))
        return out


@dataclass(frozen=True)
class Chunk:
    """What a read of the log from `start` found: `count` events up to position `last`, and
    `rows`, those of them a `wanted` filter took; `count_of(first, last)` counts a part, and
    `topics()` the chunk's events by topic."""

    start: int
    last: int
    count: int
    rows: Sequence[Row]
    count_of: Callable[[int, int], int]
    topics: Callable[[], dict[str, int]]

    def count_from(self, first: int) -> int:
        """The events at positions `first`..`last`."""
        return self.count if first <= self.start else self.count_of(first, self.last)


def read_chunk(
    reader: LogReader, start: int, limit: int, stop: int | None, wanted: Callable[[str], bool]
) -> Chunk:
    """`reader.chunk` where the reader has one; else a full read, filtered here."""
    chunk = getattr(reader, "chunk", None)
    if chunk is not None:
        return cast(Chunk, chunk(start, limit, stop, wanted))
    rows = reader(start, limit, stop)
    chunk = full_chunk(start, rows)
    return Chunk(chunk.start, chunk.last, chunk.count, [r for r in rows if wanted(r[3])],
                 chunk.count_of, chunk.topics)  # fmt: skip


def full_chunk(start: int, rows: Sequence[Row]) -> Chunk:
    """The chunk of `rows`, every one of them (read from `start`)."""
    if not rows:
        return Chunk(start, 0, 0, [], lambda a, b: 0, dict)
    return Chunk(
        start, rows[-1][0], len(rows), rows,
        lambda a, b: sum(1 for r in rows if a <= r[0] <= b),
        lambda: dict(Counter(r[3] for r in rows)),
    )  # fmt: skip


class _PostgresReader:
    """eventsourcing's PostgreSQL application recorder: its statement, plain tuples."""

    kind = "postgres"

    def __init__(self, recorder: PostgresApplicationRecorder) -> None:
        self.recorder = recorder
        table = Composed(
            [
                Identifier(recorder.datastore.schema),
                SQL("."),
                Identifier(recorder.events_table_name),
            ]
        )
        rows = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {table} WHERE notification_id>=%s"
        ).format(table=table)
        self.statement = rows + SQL(" ORDER BY notification_id LIMIT %s")
        self.statement_to = rows + SQL(" AND notification_id<=%s ORDER BY notification_id LIMIT %s")
        # A chunk's extent by topic (`chunk`), in one statement: what a full read would return.
        span = SQL("SELECT notification_id, topic FROM {table} WHERE notification_id>=%s").format(
            table=table
        )
        by_topic = SQL("SELECT topic, count(*), max(notification_id) FROM ({}) s GROUP BY topic")
        self.span = by_topic.format(span + SQL(" ORDER BY notification_id LIMIT %s"))
        self.span_to = by_topic.format(
            span + SQL(" AND notification_id<=%s ORDER BY notification_id LIMIT %s")
        )
        between = SQL(" FROM {table} WHERE notification_id BETWEEN %s AND %s").format(table=table)
        self.of_topics = (
            SQL("SELECT notification_id, originator_id, originator_version, topic, state")
            + between
            + SQL(" AND topic = ANY(%s) ORDER BY notification_id")
        )
        self.counting = SQL("SELECT count(*)") + between
        # A part of the cases (`part`): the id's last byte, as `case_part` has it.
        self.of_part = (
            SQL("SELECT notification_id, originator_id, originator_version, topic, state")
            + between
            + SQL(
                " AND get_byte(uuid_send(originator_id), 15) %% %s = %s "
                "ORDER BY notification_id LIMIT %s"
            )
        )

    def __call__(self, start: int, limit: int, stop: int | None) -> list[Row]:
        statement, params = _bounded(self.statement, self.statement_to, start, limit, stop)
        return self._rows(statement, params)

    def chunk(
        self, start: int, limit: int, stop: int | None, wanted: Callable[[str], bool]
    ) -> Chunk:
        """The chunk `self(start, limit, stop)` would read, with the rows of only the topics
        `wanted` takes: the server counts the others and keeps them (a fold helper reads them).

        Two statements, as on SQLite: positions up to the chunk's last are committed and never
        change (a writer numbers its events under the table's lock, held until it commits:
        `adapters.store.HazardLoopPostgresRecorder`), so the second sees what the first counted.
        """
        statement, params = _bounded(self.span, self.span_to, start, limit, stop)
        spans = self._fetch(statement, params)
        if not spans:
            return Chunk(start, 0, 0, [], self.count, dict)
        counts = {str(t): int(n) for t, n, _ in spans}
        last = max(int(m) for _, _, m in spans)
        topics = [t for t in counts if wanted(t)]
        rows: list[Row] = []
        if topics:
            rows = self._rows(self.of_topics, (start, last, topics))
        return Chunk(start, last, sum(counts.values()), rows, self.count, lambda: counts)

    def count(self, start: int, stop: int) -> int:
        """How many events lie at positions `start`..`stop`."""
        return int(self._fetch(self.counting, (start, stop))[0][0])

    @property
    def parts(self) -> bool:
        """Whether `part` can be used: the store's ids are of PostgreSQL's `uuid` type."""
        return self.recorder.datastore.originator_id_type == "uuid"

    def part(self, start: int, limit: int, stop: int, i: int, k: int) -> list[Row]:
        """Like `self(start, limit, stop)`, only the events of cases in part `i` of `k`
        (`projections.helper.case_part`): the server skips the others."""
        return self._rows(self.of_part, (start, stop, k, i, limit))

    def _rows(self, statement: Composed, params: tuple[Any, ...]) -> list[Row]:
        return [(p, o, v, t, bytes(s)) for p, o, v, t, s in self._fetch(statement, params)]

    @retry((es.InterfaceError, es.OperationalError), max_attempts=10, wait=0.2)
    def _fetch(self, statement: Composed, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        # A connection of the library's pool (autocommit, its errors turned into
        # eventsourcing's), as in `select_notifications`.
        with (
            self.recorder.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            curs.execute(statement, params, prepare=True)
            return curs.fetchall()
