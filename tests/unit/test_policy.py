"""Time limits and deadlines: the policy file, the working-day arithmetic, pauses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from adapters.calendars import ChinaCalendar
from loop.errors import DueRequired, InvalidPolicy
from loop.policy import (
    ESCALATION_LEVELS,
    GRADES,
    STEPS,
    Deadline,
    EscalationRule,
    Limit,
    Policy,
    WeekdayCalendar,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
POLICY = Policy.load()
CHINA = ChinaCalendar()
WEEKDAYS = WeekdayCalendar()

GOOD_TOML = """
version = "test-1"
timezone = "Asia/Shanghai"

[limits.general]
report = "24h"
assign = "1wd"
rectify = "10wd"
verify = "3wd"
close = "1wd"

[limits.major]
report = "2h"
assign = "4h"
rectify = "plan"
verify = "10d"
close = "1wd"
"""

# An operator's file for 2027 (made up: the State Council has not published 2027 yet).
CALENDAR_2027 = """
[2027]
holidays = [2027-01-01, 2027-02-08, 2027-02-09, 2027-02-10]
workdays = [2027-02-06]
"""


def at(text: str) -> datetime:
    """An aware date-time from ISO text."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


def end_of(day: str) -> datetime:
    """23:59:59 Beijing time of an ISO date: how day limits end."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), SHANGHAI).replace(
        hour=23, minute=59, second=59
    )


def calendar_2027(tmp_path: Path) -> ChinaCalendar:
    path = tmp_path / "calendar-2027.toml"
    path.write_text(CALENDAR_2027, encoding="utf-8")
    return ChinaCalendar.from_file(path)


class TestWorkingDayLimits:
    """A working-day limit counts from the day after the start and ends at 23:59:59 local time."""

    def test_ten_working_days_from_28_september_2026_end_on_16_october(self) -> None:
        # 29, 30 Sep; 1-7 Oct off; 8, 9, 10 (make-up Saturday), 12, 13, 14, 15, 16 Oct.
        deadline = POLICY.deadline("general", "rectify", at("2026-09-28T10:00+08:00"), CHINA)
        assert deadline == Deadline(
            due=at("2026-10-16T23:59:59+08:00"),
            limit="10wd",
            provisional=False,
            policy_version="default-2026.1",
        )
        assert deadline.due.tzinfo == SHANGHAI
        assert deadline.due.microsecond == 0

    def test_the_start_day_is_not_counted_even_when_the_step_starts_at_midnight(self) -> None:
        deadline = POLICY.deadline("general", "assign", at("2026-09-28T00:00+08:00"), CHINA)
        assert deadline.due == end_of("2026-09-29")

    def test_the_start_day_is_the_local_date_in_the_policy_timezone(self) -> None:
        # 20:00 UTC on Friday 2026-11-20 is already Saturday the 21st in Beijing.
        deadline = POLICY.deadline("general", "assign", at("2026-11-20T20:00+00:00"), CHINA)
        assert deadline.due == end_of("2026-11-23")

    def test_a_start_on_a_holiday_counts_from_the_next_working_day(self) -> None:
        deadline = POLICY.deadline("general", "verify", at("2026-10-03T09:00+08:00"), CHINA)
        assert deadline.due == end_of("2026-10-10")

    def test_a_deadline_running_into_an_unknown_year_is_provisional_and_does_not_crash(
        self,
    ) -> None:
        # 25, 28-31 Dec 2026 (known), then 2027 counted Monday to Friday: 1, 4, 5, 6, 7 Jan.
        deadline = POLICY.deadline("general", "rectify", at("2026-12-24T10:00+08:00"), CHINA)
        assert deadline.due == end_of("2027-01-07")
        assert deadline.provisional is True

    def test_an_operator_file_makes_2027_known_and_its_holiday_is_skipped(
        self, tmp_path: Path
    ) -> None:
        calendar = calendar_2027(tmp_path)
        deadline = POLICY.deadline("general", "rectify", at("2026-12-24T10:00+08:00"), calendar)
        assert deadline.due == end_of("2027-01-08")  # 1 January is a holiday in the file
        assert deadline.provisional is False

    def test_an_operator_file_make_up_saturday_is_counted(self, tmp_path: Path) -> None:
        calendar = calendar_2027(tmp_path)
        # Thursday 4 Feb 2027: Friday the 5th, then Saturday the 6th (make-up working day).
        start = at("2027-02-04T10:00+08:00")
        assert POLICY.deadline("general", "verify", start, calendar).due == end_of("2027-02-11")
        assert POLICY.deadline("general", "verify", start, WEEKDAYS).due == end_of("2027-02-09")
        two_days = Policy.from_toml(GOOD_TOML.replace('verify = "3wd"', 'verify = "2wd"'))
        assert two_days.deadline("general", "verify", start, calendar).due == end_of("2027-02-06")


class TestHourAndDayLimits:
    """Hour limits add elapsed hours; calendar-day limits end at 23:59:59 of the Nth day."""

    def test_an_hour_limit_adds_hours_to_the_start(self) -> None:
        deadline = POLICY.deadline("general", "report", at("2026-09-30T22:15+08:00"), CHINA)
        assert deadline.due == at("2026-10-01T22:15+08:00")  # holidays do not matter for hours
        assert (deadline.limit, deadline.provisional) == ("24h", False)

    def test_an_hour_deadline_is_expressed_in_the_policy_timezone(self) -> None:
        deadline = POLICY.deadline("major", "report", at("2026-09-30T23:00+00:00"), CHINA)
        assert deadline.due == at("2026-10-01T09:00+08:00")
        assert deadline.due.tzinfo == SHANGHAI

    def test_an_hour_limit_counts_real_hours_across_a_daylight_saving_change(self) -> None:
        berlin = Policy.from_toml(GOOD_TOML.replace("Asia/Shanghai", "Europe/Berlin"))
        deadline = berlin.deadline("general", "report", at("2026-03-28T12:00+01:00"), CHINA)
        assert deadline.due == at("2026-03-29T13:00+02:00")
        assert deadline.due - at("2026-03-28T12:00+01:00") == timedelta(hours=24)

    def test_a_calendar_day_limit_ends_at_the_end_of_the_nth_day_after_the_start_day(
        self,
    ) -> None:
        deadline = POLICY.deadline("major", "verify", at("2026-09-28T23:30+08:00"), CHINA)
        assert deadline.due == end_of("2026-10-08")
        assert deadline.limit == "10d"

    def test_a_calendar_day_limit_counts_from_the_local_start_date(self) -> None:
        deadline = POLICY.deadline("major", "verify", at("2026-09-28T20:00+00:00"), CHINA)
        assert deadline.due == end_of("2026-10-09")

    def test_a_plan_limit_requires_the_command_to_give_due(self) -> None:
        with pytest.raises(DueRequired) as info:
            POLICY.deadline("major", "rectify", at("2026-09-28T10:00+08:00"), CHINA)
        assert info.value.code == "due_required"

    def test_a_naive_start_is_refused(self) -> None:
        with pytest.raises(ValueError, match="aware"):
            POLICY.deadline("general", "rectify", datetime(2026, 9, 28, 10), CHINA)

    def test_a_given_deadline_is_kept_in_the_policy_timezone(self) -> None:
        deadline = POLICY.given_deadline(at("2026-12-31T16:00+00:00"))
        assert deadline == Deadline(at("2027-01-01T00:00+08:00"), "given", False, POLICY.version)
        assert deadline.due.tzinfo == SHANGHAI


class TestLimit:
    """Limits are read strictly and print back as they were written."""

    @pytest.mark.parametrize(
        ("text", "limit"),
        [
            ("24h", Limit(24, "h")),
            ("1wd", Limit(1, "wd")),
            ("10wd", Limit(10, "wd")),
            ("10d", Limit(10, "d")),
            ("plan", Limit(0, "plan")),
        ],
    )
    def test_a_good_limit_parses_and_round_trips(self, text: str, limit: Limit) -> None:
        assert Limit.parse(text) == limit
        assert str(limit) == text

    @pytest.mark.parametrize(
        "text",
        ["ten days", "0wd", "10", "wd", "10w", "-1d", "10 wd", " 10d", "10d\n", "010d", "Plan",
         "", "1.5h", "١٠d", "99999wd"],
    )  # fmt: skip
    def test_a_bad_limit_is_refused_naming_the_text(self, text: str) -> None:
        with pytest.raises(InvalidPolicy) as info:
            Limit.parse(text)
        assert repr(text) in info.value.message

    def test_a_limit_cannot_be_built_with_a_zero_amount(self) -> None:
        with pytest.raises(InvalidPolicy):
            Limit(0, "wd")


class TestPolicyFile:
    """A policy file is refused with a message naming the source and the bad key or value."""

    def test_the_default_policy_loads_with_every_grade_and_step(self) -> None:
        assert POLICY.version == "default-2026.1"
        assert POLICY.timezone == "Asia/Shanghai"
        assert POLICY.tz == SHANGHAI
        for grade in GRADES:
            for step in STEPS:
                assert isinstance(POLICY.limit_for(grade, step), Limit)

    def test_the_default_policy_has_the_limits_of_the_domain_brief(self) -> None:
        as_text = {g: {s: str(POLICY.limit_for(g, s)) for s in STEPS} for g in GRADES}
        assert as_text == {
            "general": {"report": "24h", "assign": "1wd", "rectify": "10wd", "verify": "3wd",
                        "close": "1wd"},
            "major": {"report": "2h", "assign": "4h", "rectify": "plan", "verify": "10d",
                      "close": "1wd"},
        }  # fmt: skip

    def test_the_default_escalation_ladder_is_sorted_by_lateness(self) -> None:
        assert POLICY.escalation == (
            EscalationRule("reminder", 0),
            EscalationRule("supervision_letter", 3),
            EscalationRule("public_notice", 10),
        )
        assert all(rule.level in ESCALATION_LEVELS for rule in POLICY.escalation)

    def test_a_policy_file_on_disk_loads(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.toml"
        path.write_text(GOOD_TOML, encoding="utf-8")
        assert Policy.load(path).version == "test-1"

    def test_a_missing_step_is_refused_naming_it(self) -> None:
        text = GOOD_TOML.replace('verify = "3wd"\n', "")
        with pytest.raises(
            InvalidPolicy, match=r"ops\.toml: \[limits\.general\] is missing `verify`"
        ):
            Policy.from_toml(text, source="ops.toml")

    def test_a_missing_grade_is_refused_naming_it(self) -> None:
        text = GOOD_TOML.split("[limits.major]")[0]
        with pytest.raises(InvalidPolicy, match=r"\[limits\.major\] is missing"):
            Policy.from_toml(text)

    def test_an_unknown_timezone_is_refused_naming_it(self) -> None:
        text = GOOD_TOML.replace("Asia/Shanghai", "Asia/Beijing")
        with pytest.raises(InvalidPolicy, match=r"ops\.toml: timezone: .*'Asia/Beijing'"):
            Policy.from_toml(text, source="ops.toml")

    def test_a_bad_limit_is_refused_naming_the_key_and_value(self) -> None:
        text = GOOD_TOML.replace('rectify = "10wd"', 'rectify = "ten days"')
        with pytest.raises(InvalidPolicy, match=r"limits\.general\.rectify: bad limit 'ten days'"):
            Policy.from_toml(text)

    def test_a_limit_that_is_not_a_string_is_refused(self) -> None:
        text = GOOD_TOML.replace('report = "24h"', "report = 24")
        with pytest.raises(InvalidPolicy, match=r"limits\.general\.report"):
            Policy.from_toml(text)

    def test_an_unknown_step_or_top_level_key_is_refused(self) -> None:
        with pytest.raises(InvalidPolicy, match="unknown steps: inspect"):
            Policy.from_toml(GOOD_TOML.replace("[limits.major]", 'inspect = "1d"\n[limits.major]'))
        with pytest.raises(InvalidPolicy, match="unknown keys: timezon"):
            Policy.from_toml('timezon = "UTC"\n' + GOOD_TOML)

    def test_a_bad_escalation_rule_is_refused(self) -> None:
        text = GOOD_TOML.replace("[limits.general]", "[[escalation]]\nlevel = 'shout'\n"
                                 "after_working_days_late = 1\n\n[limits.general]")  # fmt: skip
        with pytest.raises(InvalidPolicy, match=r"escalation\[0\]\.level 'shout'"):
            Policy.from_toml(text)

    def test_text_that_is_not_toml_is_refused(self) -> None:
        with pytest.raises(InvalidPolicy, match=r"ops\.toml: not valid TOML"):
            Policy.from_toml("version = ", source="ops.toml")

    def test_an_unreadable_file_is_refused_naming_it(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.toml"
        with pytest.raises(InvalidPolicy, match=r"nope\.toml") as info:
            Policy.load(missing)
        assert info.value.code == "invalid_policy"

    def test_a_policy_built_in_code_refuses_a_step_it_leaves_out(self) -> None:
        policy = Policy("v", "Asia/Shanghai", {"general": {"report": Limit(1, "h")}})
        with pytest.raises(InvalidPolicy, match="general / rectify"):
            policy.deadline("general", "rectify", at("2026-09-28T10:00+08:00"), CHINA)

    def test_a_policy_built_in_code_checks_its_timezone_and_ladder(self) -> None:
        with pytest.raises(InvalidPolicy, match="Mars/Base"):
            Policy("v", "Mars/Base", {})
        ladder = (EscalationRule("summons", 5), EscalationRule("reminder", 0))
        with pytest.raises(InvalidPolicy, match="sorted"):
            Policy("v", "Asia/Shanghai", {}, ladder)

    def test_a_policy_is_immutable(self) -> None:
        with pytest.raises(TypeError):
            POLICY.limits["general"]["report"] = Limit(1, "h")  # type: ignore[index]


class TestPause:
    """While a case is parked its step clock stops."""

    def test_an_hour_deadline_moves_by_the_parked_duration(self) -> None:
        deadline = POLICY.deadline("general", "report", at("2026-09-28T10:00+08:00"), CHINA)
        shifted = POLICY.shift_for_pause(
            deadline, at("2026-09-28T12:00+08:00"), at("2026-09-28T18:30+08:00"), CHINA
        )
        assert shifted == Deadline(at("2026-09-29T16:30+08:00"), "24h", False, POLICY.version)

    def test_a_given_deadline_moves_by_the_parked_duration(self) -> None:
        deadline = POLICY.given_deadline(at("2026-10-20T18:00+08:00"))
        shifted = POLICY.shift_for_pause(
            deadline, at("2026-10-01T00:00+00:00"), at("2026-10-03T00:00+00:00"), CHINA
        )
        assert shifted.due == at("2026-10-22T18:00+08:00")
        assert shifted.limit == "given"

    def test_a_working_day_deadline_moves_by_the_working_days_parked_across_a_holiday(
        self,
    ) -> None:
        deadline = POLICY.deadline("general", "rectify", at("2026-09-28T10:00+08:00"), CHINA)
        # Parked 30 Sep to 9 Oct: only 8 and 9 October were working days.
        shifted = POLICY.shift_for_pause(
            deadline, at("2026-09-30T09:00+08:00"), at("2026-10-09T09:00+08:00"), CHINA
        )
        assert shifted.due == end_of("2026-10-20")  # Friday the 16th + Monday 19 + Tuesday 20
        assert (shifted.limit, shifted.provisional) == ("10wd", False)

    def test_a_pause_within_one_day_does_not_move_a_working_day_deadline(self) -> None:
        deadline = POLICY.deadline("general", "rectify", at("2026-09-28T10:00+08:00"), CHINA)
        shifted = POLICY.shift_for_pause(
            deadline, at("2026-09-29T09:00+08:00"), at("2026-09-29T17:00+08:00"), CHINA
        )
        assert shifted == deadline

    def test_a_pause_into_an_unknown_year_makes_the_deadline_provisional(self) -> None:
        deadline = POLICY.deadline("general", "rectify", at("2026-12-01T10:00+08:00"), CHINA)
        assert deadline.provisional is False
        shifted = POLICY.shift_for_pause(
            deadline, at("2026-12-02T09:00+08:00"), at("2027-01-05T09:00+08:00"), CHINA
        )
        assert shifted.provisional is True
        assert shifted.due > deadline.due

    def test_a_provisional_deadline_stays_provisional(self) -> None:
        deadline = POLICY.deadline("general", "rectify", at("2026-12-24T10:00+08:00"), CHINA)
        shifted = POLICY.shift_for_pause(
            deadline, at("2026-12-25T09:00+08:00"), at("2026-12-25T10:00+08:00"), CHINA
        )
        assert shifted.provisional is True

    @pytest.mark.parametrize("calendar", [CHINA, WEEKDAYS], ids=["china", "weekdays"])
    def test_a_pause_of_more_than_ten_years_moves_the_deadline_by_its_working_days(
        self, calendar: ChinaCalendar | WeekdayCalendar
    ) -> None:
        # The guard against nonsense limits (about ten years) does not cap a pause's shift.
        deadline = POLICY.deadline("general", "rectify", at("2010-01-04T11:00+08:00"), calendar)
        assert deadline.due == end_of("2010-01-18")
        shifted = POLICY.shift_for_pause(
            deadline, at("2010-01-05T11:00+08:00"), at("2026-09-28T10:00+08:00"), calendar
        )
        parked, _ = POLICY.working_days_between(date(2010, 1, 5), date(2026, 9, 28), calendar)
        assert parked > 4000
        due_day = shifted.due.date()
        assert POLICY.working_days_between(date(2010, 1, 18), due_day, calendar)[0] == parked
        assert calendar.is_workday(due_day) is True
        assert (shifted.limit, shifted.provisional) == ("10wd", False)

    def test_a_long_pause_whose_shift_runs_past_the_known_calendar_is_provisional(self) -> None:
        deadline = POLICY.deadline("general", "rectify", at("2016-02-15T11:00+08:00"), CHINA)
        assert deadline.provisional is False
        shifted = POLICY.shift_for_pause(
            deadline, at("2016-02-16T11:00+08:00"), at("2026-12-21T10:00+08:00"), CHINA
        )
        assert shifted.due.year == 2027  # into a year chinese-calendar does not know
        assert (shifted.limit, shifted.provisional) == ("10wd", True)

    def test_a_pause_that_ends_before_it_starts_changes_nothing(self) -> None:
        deadline = POLICY.deadline("general", "report", at("2026-09-28T10:00+08:00"), CHINA)
        moment = at("2026-09-28T12:00+08:00")
        assert POLICY.shift_for_pause(deadline, moment, moment, CHINA) == deadline


class TestWorkingDaysBetween:
    """Working days are counted in (after, up_to], saying whether any were guessed."""

    def test_the_acceptance_span_holds_ten_working_days(self) -> None:
        assert POLICY.working_days_between(date(2026, 9, 28), date(2026, 10, 16), CHINA) == (
            10,
            False,
        )

    def test_an_empty_or_reversed_span_holds_none(self) -> None:
        day = date(2026, 9, 28)
        assert POLICY.working_days_between(day, day, CHINA) == (0, False)
        assert POLICY.working_days_between(day, day - timedelta(days=9), CHINA) == (0, False)

    def test_a_week_on_the_weekday_calendar_holds_five(self) -> None:
        assert POLICY.working_days_between(date(2030, 1, 6), date(2030, 1, 13), WEEKDAYS) == (
            5,
            False,
        )

    def test_days_in_an_unknown_year_are_counted_monday_to_friday_and_flagged(self) -> None:
        # 31 Dec 2026 (Thursday, known) + 1, 4 Jan 2027 (weekdays, guessed).
        assert POLICY.working_days_between(date(2026, 12, 30), date(2027, 1, 4), CHINA) == (
            3,
            True,
        )


def _counts(day: date) -> bool:
    """Whether the policy counts `day`: the China calendar, or Monday–Friday where unknown."""
    answer = CHINA.is_workday(day)
    return day.weekday() < 5 if answer is None else answer


class TestWorkingDayProperty:
    """For any start and any N, the deadline lands on the Nth working day after the start."""

    @given(
        start=st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)),
        n=st.integers(min_value=1, max_value=30),
        hour=st.integers(min_value=0, max_value=23),
    )
    def test_the_due_day_is_a_working_day_after_the_start_with_n_working_days_up_to_it(
        self, start: date, n: int, hour: int
    ) -> None:
        policy = Policy.from_toml(GOOD_TOML.replace('rectify = "10wd"', f'rectify = "{n}wd"'))
        begins = datetime(start.year, start.month, start.day, hour, tzinfo=SHANGHAI)
        deadline = policy.deadline("general", "rectify", begins, CHINA)
        due_day = deadline.due.date()
        assert deadline.due == end_of(due_day.isoformat())
        assert due_day > start
        assert _counts(due_day)
        count, guessed = policy.working_days_between(start, due_day, CHINA)
        assert count == n
        assert guessed == deadline.provisional
        assert deadline.provisional == (due_day.year > 2026)

    @given(
        moment=st.datetimes(
            min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
        ),
        n=st.integers(min_value=1, max_value=30),
    )
    def test_the_start_day_is_the_local_date_whatever_the_timezone_of_the_input(
        self, moment: datetime, n: int
    ) -> None:
        policy = Policy.from_toml(GOOD_TOML.replace('rectify = "10wd"', f'rectify = "{n}wd"'))
        from_utc = policy.deadline("general", "rectify", moment, CHINA)
        from_local = policy.deadline("general", "rectify", moment.astimezone(SHANGHAI), CHINA)
        assert from_utc == from_local


def test_a_limit_keeps_its_text_and_its_hours() -> None:
    """What `Policy.deadline` asks of a limit for every deadline, kept when it is made."""
    assert [str(Limit.parse(t)) for t in ("24h", "2h", "10wd", "3d", "plan")] == [
        "24h", "2h", "10wd", "3d", "plan",
    ]  # fmt: skip
    assert Limit(24, "h").hours == timedelta(hours=24)
    assert Limit(3, "d").hours is None
    assert Limit(3, "wd").hours is None
    assert Limit(24, "h") == Limit.parse("24h")  # the kept values are not fields
    assert repr(Limit(24, "h")) == "Limit(amount=24, unit='h')"


def test_a_policy_keeps_its_zone() -> None:
    assert POLICY.tz is ZoneInfo(POLICY.timezone)
    assert Policy.load() == Policy.load()  # the kept zone is not a field
