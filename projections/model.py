"""What the reports hold: plain, frozen records that every output format renders from.

Computed from the read models by `projections.reports`; rendered by `adapters.reports`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from loop.organisation import POSTS  # the posts of a grid's chain, defined by the domain

__all__ = [
    "POSTS",
    "AccountabilityReport",
    "AccountabilityRow",
    "OverdueReport",
    "OverdueRow",
    "Period",
]


@dataclass(frozen=True)
class OverdueRow:
    """One open, unparked step past its deadline at the report's `as_of`."""

    hazard_id: str
    title: str
    grid: str
    grid_name: str | None
    category: str
    grade: str  # general | major
    step: str  # report | assign | rectify | verify | close
    holder: str | None  # who holds the ball: the discoverer, command_centre, the unit
    unit: str | None
    person: str | None
    chain: dict[str, str]  # post -> person who held it at the deadline (see POSTS)
    started_at: datetime  # when the step started (business time)
    due: datetime  # the deadline in force at as_of
    original_due: datetime  # the step's first deadline, before extensions
    limit: str  # the limit that produced `due`: "10wd", "24h", "given"…
    provisional: bool  # the deadline, or the working days overdue, ran past the known calendar
    overdue_working_days: int  # working days after the due date, up to as_of's date
    overdue_hours: float  # hours since the deadline
    extensions: int  # extensions of this step so far
    #: overdue_working_days took in a day the calendar does not know (counted Monday–Friday):
    #: an estimate, never the ground of an escalation.
    estimated: bool = False


@dataclass(frozen=True)
class OverdueReport:
    """Every overdue step as of a moment, in a stable order (grid, unit, step, hazard)."""

    as_of: datetime
    timezone: str
    rows: list[OverdueRow]
    open_cases: int  # open, unparked cases at as_of (the denominator people ask for)
    parked_cases: int
    chain_head: str | None = None  # the event log's head "COUNT:HASH", once audit lands
    estimated_from: date | None = None  # the first day past the calendar a count took in


@dataclass(frozen=True)
class Period:
    """A reporting period: a month, quarter, half-year or year, in local dates."""

    label: str  # "2026-09", "2026-Q3", "2026-H2", "2026"
    start: date  # first day, inclusive
    end: date  # last day, inclusive


@dataclass(frozen=True)
class AccountabilityRow:
    """One unit, person or grid over a period: the step counts and the indicators."""

    dimension: str  # "unit" | "person" | "grid"
    key: str
    name: str | None
    due: int  # steps whose deadline fell in the period (parked steps excluded)
    handled: int  # of those, handled (the step was completed) by the end of the period
    on_time: int  # handled at or before the deadline in force
    late: int  # handled after the deadline
    still_overdue: int  # not handled by the end of the period
    extended: int  # steps extended at least once
    rework: int  # failed verifications charged to this holder's rectification
    closed: int  # cases closed in the period (for the closing indicators)
    closed_on_time: int
    due_for_closure: int  # cases whose close step fell due in the period, parked excluded
    avg_working_days: float | None  # mean working days from step start to handling
    indicators: dict[str, float | None] = field(default_factory=dict)  # see docs/indicators.md
    estimated: bool = False  # avg_working_days took in days past the known calendar (Mon–Fri)


@dataclass(frozen=True)
class AccountabilityReport:
    """Accountability per unit, person and grid for one period."""

    period: Period
    as_of: datetime
    timezone: str
    rows: list[AccountabilityRow]
    totals: AccountabilityRow
    chain_head: str | None = None
    estimated_from: date | None = None  # the first day past the calendar a count took in
