"""The reports' working-day counter past the known calendar: it names the first day it guessed,
and it never steps outside the dates Python has."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from adapters.calendars import ChinaCalendar
from loop.policy import WeekdayCalendar
from projections.reports import WorkdayCounter

#: The State Council's 2027 days off as an operator would add them (Spring Festival week).
CALENDAR_2027 = (
    "[2027]\nholidays = [2027-01-01, 2027-02-08, 2027-02-09, 2027-02-10, 2027-02-11, "
    "2027-02-12]\nworkdays = []\n"
)


def calendar_2027(folder: Path) -> ChinaCalendar:
    path = folder / "calendar-2027.toml"
    path.write_text(CALENDAR_2027, encoding="utf-8")
    return ChinaCalendar.from_file(path)


class TestFirstUnknown:
    def test_a_count_inside_the_known_calendar_guessed_nothing(self) -> None:
        counter = WorkdayCounter(ChinaCalendar())
        assert counter.first_unknown(date(2026, 9, 28), date(2026, 10, 16)) is None
        assert counter.between(date(2026, 9, 28), date(2026, 10, 16)) == 10

    def test_a_count_into_an_unknown_year_names_its_first_day(self) -> None:
        counter = WorkdayCounter(ChinaCalendar())
        assert counter.first_unknown(date(2026, 12, 20), date(2027, 2, 12)) == date(2027, 1, 1)
        assert counter.first_unknown(date(2027, 1, 10), date(2027, 2, 12)) == date(2027, 1, 11)

    def test_the_days_before_the_count_do_not_make_it_a_guess(self) -> None:
        counter = WorkdayCounter(ChinaCalendar())
        counter.between(date(2026, 12, 1), date(2027, 3, 1))  # the table now reaches into 2027
        assert counter.first_unknown(date(2026, 12, 1), date(2026, 12, 31)) is None
        assert counter.first_unknown(date(2026, 12, 31), date(2026, 12, 31)) is None

    def test_an_operator_file_for_the_year_makes_the_count_exact(self, tmp_path: Path) -> None:
        guessed = WorkdayCounter(ChinaCalendar())
        known = WorkdayCounter(calendar_2027(tmp_path))
        after, up_to = date(2026, 12, 31), date(2027, 2, 12)
        assert known.first_unknown(after, up_to) is None
        assert guessed.between(after, up_to) - known.between(after, up_to) == 6


class TestEdgesOfTheDates:
    def test_a_count_at_the_last_dates_python_has_does_not_overflow(self) -> None:
        counter = WorkdayCounter(WeekdayCalendar())
        assert counter.between(date(9999, 12, 24), date(9999, 12, 31)) == 5
        assert counter.first_unknown(date(9999, 12, 24), date(9999, 12, 31)) is None

    def test_a_count_at_the_first_dates_python_has_does_not_overflow(self) -> None:
        counter = WorkdayCounter(WeekdayCalendar())
        assert counter.between(date(1, 1, 1), date(1, 1, 8)) == 5  # 0001-01-01 was a Monday
