"""The `cases` projection: the ledger (隐患台账) and step segments (step occurrences are a view).

Each case is folded in memory with the domain's own event `apply` methods (never a second copy
of the rules). A chunk's changes are collapsed to the last version of each row and written as
upserts keyed by primary key, so replaying a chunk after a crash writes the same rows again.
A case that is not in memory (evicted, closed, or a fresh process) is folded again from its own
events in the event store, up to the one before its first event in the chunk: the same fold as
the incremental one, so a resumed projection equals a rebuilt one. See docs/performance.md.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import psycopg
from eventsourcing.utils import resolve_topic
from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.dialects import postgresql, sqlite

from loop.hazard import Hazard
from loop.lifecycle import Status
from projections.tables import ledger, step_segments, stored_moment

__all__ = [
    "HANDLING_EVENTS",
    "Batch",
    "CasesProjection",
    "EventSource",
    "stored_time",
    "topic_filter",
    "upsert",
]

#: The events that count as a step being handled (the ball moved on because its holder acted).
HANDLING_EVENTS: dict[str, frozenset[str]] = {
    "report": frozenset({"Reported", "Rejected"}),
    "assign": frozenset({"Assigned", "Rejected"}),
    "rectify": frozenset({"Rectified"}),
    "verify": frozenset({"Verified", "VerificationFailed"}),
    "close": frozenset({"Closed"}),
}

_NO_DEADLINE: dict[str, Any] = {}

#: Cases in these states take no event but `reopen`: they leave the cache after their chunk.
_TERMINAL = frozenset({Status.CLOSED, Status.REJECTED})


def upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, replacing any with the same primary key (SQLite and PostgreSQL)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    conn.execute(stmt, rows)


def utc_text(moment: datetime) -> str:
    """An aware date-time as the fast writer hands it over: 'YYYY-MM-DD HH:MM:SS.ffffff' UTC.

    On SQLite the same text SQLAlchemy's DATETIME writes after `UTCDateTime` drops the zone; on
    PostgreSQL the text its naive UTC `timestamp` is read from. Made without SQLAlchemy's
    per-value bind processing (`_Writer` checks that the two agree).
    """
    if moment.tzinfo is None:
        raise ValueError("read models store aware date-times only")
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


_SQL: dict[tuple[str, str, frozenset[str], str], str] = {}


#: How each dialect the fast writer knows stores a date-time, and its driver's placeholder. On
#: PostgreSQL a `UTCDateTime` is a naive UTC `timestamp`; the fast writer hands it over as the
#: text PostgreSQL reads it from (the same text as SQLite's): COPY writes text as it is, and a
#: fold helper sends rows of text by marshal, a third of pickle's cost both ways, where
#: date-time objects had to go by pickle (docs/performance.md, "Date-times as text on
#: PostgreSQL"). `executemany` binds it untyped, so PostgreSQL reads it as the column's type.
_STORED: dict[str, tuple[Callable[[datetime], Any], str]] = {
    "sqlite": (utc_text, "?"),
    "postgresql": (utc_text, "%s"),
}


def as_text(stored: Any) -> Any:
    """A stored date-time as the fast writer hands it over: SQLAlchemy's naive `datetime` on
    PostgreSQL as its text, SQLite's text as it is."""
    return stored.isoformat(" ", "microseconds") if isinstance(stored, datetime) else stored


def _same_as_sqlalchemy(dialect: Dialect) -> bool:
    """Whether the fast writer still stores date-times exactly as `UTCDateTime` would."""
    stored = _STORED[dialect.name][0]
    samples = (datetime(2026, 7, 1, 8, 42, tzinfo=UTC), datetime.now(UTC),
               datetime.fromisoformat("2026-12-31T23:59:59.5+08:00"))  # fmt: skip
    return all(stored(s) == as_text(stored_moment(s, dialect)) for s in samples)


def _as_given(moment: datetime | None) -> Any:
    return moment


def stored_time(dialect: str) -> Callable[[datetime | None], Any]:
    """A date-time as `dialect` stores it, memoised by value: a chunk's rows share their moments,
    and many cases share a deadline (one memo per chunk: it holds every moment it has seen).
    Any dialect the fast writer does not know gets the date-time as it is, for SQLAlchemy to
    bind."""
    if dialect not in _STORED:
        return _as_given
    stored = _STORED[dialect][0]
    # Equal aware date-times are the same instant, so they are stored alike; a datetime caches
    # its hash, so a lookup costs less than telling objects apart by id. Except: two date-times
    # of one zone compare by their wall clocks, ignoring `fold`, so the second of a repeated
    # hour (fold=1) would find the first's value: those are converted every time, never memoised.
    memo: dict[datetime, Any] = {}

    def time(moment: datetime | None) -> Any:
        if moment is None:
            return None
        if moment.fold:
            return stored(moment)
        value = memo.get(moment)
        if value is None:
            value = memo[moment] = stored(moment)
        return value

    return time


class _Writer:
    """Writes collapsed rows: plain sequences through the driver (SQLite's sqlite3, PostgreSQL's
    psycopg), inside the transaction SQLAlchemy began; SQLAlchemy Core for any other dialect."""

    checked: set[str] = set()  # noqa: RUF012 (one check per dialect and process)

    def __init__(self, conn: Connection) -> None:
        self.dialect = conn.dialect.name
        self.fast = self.dialect in _STORED
        self.time: Callable[[datetime | None], Any] = _as_given
        #: Tables loaded through a temporary table in this chunk's transaction (PostgreSQL).
        self.loaded: set[str] = set()
        #: Whether temporary tables may be created (PostgreSQL; None: not asked yet).
        self.temporary: bool | None = None
        if not self.fast:
            return
        if self.dialect not in _Writer.checked:
            if not _same_as_sqlalchemy(conn.dialect):
                raise RuntimeError(
                    f"SQLAlchemy stores date-times differently on {self.dialect}: fix _STORED"
                )
            _Writer.checked.add(self.dialect)
        self.time = stored_time(self.dialect)

    def _may_use_temporary_tables(self, driver: Any) -> bool:
        """Whether our role may create temporary tables here (PostgreSQL's TEMP privilege, which
        a locked-down database may withhold): asked once per chunk, when first needed."""
        if self.temporary is None:
            with driver.cursor() as cur:
                found = cur.execute(
                    "SELECT has_database_privilege(current_database(), 'TEMP')"
                ).fetchone()
            self.temporary = bool(found and found[0])
        return self.temporary

    def upsert(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[Sequence[Any]],
        fixed: frozenset[str] = frozenset(),
        new: Sequence[Sequence[Any]] = (),
    ) -> None:
        """Upsert rows given as sequences in the table's column order.

        `fixed` names columns a row never changes once written: an existing row keeps them (so
        SQLite leaves their indexes alone). `new` are more rows, which no earlier transaction
        wrote: PostgreSQL copies them straight in (upserted after all, should one be there).
        """
        if not rows and not new:
            return
        if not self.fast:
            names = [c.name for c in table.columns]
            every = [*rows, *new]
            upsert(conn, table, [dict(zip(names, row, strict=True)) for row in every])
            return
        # The driver's own connection, inside the transaction SQLAlchemy began: rows go as they
        # are (lists), without SQLAlchemy's per-row parameter handling.
        driver: Any = conn.connection.driver_connection
        assert driver is not None
        values = _upsert_sql(self.dialect, table, fixed, "VALUES")
        if self.dialect == "sqlite":
            driver.executemany(values, [*rows, *new])
            return
        if len(rows) + len(new) >= COPY_FROM:
            if new and not _copy_insert(driver, table, new):
                rows = [*rows, *new]
            new = ()
            if len(rows) >= COPY_FROM and self._may_use_temporary_tables(driver):
                _copy_upsert(driver, table, rows, fixed, again=table.name in self.loaded)
                self.loaded.add(table.name)
                return
        if rows or new:
            with driver.cursor() as cur:
                cur.executemany(values, [*rows, *new])


#: From this many rows a PostgreSQL upsert goes through COPY into a temporary table and one
#: `INSERT … SELECT … ON CONFLICT`: psycopg's `executemany` costs ~20 µs of Python per row
#: (pipeline bookkeeping, per-row binding), COPY formats rows in C. Fewer rows (a live worker's
#: chunk) take `executemany`: one statement rather than four.
COPY_FROM = 200


def _upsert_sql(dialect: str, table: Table, fixed: frozenset[str], source: str) -> str:
    """`INSERT INTO table (…) VALUES (?, …)` (source "VALUES"), or `… SELECT … FROM source`,
    with `ON CONFLICT (key) DO UPDATE SET` every column but the key and `fixed`."""
    sql = _SQL.get((dialect, table.name, fixed, source))
    if sql is None:
        names = [c.name for c in table.columns]
        keys = [c.name for c in table.primary_key.columns]
        columns = ", ".join(names)
        if source == "VALUES":
            mark = _STORED[dialect][1]
            rows = f"VALUES ({', '.join([mark] * len(names))})"
        else:
            rows = f"SELECT {columns} FROM {source}"
        sql = _SQL[(dialect, table.name, fixed, source)] = (
            f"INSERT INTO {table.name} ({columns}) {rows} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{n}=excluded.{n}" for n in names if n not in keys and n not in fixed)
        )
    return sql


def _copy(cur: Any, target: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
    """COPY `rows` into `target` (its `columns`, in order): psycopg formats each row in C."""
    with cur.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def _copy_insert(driver: Any, table: Table, rows: Sequence[Sequence[Any]]) -> bool:
    """COPY rows no earlier transaction wrote straight into `table` on PostgreSQL; False (and
    nothing written) when one is there all the same, e.g. a view whose tracking position was
    moved back by hand: the caller upserts them then."""
    columns = ", ".join(c.name for c in table.columns)
    with driver.cursor() as cur:
        cur.execute("SAVEPOINT hazardloop_copy")
        try:
            _copy(cur, table.name, columns, rows)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT hazardloop_copy")
            cur.execute("RELEASE SAVEPOINT hazardloop_copy")
            return False
        cur.execute("RELEASE SAVEPOINT hazardloop_copy")
    return True


def _copy_upsert(
    driver: Any,
    table: Table,
    rows: Sequence[Sequence[Any]],
    fixed: frozenset[str],
    *,
    again: bool = False,
) -> None:
    """Upsert `rows` on PostgreSQL: COPY them into a temporary table shaped like `table` (this
    transaction's own, in `pg_temp`: dropped at its end, so always the table's shape of the
    moment), then one `INSERT … SELECT … ON CONFLICT` from it. `again`: the temporary table
    was loaded before in this transaction (the ledger's rows written in full), so it is
    emptied first."""
    load = f"pg_temp._load_{table.name}"
    columns = ", ".join(c.name for c in table.columns)
    with driver.cursor() as cur:
        if again:
            cur.execute(f"TRUNCATE {load}")
        else:
            cur.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {load} (LIKE {table.name}) ON COMMIT DROP"
            )
        _copy(cur, load, columns, rows)
        cur.execute(_upsert_sql("postgresql", table, fixed, load))


class EventSource(Protocol):
    """Where a case's earlier events come from: the application's event store."""

    def get(
        self, originator_id: UUID, *, gt: int | None = None, lte: int | None = None
    ) -> Iterable[Any]: ...


def _positions(table: Table) -> dict[str, int]:
    return {name: i for i, name in enumerate(table.columns.keys())}


# Rows are kept as lists in their table's column order, and written as they are: `_track` builds
# them in the order below, checked against the table here.
_SEGMENT_ORDER = ("hazard_id", "seq", "occurrence", "step", "grade", "grid", "category", "title",
                  "holder", "unit", "person", "started_at", "ended_at", "end_reason", "due",
                  "original_due", "due_limit", "provisional", "extensions", "step_started_at",
                  "latest", "handled", "parked", "reworked")  # fmt: skip
if tuple(step_segments.columns.keys()) != _SEGMENT_ORDER:
    raise ImportError("projections.cases builds rows in an order the tables no longer have")
#: Once open, a segment only ends, and then speaks for its occurrence (`_track` sets nothing
#: else on a segment).
_SEGMENT_FIXED = frozenset(_SEGMENT_ORDER) - {
    "ended_at", "end_reason", "latest", "handled", "parked", "reworked"
}  # fmt: skip
#: What a case keeps from its discovery (the aggregate id is the hazard id's uuid5). A row
#: whose values changed all the same is written in full: see `_Case.fixed`.
_LEDGER_FIXED = frozenset({"aggregate_id", "title", "grid", "category", "source", "discovered_at"})
_SG = _positions(step_segments)
_SG_ENDED, _SG_REASON = _SG["ended_at"], _SG["end_reason"]
_SG_LATEST, _SG_HANDLED = _SG["latest"], _SG["handled"]
_SG_PARKED, _SG_REWORKED = _SG["parked"], _SG["reworked"]


def _fixed(h: Hazard) -> tuple[Any, ...]:
    return (h.title, h.grid, h.category, h.source, h.discovered_at)


def _created(event: Hazard.Event) -> Hazard:
    hazard = event.mutate(None)
    assert isinstance(hazard, Hazard)
    return hazard


class _Case:
    """A case being projected: the folded aggregate plus where its open rows stand."""

    __slots__ = ("aggregate_id", "fixed", "hazard", "last_rectify", "latest", "occurrences",
                 "parked", "rectify", "segment", "segment_key", "segments", "started",
                 "step")  # fmt: skip

    def __init__(self, hazard: Hazard) -> None:
        self.hazard = hazard
        self.aggregate_id = hazard.id.hex
        self.fixed = _fixed(hazard)  # the ledger's _LEDGER_FIXED values, as first written
        self.segments = 0  # segments opened so far (the next seq)
        self.occurrences = 0  # step occurrences started so far
        self.last_rectify: int | None = None  # occurrence number of the latest rectify step
        self.segment: list[Any] | None = None  # the open segment's row
        self.segment_key: tuple[Any, ...] | None = None  # step, due, unit, person, grade, ext.
        # The open step occurrence (step None: none is open; parking pauses one, it goes on).
        self.step: str | None = None
        self.started: Any = None  # when it started (as stored)
        self.parked = False  # whether it was parked at any time so far
        self.latest: list[Any] | None = None  # its latest segment's row (open, or ended parked)
        self.rectify: list[Any] | None = None  # the latest segment of the latest rectify step


class _Changes:
    """Rows a chunk changed: each is written once, in its last version (keyed by identity)."""

    __slots__ = ("cases", "discovered", "fresh", "segments")

    def __init__(self) -> None:
        self.cases: dict[int, _Case] = {}
        self.segments: dict[int, list[Any]] = {}
        #: Rows first made in this chunk (by identity), and the cases discovered in it (by
        #: key): no earlier transaction wrote their rows, so they are inserted, not upserted,
        #: where that is faster (PostgreSQL's COPY).
        self.fresh: set[int] = set()
        self.discovered: set[int] = set()


def topic_filter(base: type) -> Callable[[str], bool]:
    """Whether a stored event's topic names a subclass of `base` (memoised per topic). A topic
    that does not resolve is wanted: decoding it gives the mapper's own error."""
    seen: dict[str, bool] = {}

    def wants(topic: str) -> bool:
        found = seen.get(topic)
        if found is None:
            try:
                cls = resolve_topic(topic)
            except Exception:
                return True
            found = seen[topic] = isinstance(cls, type) and issubclass(cls, base)
        return found

    return wants


_is_hazard_event = topic_filter(Hazard.Event)


class Batch(NamedTuple):
    """The rows one fold changed, each in its last version, as lists in their table's column
    order: `…_new` were first made in it (no earlier transaction or batch wrote them)."""

    segments: list[list[Any]]
    segments_new: list[list[Any]]
    ledger: list[tuple[Any, ...]]
    ledger_new: list[tuple[Any, ...]]
    #: Ledger rows whose `_LEDGER_FIXED` columns changed: written in full.
    ledger_in_full: list[tuple[Any, ...]]


class CasesProjection:
    """Ledger and step segments (and so the `steps` view), from hazard events."""

    name = "cases"
    tables: tuple[Table, ...] = (ledger, step_segments)

    def __init__(
        self,
        cache_size: int = 200_000,
        *,
        events: EventSource | None = None,
    ) -> None:
        self.cache_size = cache_size
        self.cache: OrderedDict[int, _Case] = OrderedDict()  # by the aggregate id's int
        self.events = events
        self.refolded = 0  # cases folded again from the event store (cache misses)

    def attach(self, app: Any) -> None:
        """Read earlier events of cases not in memory from the application's event store."""
        self.events = app.events

    def reset(self) -> None:
        self.cache.clear()

    # ------------------------------------------------------------ folding

    def process(self, conn: Connection, items: Sequence[tuple[int, Any]]) -> None:
        writer = _Writer(conn)
        self.store(conn, writer, self.fold(items, writer.time))

    def fold(self, items: Sequence[tuple[int, Any]], time: Callable[[Any], Any]) -> Batch:
        """Fold `(position, event)` pairs into the cases held in memory; return the rows they
        changed, each in its last version (`time`: date-times as the store keeps them).

        Writes nothing: the batch is written by `store`, in this process or, from a fold
        helper, in the runner's (projections/helper.py)."""
        changes = _Changes()
        cache = self.cache
        dirty = changes.cases
        track = self._track
        discovered, hazard_event = Hazard.Discovered, Hazard.Event
        for _, event in items:
            if not isinstance(event, hazard_event):
                continue
            key = event.originator_id.int
            if type(event) is discovered:
                case = cache[key] = _Case(_created(event))
                changes.discovered.add(key)
            else:
                found = cache.get(key)
                case = found if found is not None else self._refold(event, time)
                event.mutate(case.hazard)
            dirty[key] = case
            track(case, event, changes, time)
        fresh = changes.fresh
        batch = Batch([], [], [], [], [])
        for ident, row in changes.segments.items():
            (batch.segments_new if ident in fresh else batch.segments).append(row)
        new_cases = changes.discovered
        ledger_row = self._ledger_row
        for key, case in dirty.items():
            h = case.hazard
            fixed = _fixed(h)
            if key in new_cases:
                batch.ledger_new.append(ledger_row(case, time))
            elif fixed == case.fixed:
                batch.ledger.append(ledger_row(case, time))
            else:  # no event changes these today; if one does, its row is written in full
                batch.ledger_in_full.append(ledger_row(case, time))
            case.fixed = fixed
            if h.status in _TERMINAL:
                cache.pop(key, None)  # only `reopen` follows: fold it again if it comes
            else:
                cache.move_to_end(key)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return batch

    def wants(self, topic: str) -> bool:
        """Whether events of `topic` are folded here (a fold helper decodes no others)."""
        return _is_hazard_event(topic)

    @classmethod
    def store_all(cls, conn: Connection, batches: Iterable[Batch]) -> None:
        """Write batches from `fold`, in order, in the transaction of `conn`."""
        writer = _Writer(conn)
        for batch in batches:  # from a helper, a plain tuple
            cls.store(conn, writer, batch if type(batch) is Batch else Batch._make(batch))

    @staticmethod
    def store(conn: Connection, writer: _Writer, batch: Batch) -> None:
        """Write a batch of rows from `fold` in the transaction of `conn` (one `writer` per
        transaction; its date-times stored as `stored_time` of the dialect gives them)."""
        writer.upsert(conn, step_segments, batch.segments, _SEGMENT_FIXED, batch.segments_new)
        writer.upsert(conn, ledger, batch.ledger, _LEDGER_FIXED, batch.ledger_new)
        writer.upsert(conn, ledger, batch.ledger_in_full)

    def _refold(self, event: Hazard.Event, time: Callable[[Any], Any]) -> _Case:
        """Fold a case memory lacks again from its earlier events in the event store.

        Every event before `event` is at an earlier position of the log, so it was projected and
        committed already: folding them again (rows discarded) gives the case as it stood.
        """
        if self.events is None:
            raise RuntimeError("the cases projection needs the event store (attach the app)")
        oid, version = event.originator_id, event.originator_version
        scratch = _Changes()
        case: _Case | None = None
        for earlier in self.events.get(oid, lte=version - 1):
            if not isinstance(earlier, Hazard.Event):
                continue
            if case is None:
                case = _Case(_created(earlier))
            else:
                earlier.mutate(case.hazard)
            self._track(case, earlier, scratch, time)
        if case is None or case.hazard.version != version - 1:
            raise RuntimeError(f"hazard {oid} has no events before version {version}")
        self.cache[oid.int] = case
        self.refolded += 1
        return case

    @staticmethod
    def _track(
        case: _Case, event: Hazard.Event, changes: _Changes, time: Callable[[Any], Any]
    ) -> None:
        """What `event` (already applied to the case) did to its segments and step occurrence.

        A segment is one step with one deadline, holder and grade; any change ends it and starts
        another. A step occurrence runs from when its step starts until the ball moves on
        (parking pauses it, it does not end it): its latest segment carries how it ended."""
        h = case.hazard
        name = type(event).__name__
        at = time(event.at)
        parked = h.status is Status.PARKED
        step = h.step
        ended = case.step is not None and not parked and step != case.step
        deadline = h.deadline or _NO_DEADLINE
        extensions = int(deadline.get("extensions", 0))
        seg = case.segment
        if seg is not None:
            key = None if step is None else (step, h.due, h.unit, h.person, h.grade, extensions)
            if case.segment_key != key:
                seg[_SG_ENDED] = at
                seg[_SG_REASON] = name
                if parked:
                    seg[_SG_PARKED] = case.parked = True
                elif ended:
                    seg[_SG_HANDLED] = name in HANDLING_EVENTS[case.step]  # type: ignore[index]
                changes.segments[id(seg)] = seg
                seg = case.segment = None
        if ended:
            if case.step == "rectify":
                case.last_rectify = case.occurrences
                case.rectify = case.latest
            case.step = case.latest = None
        if name == "VerificationFailed" and case.rectify is not None:
            row = case.rectify
            row[_SG_REWORKED] += 1
            changes.segments[id(row)] = row
        if seg is not None or step is None:
            return
        # A segment opens: of a new step occurrence, or of the same one (after a change, or
        # after a pause, whose segment is then no longer the occurrence's latest).
        if case.step is None:
            case.occurrences += 1
            case.step, case.started, case.parked = step, at, False
        else:
            before = case.latest
            if before is not None:
                before[_SG_LATEST] = False
                changes.segments[id(before)] = before
        case.segments += 1
        case.segment_key = (step, h.due, h.unit, h.person, h.grade, extensions)
        seg_due = time(deadline["due"])
        # In the column order of `step_segments`.
        seg = case.segment = case.latest = [
            h.hazard_id, case.segments, case.occurrences, step, h.grade, h.grid, h.category,
            h.title, h.holder, h.unit, h.person, at, None, None, seg_due,
            time(deadline["original_due"]) if "original_due" in deadline else seg_due,
            deadline.get("limit", "given"), bool(deadline.get("provisional", False)),
            extensions, case.started, True, False, case.parked, 0,
        ]  # fmt: skip
        changes.segments[id(seg)] = seg
        changes.fresh.add(id(seg))

    # ------------------------------------------------------------ storage

    @staticmethod
    def _ledger_row(case: _Case, time: Callable[[Any], Any]) -> tuple[Any, ...]:
        h = case.hazard
        deadline = h.deadline or {}
        due = h.due
        return (
            h.hazard_id, case.aggregate_id, h.title, h.grid, h.category, h.grade, h.source,
            str(h.status), h.step, h.holder, h.unit, h.person, time(due),
            deadline.get("limit") if due is not None else None,
            bool(deadline.get("provisional")) if due is not None else False,
            h.rework_count, h.extension_count, h.reopen_count,
            time(h.discovered_at), time(h.last_at), h.version,
            case.segments, case.occurrences, case.last_rectify,
        )  # fmt: skip
