"""Deadlines from time limits: hours, calendar days, and working days on China's calendar."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from adapters.calendars import ChinaCalendar, YearSchedule
from loop.errors import CalendarError, DueRequired, InvalidPolicy
from loop.policy import GRADES, STEPS, Deadline, Limit, Policy, WeekdayCalendar
from tests.conftest import SHANGHAI

POLICY = Policy.load()
CHINA = ChinaCalendar()


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


class TestWorkingDays:
    """A working-day limit counts from the day after the start to the end of the Nth working day."""

    def test_ten_working_days_from_28_september_2026_end_on_16_october(self) -> None:
        d = POLICY.deadline("general", "rectify", at(2026, 9, 28, 10, 0), CHINA)
        assert d == Deadline(at(2026, 10, 16, 23, 59, 59), "10wd", False, "default-2026.1")

    def test_the_make_up_saturday_counts_and_the_holiday_week_does_not(self) -> None:
        # Friday 9 October + 1 working day = the make-up Saturday 10 October.
        d = POLICY.deadline("general", "assign", at(2026, 10, 9, 16, 0), CHINA)
        assert d.due == at(2026, 10, 10, 23, 59, 59)
        # Wednesday 30 September + 1 working day = Thursday 8 October, after the holidays.
        d = POLICY.deadline("general", "assign", at(2026, 9, 30, 16, 0), CHINA)
        assert d.due == at(2026, 10, 8, 23, 59, 59)

    def test_the_start_day_counts_in_local_time_not_utc(self) -> None:
        # 2026-09-28T20:00Z is already the 29th in Shanghai: one working day more.
        d = POLICY.deadline(
            "general", "rectify", datetime.fromisoformat("2026-09-28T20:00:00+00:00"), CHINA
        )
        assert d.due.date() == date(2026, 10, 19)

    def test_a_deadline_past_the_known_calendar_is_provisional_not_a_crash(self) -> None:
        d = POLICY.deadline("general", "rectify", at(2026, 12, 24, 10, 0), CHINA)
        assert d.provisional
        # 25, 28, 29, 30, 31 December 2026 known; then 2027 counted Monday–Friday: 1, 4, 5, 6, 7.
        assert d.due == at(2027, 1, 7, 23, 59, 59)

    def test_an_operator_calendar_file_makes_the_next_year_known(self, tmp_path: Path) -> None:
        f = tmp_path / "calendar-2027.toml"
        f.write_text("[2027]\nholidays = [2027-01-01]\nworkdays = [2027-01-09]\n")
        cal = ChinaCalendar.from_file(f)
        d = POLICY.deadline("general", "rectify", at(2026, 12, 24, 10, 0), cal)
        assert not d.provisional
        # 1 January off; Saturday 9 January is a make-up working day: 25,28,29,30,31,4,5,6,7,8.
        assert d.due == at(2027, 1, 8, 23, 59, 59)
        assert cal.is_workday(date(2027, 1, 9)) is True
        assert cal.is_workday(date(2027, 1, 1)) is False
        assert cal.is_workday(date(2028, 3, 1)) is None

    @given(
        start=st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 10, 31)),
        n=st.integers(min_value=1, max_value=30),
    )
    def test_exactly_n_working_days_lie_between_start_and_due(self, start: date, n: int) -> None:
        policy = Policy(POLICY.version, POLICY.timezone, {"general": {"rectify": Limit(n, "wd")}})
        d = policy.deadline(
            "general", "rectify", at(start.year, start.month, start.day, 12, 0), CHINA
        )
        due = d.due.date()
        assert due > start
        assert CHINA.is_workday(due) is True
        assert policy.working_days_between(start, due, CHINA) == (n, False)


class _Counting:
    """A calendar that counts how often it is asked; `fixed` as given."""

    def __init__(self, fixed: bool) -> None:
        self.asked = 0
        self.holidays: set[date] = set()
        if fixed:
            self.fixed = True  # an instance attribute is not the class's promise: ignored

    def is_workday(self, day: date) -> bool | None:
        self.asked += 1
        return day.weekday() < 5 and day not in self.holidays


class _FixedCounting(_Counting):
    fixed = True


#: One fixed calendar shared by every example (its memory too), and the same days unfixed.
_FIXED = _FixedCounting(fixed=True)
_UNFIXED = _Counting(fixed=False)


class TestRememberedSums:
    """Sums of working days are remembered only over calendars whose answers never change."""

    def test_a_fixed_calendar_is_asked_once_per_sum(self) -> None:
        cal = _FixedCounting(fixed=True)
        first = POLICY.deadline("general", "rectify", at(2026, 3, 2, 9, 0), cal)
        asked = cal.asked
        again = POLICY.deadline("general", "rectify", at(2026, 3, 2, 17, 0), cal)
        assert (again, cal.asked) == (first, asked)
        assert asked >= 10

    def test_any_other_calendar_is_asked_every_time_and_a_change_counts(self) -> None:
        cal = _Counting(fixed=True)
        first = POLICY.deadline("general", "rectify", at(2026, 3, 2, 9, 0), cal)
        cal.holidays.add(date(2026, 3, 3))
        later = POLICY.deadline("general", "rectify", at(2026, 3, 2, 9, 0), cal)
        assert later.due == first.due + timedelta(days=1)

    @given(
        start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31)),
        amount=st.integers(min_value=1, max_value=20),
    )
    def test_a_remembered_deadline_is_the_one_decided_afresh(
        self, start: datetime, amount: int
    ) -> None:
        """Deadlines over a fixed calendar are remembered by the start's local day; each is
        the one decided over the same calendar unremembered, for every policy version, zone,
        unit and amount on that day (none is taken for another's)."""
        moment = start.replace(tzinfo=SHANGHAI)
        for version in ("v1", "v2"):
            for zone in ("Asia/Shanghai", "Asia/Urumqi", "UTC"):
                for unit in ("d", "wd", "h"):
                    for n in (amount, amount + 1):
                        limits = {"general": {"rectify": Limit(n, unit)}}  # type: ignore[arg-type]
                        policy = Policy(version, zone, limits)
                        remembered = policy.deadline("general", "rectify", moment, _FIXED)
                        afresh = policy.deadline("general", "rectify", moment, _UNFIXED)
                        assert remembered == afresh
                        assert remembered.policy_version == version
                        assert remembered.due.tzinfo == ZoneInfo(zone)

    def test_two_fixed_calendars_asked_in_turn_keep_their_own_deadlines(self) -> None:
        plain, holiday = _FixedCounting(fixed=True), _FixedCounting(fixed=True)
        holiday.holidays.add(date(2026, 3, 3))
        start = at(2026, 3, 2, 9, 0)
        for _ in range(3):
            a = POLICY.deadline("general", "rectify", start, plain)
            b = POLICY.deadline("general", "rectify", start, holiday)
            assert b.due == a.due + timedelta(days=1)

    def test_the_shipped_calendars_are_fixed(self) -> None:
        assert ChinaCalendar.fixed is True
        assert WeekdayCalendar.fixed is True


class TestOtherLimits:
    """Hour and calendar-day limits, and limits set by plan."""

    def test_an_hour_limit_adds_hours(self) -> None:
        d = POLICY.deadline("major", "report", at(2026, 10, 1, 23, 30), CHINA)
        assert (d.due, d.limit) == (at(2026, 10, 2, 1, 30), "2h")

    def test_a_calendar_day_limit_ends_at_the_end_of_the_nth_day(self) -> None:
        d = POLICY.deadline("major", "verify", at(2026, 9, 28, 10, 0), CHINA)
        assert d.due == at(2026, 10, 8, 23, 59, 59)

    def test_a_plan_limit_needs_a_given_deadline(self) -> None:
        with pytest.raises(DueRequired):
            POLICY.deadline("major", "rectify", at(2026, 9, 28, 10, 0), CHINA)

    def test_a_given_deadline_is_kept_in_local_time(self) -> None:
        d = POLICY.given_deadline(datetime.fromisoformat("2026-10-01T00:00:00+00:00"))
        assert (d.due, d.limit, d.provisional) == (at(2026, 10, 1, 8, 0), "given", False)


class TestPause:
    """The step clock stops while a case is parked."""

    def test_an_hour_deadline_moves_by_the_parked_time(self) -> None:
        d = Deadline(at(2026, 9, 1, 12, 0), "24h", False, "v")
        moved = POLICY.shift_for_pause(d, at(2026, 9, 1, 8, 0), at(2026, 9, 3, 8, 0), CHINA)
        assert moved.due == at(2026, 9, 3, 12, 0)

    def test_a_working_day_deadline_moves_by_the_working_days_parked(self) -> None:
        d = Deadline(at(2026, 9, 30, 23, 59, 59), "10wd", False, "v")
        # Parked 29 September → 9 October: working days 30 Sep, 8 Oct, 9 Oct = 3.
        moved = POLICY.shift_for_pause(d, at(2026, 9, 29, 9, 0), at(2026, 10, 9, 9, 0), CHINA)
        assert moved.due == at(2026, 10, 10, 23, 59, 59)  # 8, 9 and the make-up Saturday 10

    def test_working_days_between_counts_after_the_first_up_to_the_last(self) -> None:
        assert POLICY.working_days_between(date(2026, 9, 28), date(2026, 10, 16), CHINA) == (
            10,
            False,
        )
        assert POLICY.working_days_between(date(2026, 10, 16), date(2026, 10, 16), CHINA) == (
            0,
            False,
        )


class TestPolicyFile:
    """The policy is operator data; a bad file is refused naming what is wrong."""

    def test_the_default_policy_has_every_grade_and_step(self) -> None:
        assert {(g, s) for g in GRADES for s in STEPS} == {
            (g, s) for g, steps in POLICY.limits.items() for s in steps
        }
        assert [r.level for r in POLICY.escalation] == [
            "reminder",
            "supervision_letter",
            "public_notice",
        ]

    @pytest.mark.parametrize("text", ["24h", "1wd", "10wd", "10d", "plan"])
    def test_limits_round_trip(self, text: str) -> None:
        assert str(Limit.parse(text)) == text

    @pytest.mark.parametrize("text", ["ten days", "0wd", "5w", "", "-1h"])
    def test_a_bad_limit_is_refused(self, text: str) -> None:
        with pytest.raises(InvalidPolicy, match="bad limit"):
            Limit.parse(text)

    @pytest.mark.parametrize(
        ("change", "named"),
        [
            (('rectify = "10wd"   #', '# "10wd"   #'), "missing `rectify`"),
            (('rectify = "10wd"', 'rectify = "10 days"'), "limits.general.rectify"),
            (('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"'), "Mars/Olympus"),
            (('version = "default-2026.1"', ""), "`version`"),
            (('close = "1wd"      # command', 'closing = "1wd"  # command'), "unknown steps"),
        ],
    )
    def test_a_bad_policy_file_names_the_key(
        self, tmp_path: Path, change: tuple[str, str], named: str
    ) -> None:
        text = (Path(__file__).resolve().parents[2] / "loop" / "default_policy.toml").read_text()
        assert change[0] in text
        f = tmp_path / "policy.toml"
        f.write_text(text.replace(change[0], change[1], 1))
        with pytest.raises(InvalidPolicy) as info:
            Policy.load(f)
        assert named in info.value.message
        assert str(f) in info.value.message

    def test_an_unreadable_policy_file_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidPolicy, match="cannot read"):
            Policy.load(tmp_path / "missing.toml")


class TestCalendarFile:
    """The operator's calendar file is checked before it is used."""

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            ("[2027]\nholidays = [2026-12-31]\n", "not in 2027"),
            ("[2027]\nholidays = [2027-01-04]\nworkdays = [2027-01-04]\n", "both"),
            ("[2027]\nworkdays = [2027-01-04]\n", "not a Saturday or Sunday"),
            ("[2027]\nholidays = ['2027-01-01']\n", "list of dates"),
            ("[2027]\nfestivals = []\n", "unknown keys"),
            ("[next]\nholidays = []\n", "one [YYYY] table"),
            ("[2027\n", "not valid TOML"),
        ],
    )
    def test_a_bad_calendar_file_is_refused(self, tmp_path: Path, text: str, named: str) -> None:
        f = tmp_path / "cal.toml"
        f.write_text(text)
        with pytest.raises(CalendarError, match=named.replace("[", r"\[")):
            ChinaCalendar.from_file(f)

    def test_the_file_overrides_a_year_the_package_knows(self) -> None:
        cal = ChinaCalendar({2026: YearSchedule(frozenset({date(2026, 11, 23)}), frozenset())})
        assert cal.is_workday(date(2026, 11, 23)) is False
        assert (
            cal.is_workday(date(2026, 10, 10)) is False
        )  # the package's make-up day is not in the file

    def test_the_known_years_run_to_the_last_year_of_the_package_plus_the_file(self) -> None:
        cal = ChinaCalendar({2027: YearSchedule(frozenset(), frozenset())})
        years = cal.known_years()
        assert years[0] == 2004
        assert years[-2:] == [2026, 2027]

    def test_weekdays_are_the_fallback_rule(self) -> None:
        assert WeekdayCalendar().is_workday(date(2026, 10, 1)) is True
        assert WeekdayCalendar().is_workday(date(2026, 10, 3)) is False

    def test_the_working_day_count_can_fall_back_to_weekdays(self) -> None:
        days, guessed = POLICY.working_days_between(date(2026, 12, 31), date(2027, 1, 8), CHINA)
        assert (days, guessed) == (6, True)
