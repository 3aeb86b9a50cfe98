"""Time travel on both time axes: a case as it had happened by T, and as the engine knew it at T.

- *as of T* (business time): the events whose `at` is at or before T. A case's `at` never goes
  backwards, so that is always the first N events of the case.
- *known at T* (record time): the events stored at or before T, read from the hash chain's
  `recorded_at`, which never decreases along the log (docs/audit.md) — again a prefix.
Both together: the case as it had happened by T according to what was known at T′.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import PersistenceError
from sqlalchemy import Engine, create_engine

from adapters.store import CHAIN_TABLE, from_micros, to_micros
from adapters.storesql import select_rows
from loop.application import HazardLoop
from loop.errors import HazardNotFound, StoreError
from loop.hazard import Hazard, hazard_uuid

__all__ = [
    "ChainEntry",
    "case_chain",
    "event_record",
    "hazard_at",
    "known_positions",
    "version_at",
    "views_known_at",
]


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


def case_chain(app: HazardLoop, hazard_id: str) -> list[ChainEntry]:
    """The chain entries of a case's events, in version order."""
    try:
        rows = select_rows(
            app,
            f"SELECT originator_version, position, recorded_at, log_hash "
            f"FROM {CHAIN_TABLE} WHERE originator_id=:key ORDER BY originator_version",
            key=hazard_uuid(hazard_id).hex,
        )
    except PersistenceError as exc:
        raise StoreError(f"cannot read the hash chain of {hazard_id!r}: {exc}") from exc
    return [ChainEntry(int(r[0]), int(r[1]), from_micros(int(r[2])), bytes(r[3])) for r in rows]


def known_positions(app: HazardLoop, known_at: datetime) -> int:
    """How many events of the log had been recorded at `known_at` (the prefix's last position)."""
    try:
        rows = select_rows(
            app,
            f"SELECT MAX(position) FROM {CHAIN_TABLE} WHERE recorded_at<=:micros",
            micros=to_micros(known_at),
        )
    except PersistenceError as exc:
        raise StoreError(f"cannot read the hash chain: {exc}") from exc
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def version_at(
    app: HazardLoop,
    hazard_id: str,
    *,
    as_of: datetime | None = None,
    known_at: datetime | None = None,
) -> int:
    """The case's version as of business time `as_of`, as known at `known_at` (0: not yet)."""
    events = app.history(hazard_id)
    version = len(events)
    if known_at is not None:
        chain = case_chain(app, hazard_id)
        known = [e.version for e in chain if e.recorded_at <= known_at]
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
    known_at: datetime | None = None,
) -> Hazard:
    """The case as of `as_of`, as known at `known_at`; HazardNotFound if it did not exist yet."""
    version = version_at(app, hazard_id, as_of=as_of, known_at=known_at)
    if version == 0:
        when = " and ".join(
            f"{label} {moment.isoformat()}"
            for label, moment in (("as of", as_of), ("known at", known_at))
            if moment is not None
        )
        raise HazardNotFound(
            f"hazard {hazard_id!r} had not been discovered {when}",
            hazard_id=hazard_id,
        )
    return app.get_hazard(hazard_id, version=version)


@contextmanager
def views_known_at(app: HazardLoop, known_at: datetime) -> Iterator[tuple[Engine, int]]:
    """Read models over exactly the events known at `known_at`, in a scratch database.

    Yields the scratch engine and the last position it holds. The projections are the product's
    own, run over the log prefix `recorded_at <= known_at`; nothing is written to the store.
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
