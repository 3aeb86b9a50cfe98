"""Time limits per grade and step, and the working-day arithmetic that turns them into deadlines.

The policy is operator data (TOML); the calendar is asked only whether a day is a working day.
"""

from __future__ import annotations

import re
import tomllib
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Literal, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loop.errors import DueRequired, InvalidPolicy

__all__ = [
    "ESCALATION_LEVELS",
    "GRADES",
    "STEPS",
    "Deadline",
    "EscalationRule",
    "Limit",
    "Policy",
    "WeekdayCalendar",
    "WorkCalendar",
]

STEPS = ("report", "assign", "rectify", "verify", "close")
GRADES = ("general", "major")
ESCALATION_LEVELS = ("reminder", "supervision_letter", "summons", "public_notice", "penalty")

#: A deadline may not be computed further out than this many days (a guard against nonsense
#: limits); moving a deadline for a pause may go further by the pause's own length.
MAX_SPAN_DAYS = 3660

Unit = Literal["h", "d", "wd", "plan"]
# Strict on purpose: str(Limit.parse(text)) == text, so no spaces, signs or leading zeros.
_LIMIT = re.compile(r"([1-9][0-9]*)(h|d|wd)", re.ASCII)
# A limit longer than about ten years is a typo; refuse it when the policy loads rather than
# when a command first needs it.
_MAX_AMOUNT: Mapping[str, int] = {"h": 24 * MAX_SPAN_DAYS, "d": MAX_SPAN_DAYS, "wd": 2000}


class WorkCalendar(Protocol):
    """Says whether a day is a working day; None when it has no data for that day's year."""

    def is_workday(self, day: date) -> bool | None: ...


class WeekdayCalendar:
    """Monday to Friday, every year: the fallback rule, and a plain calendar for tests."""

    #: Its answers never change, so sums of working days over it may be remembered.
    fixed = True

    def is_workday(self, day: date) -> bool | None:
        return day.weekday() < 5


_K = TypeVar("_K")
_V = TypeVar("_V")
#: At most this many answers are remembered per calendar (then the memory starts again).
_SUMS_PER_CALENDAR = 20_000


class _PerCalendar(Generic[_K, _V]):
    """Answers remembered per calendar whose answers never change (a class attribute
    `fixed = True`; any other is asked every time): a bulk load asks the same ones again and
    again. The memories are held weakly by calendar; the last calendar asked is kept at hand,
    since making the weak reference a lookup needs costs as much as the lookup saves."""

    def __init__(self) -> None:
        self._all: weakref.WeakKeyDictionary[Any, dict[_K, _V]] = weakref.WeakKeyDictionary()
        self._last: tuple[Any, dict[_K, _V]] = (None, {})  # read in one go, whatever the threads

    def of(self, calendar: Any) -> dict[_K, _V] | None:
        """The memory of `calendar`, or None if its answers may change."""
        if getattr(type(calendar), "fixed", False) is not True:
            return None
        last = self._last
        if last[0] is calendar:
            return last[1]
        memory = self._all.get(calendar)
        if memory is None:
            memory = self._all[calendar] = {}
        self._last = (calendar, memory)
        return memory


def _remember(memory: dict[_K, _V], key: _K, value: _V) -> None:
    """Keep `value` under `key`, at most `_SUMS_PER_CALENDAR` of them (then it starts again)."""
    if len(memory) >= _SUMS_PER_CALENDAR:
        memory.clear()
    memory[key] = value


#: Sums of working days ((start, n, span) -> (day, guessed)).
_SUMS: _PerCalendar[tuple[date, int, int], tuple[date, bool]] = _PerCalendar()
#: Deadlines of limits in days ((policy version, timezone, amount, unit, start's local date) ->
#: Deadline): `Policy.deadline`.
_DEADLINES: _PerCalendar[tuple[Any, ...], Deadline] = _PerCalendar()


@dataclass(frozen=True)
class Limit:
    """A time limit: N hours, N calendar days, N working days, or "by the plan"."""

    amount: int
    unit: Unit

    def __post_init__(self) -> None:
        if self.unit == "plan":
            if self.amount != 0:
                raise InvalidPolicy(f"a 'plan' limit has amount 0, not {self.amount}")
        elif self.unit not in _MAX_AMOUNT:
            raise InvalidPolicy(f"unknown limit unit {self.unit!r}")
        elif not 1 <= self.amount <= _MAX_AMOUNT[self.unit]:
            raise InvalidPolicy(
                f"a limit in {self.unit!r} must be between 1 and {_MAX_AMOUNT[self.unit]}, "
                f"not {self.amount}"
            )

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Read "24h", "10wd", "10d" or "plan"; refuse anything else."""
        if not isinstance(text, str):
            raise InvalidPolicy(f"a limit is a string like '10wd', not {text!r}")
        if text == "plan":
            return cls(0, "plan")
        m = _LIMIT.fullmatch(text)
        if not m:
            raise InvalidPolicy(
                f"bad limit {text!r}: expected Nh (hours), Nd (days), Nwd (working days) "
                "with N ≥ 1, or 'plan'"
            )
        try:
            return cls(int(m.group(1)), cast(Unit, m.group(2)))
        except InvalidPolicy as exc:
            raise InvalidPolicy(f"bad limit {text!r}: {exc.message}") from None

    # Asked for every deadline: each made once per limit and kept in its __dict__ (not fields:
    # equality and the repr are the dataclass's).
    @cached_property
    def text(self) -> str:
        """The limit as written: `str(limit)`."""
        return "plan" if self.unit == "plan" else f"{self.amount}{self.unit}"

    @cached_property
    def hours(self) -> timedelta | None:
        """A limit in hours as a `timedelta`; None for any other."""
        return timedelta(hours=self.amount) if self.unit == "h" else None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Deadline:
    """A decided deadline: when, from which limit, whether provisional, under which policy."""

    due: datetime
    limit: str
    provisional: bool
    policy_version: str


@dataclass(frozen=True)
class EscalationRule:
    """Escalate to `level` once a step is this many working days late."""

    level: str
    after_working_days_late: int


@dataclass(frozen=True)
class Policy:
    """The jurisdiction's time limits (per grade and step), timezone and escalation ladder."""

    version: str
    timezone: str
    limits: Mapping[str, Mapping[str, Limit]]
    escalation: tuple[EscalationRule, ...] = ()

    def __post_init__(self) -> None:
        # from_toml also checks every grade has every step; a policy built in code (a test's)
        # may leave steps out, and limit_for refuses those.
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidPolicy(f"unknown timezone {self.timezone!r}") from None
        for rule in self.escalation:
            if rule.level not in ESCALATION_LEVELS or rule.after_working_days_late < 0:
                raise InvalidPolicy(f"bad escalation rule {rule}")
        lates = [rule.after_working_days_late for rule in self.escalation]
        if lates != sorted(lates):
            raise InvalidPolicy("escalation rules must be sorted by after_working_days_late")
        # Frozen all the way down: a policy is shared by every command of the engine.
        frozen = {g: MappingProxyType(dict(steps)) for g, steps in self.limits.items()}
        object.__setattr__(self, "limits", MappingProxyType(frozen))

    @cached_property  # asked for every deadline: looked up once (not a field)
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # ----------------------------------------------------------- loading

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<policy>") -> Policy:
        """Read a policy from TOML text; InvalidPolicy names the bad key and the source."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidPolicy(f"{source}: not valid TOML: {exc}", source=source) from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
        """Read a policy from parsed TOML (or any mapping of the same shape)."""

        def bad(message: str) -> InvalidPolicy:
            return InvalidPolicy(f"{source}: {message}", source=source)

        unknown_keys = set(data) - {"version", "timezone", "limits", "escalation"}
        if unknown_keys:
            raise bad(f"unknown keys: {', '.join(sorted(unknown_keys))}")
        version = data.get("version")
        if not isinstance(version, str) or not version.strip():
            raise bad("`version` (a non-empty string) is required")
        timezone = data.get("timezone", "Asia/Shanghai")
        try:
            if not isinstance(timezone, str):
                raise ValueError(timezone)
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise bad(f"timezone: unknown timezone {timezone!r}") from None
        raw_limits = data.get("limits")
        if not isinstance(raw_limits, dict):
            raise bad("a [limits.general] and a [limits.major] table are required")
        limits: dict[str, dict[str, Limit]] = {}
        for grade in GRADES:
            table = raw_limits.get(grade)
            if not isinstance(table, dict):
                raise bad(f"[limits.{grade}] is missing")
            unknown = set(table) - set(STEPS)
            if unknown:
                raise bad(f"[limits.{grade}] has unknown steps: {', '.join(sorted(unknown))}")
            limits[grade] = {}
            for step in STEPS:
                if step not in table:
                    raise bad(f"[limits.{grade}] is missing `{step}`")
                try:
                    limits[grade][step] = Limit.parse(table[step])
                except InvalidPolicy as exc:
                    raise bad(f"limits.{grade}.{step}: {exc.message}") from None
        extra = set(raw_limits) - set(GRADES)
        if extra:
            raise bad(f"[limits] has unknown grades: {', '.join(sorted(extra))}")
        raw_rules = data.get("escalation", [])
        if not isinstance(raw_rules, list):
            raise bad("`escalation` must be an array of tables ([[escalation]])")
        rules: list[EscalationRule] = []
        for i, rule in enumerate(raw_rules):
            if not isinstance(rule, dict):
                raise bad(f"escalation[{i}] must be a table")
            level = rule.get("level")
            after = rule.get("after_working_days_late")
            if level not in ESCALATION_LEVELS:
                raise bad(f"escalation[{i}].level {level!r} is not one of {ESCALATION_LEVELS}")
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise bad(f"escalation[{i}].after_working_days_late must be an integer ≥ 0")
            unknown_keys = set(rule) - {"level", "after_working_days_late"}
            if unknown_keys:
                raise bad(f"escalation[{i}] has unknown keys: {', '.join(sorted(unknown_keys))}")
            rules.append(EscalationRule(str(level), after))
        rules.sort(key=lambda r: r.after_working_days_late)
        return cls(version=version, timezone=timezone, limits=limits, escalation=tuple(rules))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Policy:
        """The policy in `path`, or the shipped default policy when None."""
        if path is None:
            text = resources.files("loop").joinpath("default_policy.toml").read_text("utf-8")
            return cls.from_toml(text, source="default_policy.toml")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidPolicy(
                f"cannot read policy file {path}: {exc}", source=str(path)
            ) from None
        return cls.from_toml(text, source=str(path))

    # ---------------------------------------------------------- deadlines

    def limit_for(self, grade: str, step: str) -> Limit:
        """The limit the policy sets for `step` of a hazard of `grade`."""
        try:
            return self.limits[grade][step]
        except KeyError:
            raise InvalidPolicy(f"the policy has no limit for {grade} / {step}") from None

    def deadline(self, grade: str, step: str, start: datetime, calendar: WorkCalendar) -> Deadline:
        """The deadline of `step` for a hazard of `grade` whose step starts at `start`."""
        if start.tzinfo is None or start.utcoffset() is None:
            _require_aware(start, "a step's start")  # raises
        limit = self.limit_for(grade, step)
        provisional = False
        if limit.hours is not None:
            due = self._add_elapsed(start, limit.hours)
            return Deadline(due, limit.text, provisional, self.version)
        if limit.unit == "plan":
            raise DueRequired(
                f"the policy sets the {step} limit of a {grade} hazard by plan: give `due`",
                step=step,
                grade=grade,
            )
        local = start.astimezone(self.tz)
        # A limit in days ends at the end of a day: it depends only on the start's local date,
        # so over a calendar whose answers never change it is remembered (a bulk load starts
        # many steps on the same day).
        start_day = local.date()
        memory = _DEADLINES.of(calendar)
        key = (self.version, self.timezone, limit.amount, limit.unit, start_day)
        if memory is not None:
            found = memory.get(key)
            if found is not None:
                return found
        if limit.unit == "d":
            due = self._end_of(start_day + timedelta(days=limit.amount))
        else:
            day, provisional = self._add_working_days(start_day, limit.amount, calendar)
            due = self._end_of(day)
        decided = Deadline(due, limit.text, provisional, self.version)
        if memory is not None:
            _remember(memory, key, decided)
        return decided

    def given_deadline(self, due: datetime) -> Deadline:
        """A deadline the command gave (`due`), kept as given, in the policy's timezone."""
        _require_aware(due, "a given deadline")
        return Deadline(due.astimezone(self.tz), "given", False, self.version)

    def shift_for_pause(
        self,
        deadline: Deadline,
        paused_from: datetime,
        paused_to: datetime,
        calendar: WorkCalendar,
    ) -> Deadline:
        """The deadline moved by the time a case spent parked (its step clock stopped).

        Hour, calendar-day and given deadlines move by the parked duration; working-day
        deadlines by the working days d with paused_from's date < d ≤ paused_to's date. The
        guard against nonsense limits (MAX_SPAN_DAYS) is widened by the pause's length: a case
        parked for years moves its deadline by years of working days.
        """
        _require_aware(paused_from, "the start of a pause")
        _require_aware(paused_to, "the end of a pause")
        if paused_to <= paused_from:
            return deadline
        if deadline.limit.endswith("wd"):
            first = paused_from.astimezone(self.tz).date()
            last = paused_to.astimezone(self.tz).date()
            days, unknown = self.working_days_between(first, last, calendar)
            due_day, unknown2 = self._add_working_days(
                deadline.due.astimezone(self.tz).date(),
                days,
                calendar,
                span=MAX_SPAN_DAYS + (last - first).days,
            )
            due = self._end_of(due_day) if days else deadline.due
            provisional = deadline.provisional or unknown or (unknown2 and days > 0)
        else:
            due = self._add_elapsed(deadline.due, paused_to - paused_from)
            provisional = deadline.provisional
        return Deadline(due, deadline.limit, provisional, deadline.policy_version)

    def working_days_between(
        self, after: date, up_to: date, calendar: WorkCalendar
    ) -> tuple[int, bool]:
        """Working days d with after < d ≤ up_to, and whether any of them was counted Mon–Fri."""
        count, unknown = 0, False
        day = after + timedelta(days=1)
        if (up_to - after).days > MAX_SPAN_DAYS * 10:
            raise ValueError("span too long to count working days")
        while day <= up_to:
            is_work, guessed = _ask(calendar, day)
            unknown = unknown or guessed
            count += is_work
            day += timedelta(days=1)
        return count, unknown

    def _add_working_days(
        self, start: date, n: int, calendar: WorkCalendar, span: int = MAX_SPAN_DAYS
    ) -> tuple[date, bool]:
        """The nth working day after `start` (and whether any day was guessed Mon–Fri);
        InvalidPolicy if it lies more than `span` days after `start`."""
        sums = _SUMS.of(calendar)
        if sums is None:
            return self._count_working_days(start, n, calendar, span)
        found = sums.get((start, n, span))
        if found is None:
            found = self._count_working_days(start, n, calendar, span)
            _remember(sums, (start, n, span), found)
        return found

    @staticmethod
    def _count_working_days(
        start: date, n: int, calendar: WorkCalendar, span: int
    ) -> tuple[date, bool]:
        day, found, unknown = start, 0, False
        limit = start + timedelta(days=span)
        while found < n:
            day += timedelta(days=1)
            if day > limit:
                raise InvalidPolicy(f"{n} working days from {start} run past {limit}")
            is_work, guessed = _ask(calendar, day)
            unknown = unknown or guessed
            found += is_work
        return day, unknown

    def _end_of(self, day: date) -> datetime:
        return datetime.combine(day, time(23, 59, 59), tzinfo=self.tz)

    def _add_elapsed(self, moment: datetime, elapsed: timedelta) -> datetime:
        # Aware arithmetic within one zone is wall-clock arithmetic; elapsed time is added in
        # UTC so that a zone with daylight saving time gets the real number of hours.
        return (moment.astimezone(UTC) + elapsed).astimezone(self.tz)


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware date-time, not {moment.isoformat()}")


def _ask(calendar: WorkCalendar, day: date) -> tuple[bool, bool]:
    """(is it a working day, was that guessed Mon–Fri because the calendar does not know)."""
    answer = calendar.is_workday(day)
    if answer is None:
        return day.weekday() < 5, True
    return answer, False
