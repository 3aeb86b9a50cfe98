"""Drives projections through the event log: pull in order, fold, commit rows and position together.

SQLite has no subscriptions, so catching up is a pull loop over the application's notification
log; every report catches up first, so it reflects every stored event.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, Transcoder
from sqlalchemy import Connection, Engine, Table, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from loop.application import HazardLoop
from projections.tables import METADATA, tracking

__all__ = ["LagReport", "Projection", "ProjectionRunner", "StaleTracking", "reading_mapper"]


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
    ) -> None:
        self.app = app
        self.engine = engine
        self.projections = list(projections)
        self.chunk_size = chunk_size
        self.page_cache_kib = page_cache_kib
        self.mapper = reading_mapper(app)
        for p in self.projections:
            attach = getattr(p, "attach", None)
            if attach is not None:
                attach(app)  # e.g. to fold a case again from the event store
        self._reconcile()
        METADATA.create_all(engine)

    def _reconcile(self) -> None:
        """Make the stored views match the code's tables before anything is read.

        Read models are derived: a projection whose stored columns differ from the code's (an
        older version) loses its tables and position and is rebuilt by the next catch-up; an
        index added since is created in place.
        """
        with self.engine.begin() as conn:
            found = inspect(conn)
            existing = set(found.get_table_names())
            for p in self.projections:
                stale = any(
                    t.name in existing
                    and {c["name"] for c in found.get_columns(t.name)} != set(t.columns.keys())
                    for t in p.tables
                )
                if stale:
                    for t in p.tables:
                        t.drop(conn, checkfirst=True)
                    if tracking.name in existing:
                        conn.execute(delete(tracking).where(tracking.c.name == p.name))
                    continue
                for t in p.tables:
                    if t.name in existing:
                        have = {i["name"] for i in found.get_indexes(t.name)}
                        for index in t.indexes:
                            if index.name not in have:
                                index.create(conn)

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
        with _no_cyclic_gc():
            return self._catch_up(until, progress)

    def _catch_up(self, until: int | None, progress: Callable[[int], None] | None) -> int:
        seen = 0
        while True:
            try:
                n = self._step(until)
            except StaleTracking:
                for p in self.projections:
                    p.reset()
                continue
            if n == 0:
                return seen
            seen += n
            if progress is not None:
                progress(n)

    def _step(self, until: int | None) -> int:
        positions = self.positions()
        start = min(positions.values()) + 1
        if until is not None and start > until:
            return 0
        notes = self.app.recorder.select_notifications(
            start=start, limit=self.chunk_size, stop=until
        )
        if not notes:
            return 0
        to_event = self.mapper.to_domain_event
        decoded = [(n.id, to_event(n)) for n in notes]
        last = notes[-1].id
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
                    items = decoded if pos < start else [x for x in decoded if x[0] > pos]
                    p.process(conn, items)
        except (StaleTracking, IntegrityError, OperationalError) as exc:
            for p in self.projections:
                p.reset()
            if isinstance(exc, OperationalError) and "locked" not in str(exc):
                raise
            raise StaleTracking(str(exc)) from exc
        except BaseException:
            for p in self.projections:
                p.reset()
            raise
        return len(notes)

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


class _OrjsonDecoding(Transcoder):
    """Decodes what the application's `JSONTranscoder` wrote, parsing with orjson (2-3x faster).

    The values are the same: standard JSON parses to the same Python values with `json` and
    orjson, and each `{"_type_": name, "_data_": data}` object is turned back, innermost first,
    by the application's own registered transcodings, as `JSONTranscoder`'s object hook does.
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
            for key, value in obj.items():
                kind = type(value)
                if kind is dict:
                    if len(value) == 2 and type(value.get("_data_")) is str and "_type_" in value:
                        obj[key] = self.transcoder._decode_obj(value)  # a leaf: a date-time…
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


def reading_mapper(app: HazardLoop) -> Mapper[Any]:
    """The application's mapper, or the same with orjson parsing when it is the stock JSON one."""
    mapper = app.mapper
    transcoder = mapper.transcoder
    if type(mapper) is Mapper and type(transcoder) is JSONTranscoder:
        return Mapper(_OrjsonDecoding(transcoder), mapper.compressor, mapper.cipher)
    return mapper


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while catching up.

    A catch-up allocates millions of objects next to a large, long-lived cache of cases, and
    the collector's passes would keep walking that cache (they cost more than the decoding).
    Reference counting still frees everything a chunk leaves behind: a catch-up makes no
    reference cycles (checked: a full collection after a 1M-event catch-up finds none), and any
    it did make would be collected once the collector is back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
