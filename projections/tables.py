"""The read-model tables, as SQLAlchemy Core: one schema for SQLite and PostgreSQL.

They live in the same database as the events; each projection's rows commit with its tracking
position (table `projection_tracking`) in one transaction.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    inspect,
    text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "LATEST_SQL",
    "METADATA",
    "PARKED_SQL",
    "STEPS_SQL",
    "VIEWS",
    "VIEW_SQL",
    "UTCDateTime",
    "advisory_key",
    "create_views",
    "drop_views",
    "grids",
    "ledger",
    "lock_schema",
    "post_tenures",
    "step_segments",
    "steps",
    "stored_moment",
    "tracking",
    "view_names",
]


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key (signed 64 bits) for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_schema(conn: Connection, name: str) -> None:
    """Keep other processes from changing the schema under lock `name` until `conn`'s
    transaction ends; the first statement of that transaction.

    Two processes that find a table, view or index missing and create it at once collide: on
    SQLite the second CREATE fails ("already exists"), on PostgreSQL even `IF NOT EXISTS` may
    (a unique violation in the catalogue). So the check and the creation run again under the
    database's write lock (SQLite's `BEGIN IMMEDIATE`, which also makes the DDL one
    transaction: pysqlite begins none by itself; `name` then plays no part) or, on PostgreSQL,
    a transaction-scoped advisory lock on `name`, released at commit; the second process then
    finds what the first made.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(name)})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware date-times stored as UTC (sortable text on SQLite), read back aware in UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("read models store aware date-times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def stored_moment(value: datetime, dialect: Dialect) -> Any:
    """`value` as a `UTCDateTime` column stores it on `dialect` (UTC text on SQLite)."""
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor is not None else value


METADATA = MetaData()

#: The condition of `ix_segments_parked`: a segment that ended because its case was parked.
PARKED_SQL = "end_reason = 'Parked'"

#: The condition of `ix_segments_latest_due` and of the `steps` view: an occurrence's latest
#: segment.
LATEST_SQL = "latest"

#: Where each projection has got to in the event log (the notification id last processed).
tracking = Table(
    "projection_tracking",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
)

#: 隐患台账: one row per hazard, its current state.
ledger = Table(
    "ledger",
    METADATA,
    Column("hazard_id", String(64), primary_key=True),
    Column("aggregate_id", String(32), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("grid", String(64), nullable=False, index=True),
    Column("category", String(64), nullable=False),
    Column("grade", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("step", String(16)),
    Column("holder", String(64)),
    Column("unit", String(64), index=True),
    Column("person", String(64)),
    Column("due", UTCDateTime),
    Column("due_limit", String(16)),
    Column("provisional", Boolean, nullable=False, default=False),
    Column("rework_count", Integer, nullable=False),
    Column("extension_count", Integer, nullable=False),
    Column("reopen_count", Integer, nullable=False),
    Column("discovered_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Column("segments", Integer, nullable=False),  # segments opened so far (the next seq)
    Column("occurrences", Integer, nullable=False),  # step occurrences started so far
    Column("last_rectify", Integer),  # occurrence number of the latest rectify step
)

#: Every interval in which one step held the ball with one deadline and one holder. The last
#: columns speak for the step occurrence the segment belongs to, as of this segment: when it
#: started, whether it was parked at any time, and, on its `latest` segment, how it ended (the
#: `steps` view below is those segments).
step_segments = Table(
    "step_segments",
    METADATA,
    Column("hazard_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("occurrence", Integer, nullable=False),
    Column("step", String(16), nullable=False),
    Column("grade", String(16), nullable=False),
    Column("grid", String(64), nullable=False),
    Column("category", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("holder", String(64)),
    Column("unit", String(64)),
    Column("person", String(64)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String(32)),
    Column("due", UTCDateTime, nullable=False),
    Column("original_due", UTCDateTime, nullable=False),
    Column("due_limit", String(16), nullable=False),
    Column("provisional", Boolean, nullable=False),
    Column("extensions", Integer, nullable=False),
    Column("step_started_at", UTCDateTime, nullable=False),  # when the occurrence started
    Column("latest", Boolean, nullable=False),  # the occurrence's latest segment so far
    Column("handled", Boolean, nullable=False),  # ended the occurrence because its holder acted
    Column("parked", Boolean, nullable=False),  # the occurrence was parked by this one's end
    Column("reworked", Integer, nullable=False),  # failed verifications of this rectification
    Index("ix_segments_open_due", "ended_at", "due"),
    # Steps due in a period (the accountability report, through the `steps` view, whose rows
    # are the latest segments): partial, so that the overdue report's `due < T` over every
    # segment is never planned on it rather than on `ix_segments_open_due` (it was: 1.6 s
    # became 7.5 s at 1M hazards).
    Index(
        "ix_segments_latest_due",
        "due",
        sqlite_where=text(LATEST_SQL),
        postgresql_where=text(LATEST_SQL),
    ),
    # Parked cases as of a moment (the overdue report's denominator): few rows, so a partial
    # index costs writes almost nothing. SQLite uses it for `end_reason = 'Parked'` whether the
    # value is a literal or a bound parameter (it plans again with the bound value).
    Index(
        "ix_segments_parked",
        "ended_at",
        "hazard_id",
        "seq",
        sqlite_where=text(PARKED_SQL),
        postgresql_where=text(PARKED_SQL),
    ),
)

#: The views defined over the tables: not created by `METADATA.create_all` as tables, but by
#: `create_views` (run after it, see the listener below).
VIEWS = MetaData()

#: One row per step occurrence (a step from when it starts until the ball moves on): a view of
#: each occurrence's latest segment. An occurrence parked now shows no end yet, and the holder
#: it had when it was parked (a reassignment while parked shows from the resume, in the
#: segment that opens then).
steps = Table(
    "steps",
    VIEWS,
    Column("hazard_id", String(64), primary_key=True),
    Column("occurrence", Integer, primary_key=True),
    Column("step", String(16), nullable=False),
    Column("grade", String(16), nullable=False),
    Column("grid", String(64), nullable=False),
    Column("holder", String(64)),
    Column("unit", String(64)),
    Column("person", String(64)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("due", UTCDateTime),
    Column("original_due", UTCDateTime),
    Column("extensions", Integer, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("outcome", String(32)),  # the event that ended it
    Column("handled", Boolean, nullable=False),
    Column("parked", Boolean, nullable=False),  # parked at any time during the step
    Column("reworked", Integer, nullable=False),  # failed verifications of this rectification
)

#: The SELECT behind `steps` (the same text on SQLite and PostgreSQL).
STEPS_SQL = (
    "SELECT hazard_id, occurrence, step, grade, grid, holder, unit, person, "
    "step_started_at AS started_at, due, original_due, extensions, "
    f"CASE WHEN {PARKED_SQL} THEN NULL ELSE ended_at END AS ended_at, "
    f"CASE WHEN {PARKED_SQL} THEN NULL ELSE end_reason END AS outcome, "
    f"handled, parked, reworked FROM step_segments WHERE {LATEST_SQL}"
)


def view_names(conn: Connection) -> set[str]:
    """The views in the read models' database (its current schema on PostgreSQL)."""
    return set(inspect(conn).get_view_names())


#: Each view's SELECT, by name (one for each table of `VIEWS`).
VIEW_SQL = {steps.name: STEPS_SQL}


def create_views(conn: Connection) -> None:
    """Create the views over the read models' tables that are missing."""
    have = view_names(conn)
    for name, sql in VIEW_SQL.items():
        if name not in have:
            conn.exec_driver_sql(f"CREATE VIEW {name} AS {sql}")


def drop_views(conn: Connection) -> None:
    """Drop the views (before the tables under them: PostgreSQL refuses to drop those first)."""
    for name in VIEW_SQL.keys() & view_names(conn):
        conn.exec_driver_sql(f"DROP VIEW {name}")


@event.listens_for(METADATA, "after_create")
def _views_after_tables(target: MetaData, connection: Connection, **kw: Any) -> None:
    create_views(connection)


#: Grids of the organisation.
grids = Table(
    "grids",
    METADATA,
    Column("code", String(64), primary_key=True),
    Column("aggregate_id", String(32), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("level", String(16), nullable=False),
    Column("parent", String(64)),
)

#: Who held which post of which grid, from when to when (to is NULL while held).
post_tenures = Table(
    "post_tenures",
    METADATA,
    Column("grid", String(64), primary_key=True),
    Column("post", String(32), primary_key=True),
    Column("person", String(64), primary_key=True),
    Column("from_at", UTCDateTime, primary_key=True),
    Column("to_at", UTCDateTime),
)
