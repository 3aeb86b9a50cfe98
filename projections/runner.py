"""Drives projections through the event log: pull in order, fold, commit rows and position together.

SQLite has no subscriptions, so catching up is a pull loop over the application's notification
log; every report catches up first, so it reflects every stored event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from loop.application import HazardLoop
from projections.tables import METADATA, tracking

__all__ = ["LagReport", "Projection", "ProjectionRunner", "StaleTracking"]


class Projection(Protocol):
    """A read model: its tables, and how a chunk of events changes them."""

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
        chunk_size: int = 2000,
    ) -> None:
        self.app = app
        self.engine = engine
        self.projections = list(projections)
        self.chunk_size = chunk_size
        METADATA.create_all(engine)

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
        to_event = self.app.mapper.to_domain_event
        decoded = [(n.id, to_event(n)) for n in notes]
        last = notes[-1].id
        try:
            with self.engine.begin() as conn:
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
