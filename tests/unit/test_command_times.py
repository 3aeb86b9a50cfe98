"""Date-times in commands: RFC 3339 with an offset, parsed exactly (tests loop.commands)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from loop.commands import parse_command
from loop.errors import InvalidCommand

CST = timezone(timedelta(hours=8))


def at(text: str) -> datetime:
    cmd = parse_command({"command": "report", "hazard_id": "T-1", "actor": "a", "at": text})
    assert cmd.at is not None
    return cmd.at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-09-28T09:30:00+08:00", datetime(2026, 9, 28, 9, 30, tzinfo=CST)),
        ("2026-09-28t01:30:00z", datetime(2026, 9, 28, 1, 30, tzinfo=UTC)),
        ("2026-09-28 09:30:00.5+08:00", datetime(2026, 9, 28, 9, 30, 0, 500000, tzinfo=CST)),
        ("2026-09-28T09:30:00.123456+08:00", datetime(2026, 9, 28, 9, 30, 0, 123456, CST)),
        # nanoseconds: cut (not rounded) to the microseconds Python keeps
        ("2026-09-28T09:30:00.123456789+08:00", datetime(2026, 9, 28, 9, 30, 0, 123456, CST)),
        ("2026-09-28T09:30:00.9999999Z", datetime(2026, 9, 28, 9, 30, 0, 999999, UTC)),
    ],
)
def test_an_rfc3339_time_is_read_exactly(text: str, expected: datetime) -> None:
    got = at(text)
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-09-28T09:30:00",  # no offset
        "2026-09-28T09:30:00.1234567890+08:00",  # more than nanoseconds
        "2026-09-28T09:30+08:00",  # no seconds
        "2026-02-30T09:30:00+08:00",  # no such day
        "1969-12-31T23:00:00Z",  # before the years a case can be in
        "2026-09-28T09:30:00.+08:00",
    ],
)
def test_anything_else_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidCommand) as info:
        at(text)
    assert "at" in str(info.value)
