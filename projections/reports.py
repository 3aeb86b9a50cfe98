"""The overdue and accountability reports, computed with SQL over the read models.

Both are pure reads: callers catch the projections up first. Working days come from the same
calendar the engine decides deadlines with.
"""

from __future__ import annotations

import calendar as _cal
import re
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, and_, func, or_, select, type_coerce

from loop.errors import InvalidCommand
from loop.policy import Policy, WorkCalendar
from projections.model import (
    AccountabilityReport,
    AccountabilityRow,
    OverdueReport,
    OverdueRow,
    Period,
)
from projections.tables import grids, post_tenures, step_segments, steps, stored_moment

__all__ = [
    "FIRST_YEAR",
    "INDICATORS",
    "LAST_YEAR",
    "WorkdayCounter",
    "accountability_report",
    "chain_at",
    "overdue_report",
    "parse_period",
]

#: (key, 中文, English, formula) of each indicator; see docs/indicators.md.
INDICATORS: tuple[tuple[str, str, str, str], ...] = (
    ("disposal_rate", "处置率", "disposal rate", "handled / due"),
    ("on_time_disposal_rate", "按期处置率", "on-time disposal rate", "on_time / due"),
    ("overdue_unhandled_rate", "超期未处置率", "overdue unhandled rate", "still_overdue / due"),
    ("extension_rate", "延期率", "extension rate", "extended / due"),
    ("rework_rate", "返工率", "rework rate", "rework / due_for_closure"),
    ("closure_rate", "结案率", "closure rate", "closed / due_for_closure"),
    (
        "on_time_closure_rate",
        "按期结案率",
        "on-time closure rate",
        "closed_on_time / due_for_closure",
    ),
)


class WorkdayCounter:
    """Counts working days between dates fast, from a prefix table built on first use.

    A day the calendar does not know (a year neither `chinese-calendar` nor the operator's file
    has) counts Monday–Friday, as deadlines do; `first_unknown` names the first such day a count
    took in, so a report can mark that count as an estimate instead of hiding the guess.
    """

    def __init__(self, calendar: WorkCalendar) -> None:
        self.calendar = calendar
        self._start: date | None = None
        self._end: date | None = None
        self._workdays: list[int] = []  # ordinals of working days, ascending
        self._unknown: list[int] = []  # ordinals of days the calendar does not know, ascending

    def between(self, after: date, up_to: date) -> int:
        """Working days d with after < d ≤ up_to (weekdays where the calendar has no data)."""
        if up_to <= after:
            return 0
        self._cover(after, up_to)
        return bisect_right(self._workdays, up_to.toordinal()) - bisect_right(
            self._workdays, after.toordinal()
        )

    def first_unknown(self, after: date, up_to: date) -> date | None:
        """The first day d with after < d ≤ up_to that the calendar does not know, or None:
        `between` counted the days from it on Monday–Friday."""
        if up_to <= after:
            return None
        self._cover(after, up_to)
        if not self._unknown:
            return None
        i = bisect_right(self._unknown, after.toordinal())
        if i < len(self._unknown) and self._unknown[i] <= up_to.toordinal():
            return date.fromordinal(self._unknown[i])
        return None

    def _cover(self, lo: date, hi: date) -> None:
        if self._start is not None and self._end is not None:
            if self._start <= lo and self._end >= hi:
                return
            lo, hi = min(lo, self._start), max(hi, self._end)
        # A year's room either side, but never past the dates Python has (1-01-01, 9999-12-31).
        first = max(date.min.toordinal(), lo.toordinal() - 366)
        last = min(date.max.toordinal(), hi.toordinal() + 366)
        days: list[int] = []
        unknown: list[int] = []
        for ordinal in range(first, last + 1):
            day = date.fromordinal(ordinal)
            answer = self.calendar.is_workday(day)
            if answer is None:
                unknown.append(ordinal)
                answer = day.weekday() < 5
            if answer:
                days.append(ordinal)
        self._start, self._end = date.fromordinal(first), date.fromordinal(last)
        self._workdays, self._unknown = days, unknown


def chain_at(
    conn: Connection, grid_codes: Iterable[str], moment: datetime
) -> dict[str, dict[str, str]]:
    """grid -> {post: person} as held at `moment` (accountability goes to who held it then)."""
    codes = sorted(set(grid_codes))
    if not codes:
        return {}
    rows = conn.execute(
        select(post_tenures.c.grid, post_tenures.c.post, post_tenures.c.person).where(
            post_tenures.c.grid.in_(codes),
            post_tenures.c.from_at <= moment,
            or_(post_tenures.c.to_at.is_(None), post_tenures.c.to_at > moment),
        )
    ).all()
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for grid, post, person in rows:
        out[grid][post] = person
    return dict(out)


class _Tenures:
    """Every tenure of the grids in question, to find who held a post at many moments."""

    def __init__(self, conn: Connection, codes: Iterable[str]) -> None:
        self.by_grid: dict[str, list[tuple[str, str, datetime, datetime | None]]] = defaultdict(
            list
        )
        wanted = sorted(set(codes))
        for start in range(0, len(wanted), 500):
            for grid, post, person, f, t in conn.execute(
                select(
                    post_tenures.c.grid, post_tenures.c.post, post_tenures.c.person,
                    post_tenures.c.from_at, post_tenures.c.to_at,
                ).where(post_tenures.c.grid.in_(wanted[start : start + 500]))
            ):  # fmt: skip
                self.by_grid[grid].append((post, person, f, t))

    def at(self, grid: str, moment: datetime) -> dict[str, str]:
        return {
            post: person
            for post, person, f, t in self.by_grid.get(grid, ())
            if f <= moment and (t is None or t > moment)
        }


def _stored(column: ColumnElement[datetime]) -> ColumnElement[Any]:
    """A `UTCDateTime` column as stored: sortable UTC text on SQLite, naive UTC elsewhere."""
    return type_coerce(column, String)


def _aware(stored: Any) -> datetime:
    """A stored `UTCDateTime` value as an aware date-time."""
    moment = datetime.fromisoformat(stored) if isinstance(stored, str) else stored
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=UTC)


class _LocalDates:
    """The local date of stored instants, remembered by the minute.

    Every UTC offset in use since 1972 is a whole number of minutes, so instants within one UTC
    minute fall on the same local date.
    """

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.seen: dict[Any, date] = {}

    def __call__(self, stored: Any) -> date:
        minute = stored[:16] if isinstance(stored, str) else stored.replace(second=0, microsecond=0)
        day = self.seen.get(minute)
        if day is None:
            day = self.seen[minute] = _aware(stored).astimezone(self.tz).date()
        return day


def _grid_names(conn: Connection) -> dict[str, str]:
    return {str(code): str(name) for code, name in conn.execute(select(grids.c.code, grids.c.name))}


# ---------------------------------------------------------------- overdue


def overdue_report(
    conn: Connection,
    as_of: datetime,
    policy: Policy,
    calendar: WorkCalendar,
    *,
    chain_head: str | None = None,
) -> OverdueReport:
    """Every open, unparked step past the deadline in force at `as_of`."""
    s = step_segments.c
    open_at = and_(s.started_at <= as_of, or_(s.ended_at.is_(None), s.ended_at > as_of))
    # Ordered here, not by the database: SQLite sorts NULL units first and PostgreSQL last,
    # and a PostgreSQL server's collation may not compare text byte by byte as SQLite does.
    # Python's code-point order is the byte order of UTF-8, SQLite's BINARY collation.
    rows = sorted(
        conn.execute(select(step_segments).where(open_at, s.due < as_of)).all(),
        key=lambda r: (r.grid, r.unit is not None, r.unit or "", r.step, r.hazard_id),
    )
    open_cases = conn.execute(
        select(func.count(func.distinct(s.hazard_id))).where(open_at)
    ).scalar_one()
    later = step_segments.alias("later")
    parked = conn.execute(
        select(func.count(func.distinct(s.hazard_id))).where(
            s.end_reason == "Parked",  # served by the partial index ix_segments_parked
            s.ended_at <= as_of,
            ~select(later.c.seq)
            .where(
                later.c.hazard_id == s.hazard_id,
                later.c.seq > s.seq,
                later.c.started_at <= as_of,
            )
            .exists(),
        )
    ).scalar_one()
    tz = policy.tz
    counter = WorkdayCounter(calendar)
    names = _grid_names(conn)
    tenures = _Tenures(conn, (r.grid for r in rows))
    today = as_of.astimezone(tz).date()
    out: list[OverdueRow] = []
    # A count that took in a day the calendar does not know is an estimate (Monday–Friday):
    # the row is marked, and the report names the first such day (docs/time.md).
    unknown: list[date] = []
    for r in rows:
        due_day = r.due.astimezone(tz).date()
        guessed = counter.first_unknown(due_day, today)
        if guessed is not None:
            unknown.append(guessed)
        out.append(
            OverdueRow(
                hazard_id=r.hazard_id,
                title=r.title,
                grid=r.grid,
                grid_name=names.get(r.grid),
                category=r.category,
                grade=r.grade,
                step=r.step,
                holder=r.holder,
                unit=r.unit,
                person=r.person,
                chain=tenures.at(r.grid, r.due),
                started_at=r.started_at.astimezone(tz),
                due=r.due.astimezone(tz),
                original_due=r.original_due.astimezone(tz),
                limit=r.due_limit,
                provisional=bool(r.provisional) or guessed is not None,
                overdue_working_days=counter.between(due_day, today),
                overdue_hours=round((as_of - r.due).total_seconds() / 3600, 1),
                extensions=r.extensions,
                estimated=guessed is not None,
            )
        )
    return OverdueReport(
        as_of=as_of.astimezone(tz),
        timezone=policy.timezone,
        rows=out,
        open_cases=int(open_cases),
        parked_cases=int(parked),
        chain_head=chain_head,
        estimated_from=min(unknown, default=None),
    )


# --------------------------------------------------------- accountability

# ASCII digits only: `\d` would take any script's digits (２０２６) into the file names.
_PERIOD = re.compile(r"([0-9]{4})(?:-(?:([0-9]{2})|Q([1-4])|H([12])))?", re.ASCII)

#: The years a report may be about or as of: a report file is dated from them (xlsx, a zip
#: archive, dates its entries 1980–2107), with room for a year's working days either side.
FIRST_YEAR, LAST_YEAR = 1980, 2099


def parse_period(text: str) -> Period:
    """'2026-09' (month), '2026-Q3' (quarter), '2026-H2' (half-year) or '2026' (year)."""
    m = _PERIOD.fullmatch(text.strip())
    if not m:
        raise InvalidCommand(
            f"bad period {text!r}: use 2026-09, 2026-Q3, 2026-H2 or 2026", period=text
        )
    year = int(m.group(1))
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidCommand(
            f"bad period {text!r}: the year must be from {FIRST_YEAR} to {LAST_YEAR}", period=text
        )
    if m.group(2):
        month = int(m.group(2))
        if not 1 <= month <= 12:
            raise InvalidCommand(f"bad month in period {text!r}", period=text)
        first, last = month, month
    elif m.group(3):
        q = int(m.group(3))
        first, last = 3 * q - 2, 3 * q
    elif m.group(4):
        h = int(m.group(4))
        first, last = 6 * h - 5, 6 * h
    else:
        first, last = 1, 12
    end = date(year, last, _cal.monthrange(year, last)[1])
    return Period(text.strip(), date(year, first, 1), end)


@dataclass
class _Tally:
    name: str | None = None
    due: int = 0
    handled: int = 0
    on_time: int = 0
    late: int = 0
    still_overdue: int = 0
    extended: int = 0
    rework: int = 0
    closed: int = 0
    closed_on_time: int = 0
    due_for_closure: int = 0
    days_total: int = 0
    days_count: int = 0
    estimated: bool = False  # some working days counted were past the known calendar

    def add(self, counts: list[Any], n: int) -> None:
        """Count `n` steps alike: step, handled, on time, still overdue, extended, rework, days,
        and whether those days took in a day the calendar does not know."""
        step, handled, on_time, still_overdue, extended, rework, days, guessed = counts
        self.due += n
        self.handled += handled * n
        self.on_time += on_time * n
        self.late += (handled and not on_time) * n
        self.still_overdue += still_overdue * n
        self.extended += extended * n
        self.rework += rework * n
        if step == "close":
            self.due_for_closure += n
            self.closed += handled * n
            self.closed_on_time += on_time * n
        if handled:
            self.days_total += days * n
            self.days_count += n
            self.estimated = self.estimated or guessed

    def row(self, dimension: str, key: str) -> AccountabilityRow:
        def rate(n: int, d: int) -> float | None:
            return round(n / d, 6) if d else None

        return AccountabilityRow(
            dimension=dimension, key=key, name=self.name, due=self.due, handled=self.handled,
            on_time=self.on_time, late=self.late, still_overdue=self.still_overdue,
            extended=self.extended, rework=self.rework, closed=self.closed,
            closed_on_time=self.closed_on_time, due_for_closure=self.due_for_closure,
            avg_working_days=(
                round(self.days_total / self.days_count, 2) if self.days_count else None
            ),
            indicators={
                "disposal_rate": rate(self.handled, self.due),
                "on_time_disposal_rate": rate(self.on_time, self.due),
                "overdue_unhandled_rate": rate(self.still_overdue, self.due),
                "extension_rate": rate(self.extended, self.due),
                "rework_rate": rate(self.rework, self.due_for_closure),
                "closure_rate": rate(self.closed, self.due_for_closure),
                "on_time_closure_rate": rate(self.closed_on_time, self.due_for_closure),
            },
            estimated=self.estimated,
        )  # fmt: skip


def accountability_report(
    conn: Connection,
    period: Period,
    as_of: datetime,
    policy: Policy,
    calendar: WorkCalendar,
    *,
    chain_head: str | None = None,
) -> AccountabilityReport:
    """Steps due in `period`, per unit, person and grid, with the standard indicators."""
    tz = policy.tz
    start = datetime.combine(period.start, time(0), tzinfo=tz)
    end = datetime.combine(period.end + timedelta(days=1), time(0), tzinfo=tz)
    cutoff = min(end, as_of)  # what had happened by the end of the period (or by now)
    c = steps.c
    # Date-times come back as stored (UTC text on SQLite), compared as they are, and turned
    # into date-times only where a date or a tenure is needed: the report reads every step
    # due in the period, and converting each value costs more than the rest of the work.
    rows = conn.execute(
        select(c.grid, c.unit, c.person, c.step, c.handled, c.extensions, c.reworked,
               _stored(c.due), _stored(c.started_at), _stored(c.ended_at))
        .where(c.due >= start, c.due < end, c.parked.is_(False), c.started_at < cutoff)
    ).all()  # fmt: skip
    before = stored_moment(cutoff, conn.dialect)
    counter = WorkdayCounter(calendar)
    local_date = _LocalDates(tz)
    tenures = _Tenures(conn, {r[0] for r in rows})
    chains: dict[tuple[str, Any], tuple[str, ...]] = {}  # (grid, due) -> who held its posts
    # Steps that count alike for the same holders, with how many there are.
    alike: Counter[tuple[Any, ...]] = Counter()
    estimated_from: date | None = None  # the first day past the calendar a count took in
    for grid, unit, person, step, handled_flag, extensions, reworked, due, started, ended in rows:
        handled = bool(handled_flag) and ended is not None and ended < before
        on_time = handled and ended <= due
        rectify = step == "rectify"
        chain = chains.get((grid, due))
        if chain is None:
            chain = chains[(grid, due)] = tuple(sorted(set(tenures.at(grid, _aware(due)).values())))
        days, guessed = 0, False
        if handled:
            first, last = local_date(started), local_date(ended)
            days = counter.between(first, last)
            unknown = counter.first_unknown(first, last)
            if unknown is not None:
                guessed = True
                estimated_from = unknown if estimated_from is None else min(estimated_from, unknown)
        alike[(grid, unit if rectify else None, person if rectify else None, chain, step,
               handled, on_time, not handled and due < before, extensions > 0,
               reworked if rectify else 0, days, guessed)] += 1  # fmt: skip
    names = _grid_names(conn)
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    totals = _Tally(name="total")
    for (grid, unit, person, chain, *counts), n in alike.items():
        keys: list[tuple[str, str]] = [("grid", grid)]
        if unit:
            keys.append(("unit", unit))
        persons = {*chain, person} if person else set(chain)
        keys.extend(("person", p) for p in sorted(persons))
        totals.add(counts, n)
        for holder in keys:
            tallies[holder].add(counts, n)
    for (dim, key), tally in tallies.items():
        if dim == "grid":
            tally.name = names.get(key)
    order = {"unit": 0, "person": 1, "grid": 2}
    out = [
        t.row(dim, key)
        for (dim, key), t in sorted(tallies.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]
    return AccountabilityReport(
        period=period,
        as_of=as_of.astimezone(tz),
        timezone=policy.timezone,
        rows=out,
        totals=totals.row("total", "total"),
        chain_head=chain_head,
        estimated_from=estimated_from,
    )
