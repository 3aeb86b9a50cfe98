"""China's working-day calendar: the package's years, the operator's file, and its errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from adapters.calendars import ChinaCalendar, YearSchedule
from loop.errors import CalendarError
from loop.policy import WeekdayCalendar, WorkCalendar

EXAMPLE = """
# Each table is one year the State Council has published.
[2027]
holidays = [2027-01-01, 2027-02-08, 2027-02-09, 2027-02-10]
workdays = [2027-02-06]
"""


def write(tmp_path: Path, text: str, name: str = "calendar-2027.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestPackageYears:
    """Years `chinese-calendar` knows come from the package, make-up days included."""

    def test_national_day_is_a_holiday(self) -> None:
        assert ChinaCalendar().is_workday(date(2026, 10, 1)) is False

    def test_the_make_up_saturday_after_national_day_is_a_working_day(self) -> None:
        assert ChinaCalendar().is_workday(date(2026, 10, 10)) is True

    def test_an_ordinary_weekday_and_weekend_are_what_they_seem(self) -> None:
        calendar = ChinaCalendar()
        assert calendar.is_workday(date(2026, 10, 12)) is True
        assert calendar.is_workday(date(2026, 10, 11)) is False

    def test_a_year_the_package_does_not_know_is_answered_none(self) -> None:
        calendar = ChinaCalendar()
        assert calendar.is_workday(date(2027, 1, 4)) is None
        assert calendar.is_workday(date(2003, 6, 2)) is None

    def test_known_years_run_from_2004_to_the_last_published_year(self) -> None:
        years = ChinaCalendar().known_years()
        assert years[0] == 2004
        assert 2026 in years
        assert 2027 not in years

    def test_both_calendars_satisfy_the_protocol(self) -> None:
        calendars: list[WorkCalendar] = [ChinaCalendar(), WeekdayCalendar()]
        assert [c.is_workday(date(2026, 10, 12)) for c in calendars] == [True, True]


class TestOperatorFile:
    """The operator's file adds years the package does not know yet."""

    def test_no_file_means_no_overrides(self) -> None:
        assert ChinaCalendar.from_file(None).overrides == {}

    def test_a_listed_holiday_on_a_weekday_is_a_day_off(self, tmp_path: Path) -> None:
        calendar = ChinaCalendar.from_file(write(tmp_path, EXAMPLE))
        assert calendar.is_workday(date(2027, 1, 1)) is False
        assert calendar.is_workday(date(2027, 2, 9)) is False

    def test_a_listed_make_up_saturday_is_a_working_day(self, tmp_path: Path) -> None:
        calendar = ChinaCalendar.from_file(write(tmp_path, EXAMPLE))
        assert calendar.is_workday(date(2027, 2, 6)) is True

    def test_other_days_of_a_listed_year_are_monday_to_friday(self, tmp_path: Path) -> None:
        calendar = ChinaCalendar.from_file(write(tmp_path, EXAMPLE))
        assert calendar.is_workday(date(2027, 1, 4)) is True
        assert calendar.is_workday(date(2027, 1, 9)) is False

    def test_the_file_adds_its_years_to_the_known_years(self, tmp_path: Path) -> None:
        calendar = ChinaCalendar.from_file(write(tmp_path, EXAMPLE))
        assert 2027 in calendar.known_years()
        assert calendar.is_workday(date(2028, 1, 4)) is None

    def test_a_year_in_the_file_overrides_the_package(self) -> None:
        calendar = ChinaCalendar({2026: YearSchedule(frozenset(), frozenset())})
        assert calendar.is_workday(date(2026, 10, 1)) is True
        assert calendar.is_workday(date(2026, 10, 10)) is False

    def test_a_weekend_holiday_may_be_listed(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[2027]\nholidays = [2027-02-13]\n")
        assert ChinaCalendar.from_file(path).is_workday(date(2027, 2, 13)) is False


class TestFileErrors:
    """A bad calendar file is refused with a CalendarError naming the file and the problem."""

    def test_an_unreadable_file_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(
            CalendarError, match=r"cannot read calendar file .*missing\.toml"
        ) as info:
            ChinaCalendar.from_file(tmp_path / "missing.toml")
        assert info.value.code == "invalid_calendar"

    def test_a_file_that_is_not_toml_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[2027\nholidays = [")
        with pytest.raises(CalendarError, match=r"calendar-2027\.toml: not valid TOML"):
            ChinaCalendar.from_file(path)

    def test_a_date_outside_its_years_table_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[2027]\nholidays = [2027-01-01, 2026-12-31]\n")
        with pytest.raises(
            CalendarError, match=r"calendar-2027\.toml: \[2027\]\.holidays lists 2026-12-31"
        ):
            ChinaCalendar.from_file(path)

    def test_a_date_both_holiday_and_working_day_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[2027]\nholidays = [2027-02-06]\nworkdays = [2027-02-06]\n")
        with pytest.raises(
            CalendarError, match=r"calendar-2027\.toml: .*2027-02-06 as both a holiday and"
        ):
            ChinaCalendar.from_file(path)

    def test_a_make_up_working_day_on_a_weekday_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[2027]\nworkdays = [2027-02-05]\n")
        with pytest.raises(
            CalendarError,
            match=r"calendar-2027\.toml: \[2027\]\.workdays lists 2027-02-05, which is not",
        ):
            ChinaCalendar.from_file(path)

    @pytest.mark.parametrize(
        "text",
        [
            '[2027]\nholidays = ["2027-01-01"]\n',
            "[2027]\nholidays = [2027-01-01T00:00:00]\n",
            "[2027]\nholidays = 2027-01-01\n",
        ],
    )
    def test_a_value_that_is_not_a_list_of_dates_is_refused(
        self, tmp_path: Path, text: str
    ) -> None:
        with pytest.raises(CalendarError, match=r"\[2027\]\.holidays must be a list of dates"):
            ChinaCalendar.from_file(write(tmp_path, text))

    @pytest.mark.parametrize(
        "text", ["[twenty27]\n", "holidays = [2027-01-01]\n", '["２０２７"]\n']
    )
    def test_a_table_that_is_not_a_year_is_refused(self, tmp_path: Path, text: str) -> None:
        with pytest.raises(CalendarError, match="expected one \\[YYYY\\] table per year"):
            ChinaCalendar.from_file(write(tmp_path, text))

    def test_an_unknown_key_in_a_year_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(CalendarError, match=r"\[2027\] has unknown keys: holiday"):
            ChinaCalendar.from_file(write(tmp_path, "[2027]\nholiday = [2027-01-01]\n"))
