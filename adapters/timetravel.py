"""Time travel on both time axes: a case as it had happened by T, and as the engine knew it at T.

- *as of T* (business time): the events whose `at` is at or before T. A case's `at` never goes
  backwards, so that is always the first N events of the case.
- *known at T* (record time): the events stored at or before T, read from the hash chain's
  `recorded_at`, which never decreases along the log (docs/audit.md) — again a prefix.
Both together: the case as it had happened by T according to what was known at T′.

*Known at* also takes a point of the log itself: a chain head `COUNT:HASH` as every report and
dossier prints it, checked against the store (`position_of_head`) and then read as "the first
COUNT events" — the exact prefix the printed document was computed from, whatever the clock said.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import PersistenceError
from sqlalchemy import Connection, Engine, create_engine, select

from adapters.audit import Head
from adapters.store import (
    CASE_CHAIN_ROWS_POSTGRES,
    CASE_CHAIN_ROWS_SQLITE,
    CHAIN_TABLE,
    GENESIS,
    HazardLoopSQLiteRecorder,
    from_micros,
    to_micros,
)
from adapters.storesql import select_rows
from loop.application import HazardLoop
from loop.errors import HazardNotFound, InvalidCommand, StoreError
from loop.hazard import Hazard, hazard_uuid

__all__ = [
    "ChainEntry",
    "KnownAt",
    "case_chain",
    "current_views",
    "describe_known",
    "event_record",
    "hazard_at",
    "is_known",
    "known_positions",
    "position_of_head",
    "record_time_at",
    "report_moment",
    "version_at",
    "views_known_at",
    "views_snapshot",
]

#: "As the engine knew it then": a record time, or a position of the log (the COUNT of a chain
#: head checked by `position_of_head`): the events at positions 1..COUNT.
KnownAt = datetime | int


@dataclass(frozen=True)
class ChainEntry:
    """Where one event of a case stands in the log: position, record time, its hash (its link in
    the log's chain and in the case's)."""

    version: int
    position: int
    recorded_at: datetime
    log_hash: bytes


#: An event's bookkeeping fields, shown as `version` and `recorded_at` rather than in its payload.
_BOOKKEEPING = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic", "at", "actor"}
)


def event_record(event: Any) -> dict[str, Any]:
    """One event as `history` shows it (CLI and Python API): version, kind, both times, actor,
    and the rest of its fields as the payload."""
    return {
        "version": event.originator_version,
        "event": type(event).__name__,
        "at": event.at,
        "recorded_at": event.timestamp,
        "actor": event.actor,
        "payload": {k: v for k, v in vars(event).items() if k not in _BOOKKEEPING},
    }


def is_known(entry: ChainEntry, known_at: KnownAt) -> bool:
    """Whether the event of `entry` was known at `known_at` (a record time, or a position)."""
    if isinstance(known_at, int):
        return entry.position <= known_at
    return entry.recorded_at <= known_at


def describe_known(known_at: KnownAt) -> str:
    """`known_at` as an error message names it."""
    if isinstance(known_at, int):
        return f"event {known_at} of the log"
    return known_at.isoformat()


def case_chain(app: HazardLoop, hazard_id: str) -> list[ChainEntry]:
    """The chain entries of a case's events, in version order."""
    try:
        sqlite = isinstance(app.recorder, HazardLoopSQLiteRecorder)
        rows = select_rows(
            app,
            CASE_CHAIN_ROWS_SQLITE if sqlite else CASE_CHAIN_ROWS_POSTGRES,
            key=hazard_uuid(hazard_id).hex,
        )
    except PersistenceError as exc:
        raise StoreError(f"cannot read the hash chain of {hazard_id!r}: {exc}") from exc
    return [ChainEntry(int(r[0]), int(r[1]), from_micros(int(r[2])), bytes(r[3])) for r in rows]


def known_positions(app: HazardLoop, known_at: KnownAt) -> int:
    """How many events of the log had been recorded at `known_at` (the prefix's last position);
    a position is its own answer."""
    if isinstance(known_at, int):
        return known_at
    try:
        rows = select_rows(
            app,
            f"SELECT MAX(position) FROM {CHAIN_TABLE} WHERE recorded_at<=:micros",
            micros=to_micros(known_at),
        )
    except PersistenceError as exc:
        raise StoreError(f"cannot read the hash chain: {exc}") from exc
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _chain_row(app: HazardLoop, columns: str, where: str = "", **params: Any) -> Any:
    try:
        rows = select_rows(app, f"SELECT {columns} FROM {CHAIN_TABLE} {where}", **params)
    except PersistenceError as exc:
        raise StoreError(f"cannot read the hash chain: {exc}") from exc
    return rows[0] if rows else None


def position_of_head(app: HazardLoop, head: Head) -> int:
    """The position a printed chain head `COUNT:HASH` stands for in this store: COUNT, once the
    stored log hash at COUNT is found to be HASH. InvalidCommand (`details.reason`) if the log
    holds fewer events (`beyond_log`) or another hash there (`rewritten`: the log was rewritten
    since the head was printed, or the head is another store's). That the log still extends
    the head all the way is for `audit verify --against` to prove."""
    count = head.count
    if count == 0:
        found: bytes | None = GENESIS
    else:
        row = _chain_row(app, "log_hash", "WHERE position=:position", position=count)
        found = bytes(row[0]) if row is not None else None
    if found is None:
        last = _chain_row(app, "MAX(position)")
        held = int(last[0]) if last is not None and last[0] is not None else 0
        raise InvalidCommand(
            f"the chain head {head} counts {count} events, but this store's log holds {held}: "
            "the head is not this store's, or the log was cut short",
            head=str(head),
            reason="beyond_log",
            events=held,
        )
    if found != head.log_hash:
        raise InvalidCommand(
            f"the chain head {head} is not this store's log: its hash at event {count} is "
            f"{found.hex()}: the log was rewritten since the head was printed, or the head is "
            "another store's",
            head=str(head),
            reason="rewritten",
            found=found.hex(),
        )
    return count


def record_time_at(app: HazardLoop, position: int) -> datetime | None:
    """The record time of the event at `position` (None for 0, or a position not in the chain)."""
    if position <= 0:
        return None
    row = _chain_row(app, "recorded_at", "WHERE position=:position", position=position)
    return from_micros(int(row[0])) if row is not None else None


def report_moment(app: HazardLoop, as_of: datetime | None, known: KnownAt | None) -> datetime:
    """The moment a report is as of, one rule for the CLI and the API: `as_of`; else the
    `known` time; else, for a chain head's position, the record time of its last event; else
    now, to the minute (the precision every format prints, so the printed `as_of` and
    `chain_head` reproduce the report)."""
    if as_of is not None:
        return as_of
    if isinstance(known, datetime):
        return known
    recorded = record_time_at(app, known) if known is not None else None
    if recorded is not None:
        return recorded.astimezone(app.policy.tz)
    return app.clock().replace(second=0, microsecond=0)


def version_at(
    app: HazardLoop,
    hazard_id: str,
    *,
    as_of: datetime | None = None,
    known_at: KnownAt | None = None,
) -> int:
    """The case's version as of business time `as_of`, as known at `known_at` (a record time
    or a log position; 0: not yet)."""
    events = app.history(hazard_id)
    version = len(events)
    if known_at is not None:
        chain = case_chain(app, hazard_id)
        known = [e.version for e in chain if is_known(e, known_at)]
        version = min(version, max(known, default=0))
    if as_of is not None:
        happened = [e.originator_version for e in events if e.at <= as_of]
        version = min(version, max(happened, default=0))
    return version


def hazard_at(
    app: HazardLoop,
    hazard_id: str,
    *,
    as_of: datetime | None = None,
    known_at: KnownAt | None = None,
) -> Hazard:
    """The case as of `as_of`, as known at `known_at`; HazardNotFound if it did not exist yet."""
    version = version_at(app, hazard_id, as_of=as_of, known_at=known_at)
    if version == 0:
        when = " and ".join(
            f"{label} {moment}"
            for label, moment in (
                ("as of", as_of.isoformat() if as_of is not None else None),
                ("known at", describe_known(known_at) if known_at is not None else None),
            )
            if moment is not None
        )
        raise HazardNotFound(
            f"hazard {hazard_id!r} had not been discovered {when}",
            hazard_id=hazard_id,
        )
    return app.get_hazard(hazard_id, version=version)


@contextmanager
def views_known_at(app: HazardLoop, known_at: KnownAt) -> Iterator[tuple[Engine, int]]:
    """Read models over exactly the events known at `known_at`, in a scratch database.

    Yields the scratch engine and the last position it holds. The projections are the product's
    own, run over the log prefix `recorded_at <= known_at` (a record time) or over positions
    1..`known_at` (a position: a chain head's COUNT checked by `position_of_head`); nothing is
    written to the store.
    """
    from adapters.bootstrap import build_runner

    position = known_positions(app, known_at)
    with tempfile.TemporaryDirectory(prefix="hazardloop-known-") as scratch:
        engine = create_engine(f"sqlite:///{scratch}/views.db")
        try:
            runner = build_runner(app, engine)
            # Built per request in a long-lived server, too: the smaller transactions' memory.
            runner.rebuild_chunk_size = 0
            if position:
                runner.catch_up(until=position)
            yield engine, position
        finally:
            engine.dispose()


@contextmanager
def current_views(
    runner: Any, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[Connection, int]]:
    """The store's read models, caught up: a connection reading them in one snapshot, and the
    log position they reflect (their tracked position, read in that same snapshot), so a report
    prints the head of exactly the events it was computed from, even while a projection worker
    or another catch-up moves the read models on meanwhile."""
    runner.catch_up(progress=progress)
    with views_snapshot(runner) as found:
        yield found


@contextmanager
def views_snapshot(runner: Any) -> Iterator[tuple[Connection, int]]:
    """The store's read models as they stand (no catch-up: `current_views` does one first; the
    Python API catches up under its own lock): a connection reading them in one snapshot, and
    the log position they reflect, read in that same snapshot."""
    from projections.tables import tracking

    with runner.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # pysqlite begins no read transaction by itself
        else:
            conn.execution_options(isolation_level="REPEATABLE READ")
        tracked = dict(conn.execute(select(tracking.c.name, tracking.c.position)).all())
        yield conn, min((int(tracked.get(p.name, 0)) for p in runner.projections), default=0)
