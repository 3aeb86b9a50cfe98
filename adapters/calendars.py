"""China's working-day calendar: statutory holidays and make-up working days (调休).

`chinese-calendar` knows the years the State Council has published (2004–2026 in 1.11); an
operator file adds years it does not know yet, e.g. `calendar-2027.toml`:

    # One table per year, as published by the State Council.
    [2027]
    holidays = [2027-01-01, 2027-02-08, 2027-02-09]   # statutory days off on weekdays
    workdays = [2027-02-06]                           # make-up working Saturdays/Sundays

A year in the operator file overrides the package. A year neither knows is answered None, and
the policy counts it Monday–Friday and marks the deadline provisional.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import chinese_calendar

from loop.errors import CalendarError

__all__ = ["ChinaCalendar", "YearSchedule"]

_YEAR = re.compile(r"[0-9]{4}", re.ASCII)


@dataclass(frozen=True)
class YearSchedule:
    """One published year: days off that would be working days, and make-up working days."""

    holidays: frozenset[date]
    workdays: frozenset[date]


class ChinaCalendar:
    """Working days on China's statutory calendar, extended by the operator's file."""

    #: Its answers never change once built (the file is read once), so the policy may remember
    #: sums of working days over it (loop.policy).
    fixed = True

    def __init__(self, overrides: Mapping[int, YearSchedule] | None = None) -> None:
        self.overrides: dict[int, YearSchedule] = dict(overrides or {})
        self._cache: dict[date, bool | None] = {}

    @classmethod
    def from_file(cls, path: str | Path | None) -> ChinaCalendar:
        """The calendar with the operator's file (None: the package's years only)."""
        if path is None:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CalendarError(
                f"cannot read calendar file {path}: {exc}", source=str(path)
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise CalendarError(f"{path}: not valid TOML: {exc}", source=str(path)) from None
        return cls(_parse(data, str(path)))

    def known_years(self) -> list[int]:
        """Every year this calendar knows (package and operator file)."""
        years = set(self.overrides)
        year = 2004
        while True:
            try:
                chinese_calendar.is_workday(date(year, 1, 1))
            except NotImplementedError:
                break
            years.add(year)
            year += 1
        return sorted(years)

    def is_workday(self, day: date) -> bool | None:
        """Whether `day` is a working day; None when neither the file nor the package knows."""
        try:
            return self._cache[day]
        except KeyError:
            pass
        answer = self._answer(day)
        self._cache[day] = answer
        return answer

    def _answer(self, day: date) -> bool | None:
        schedule = self.overrides.get(day.year)
        if schedule is not None:
            if day in schedule.workdays:
                return True
            return day.weekday() < 5 and day not in schedule.holidays
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            return None


def _parse(data: Mapping[str, object], source: str) -> dict[int, YearSchedule]:
    years: dict[int, YearSchedule] = {}
    for key, table in data.items():
        if not _YEAR.fullmatch(key) or not isinstance(table, dict):
            raise CalendarError(
                f"{source}: expected one [YYYY] table per year, found {key!r}", source=source
            )
        year = int(key)
        unknown = set(table) - {"holidays", "workdays"}
        if unknown:
            raise CalendarError(
                f"{source}: [{key}] has unknown keys: {', '.join(sorted(unknown))}", source=source
            )
        lists: dict[str, frozenset[date]] = {}
        for name in ("holidays", "workdays"):
            values = table.get(name, [])
            # type(), not isinstance(): a TOML date-time is a datetime, which is also a date.
            if not isinstance(values, list) or not all(type(v) is date for v in values):
                raise CalendarError(
                    f"{source}: [{key}].{name} must be a list of dates (TOML YYYY-MM-DD)",
                    source=source,
                )
            outside = sorted(v for v in values if v.year != year)
            if outside:
                raise CalendarError(
                    f"{source}: [{key}].{name} lists {outside[0]}, which is not in {year}",
                    source=source,
                )
            lists[name] = frozenset(values)
        both = lists["holidays"] & lists["workdays"]
        if both:
            raise CalendarError(
                f"{source}: [{key}] lists {min(both)} as both a holiday and a working day",
                source=source,
            )
        weekday_workdays = sorted(d for d in lists["workdays"] if d.weekday() < 5)
        if weekday_workdays:
            raise CalendarError(
                f"{source}: [{key}].workdays lists {weekday_workdays[0]}, which is not a Saturday "
                "or Sunday (make-up working days fall on weekends)",
                source=source,
            )
        years[year] = YearSchedule(lists["holidays"], lists["workdays"])
    return years
