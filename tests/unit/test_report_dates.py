"""Report dates at the edge: YYYY-MM-DD in ASCII digits, or an RFC 3339 date-time; nothing else."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from adapters.nightly import parse_date, parse_moment
from loop.errors import InvalidCommand
from tests.conftest import SHANGHAI


class TestParseDate:
    def test_a_date(self) -> None:
        assert parse_date("2026-11-20") == date(2026, 11, 20)

    @pytest.mark.parametrize(
        "text",
        ["20261120", "2026-W47-5", "2026-324", "", " 2026-11-20", "２０２６-11-20", "2026-02-30",
         "1979-12-31", "2100-01-01", "9998-12-31", "0001-01-01"],
    )  # fmt: skip
    def test_anything_else_is_an_invalid_command_naming_it(self, text: str) -> None:
        with pytest.raises(InvalidCommand) as info:
            parse_date(text, "--as-of")
        assert info.value.message.startswith(f"bad --as-of {text!r}: ")


class TestParseMoment:
    def test_a_date_means_its_last_second_local_time(self) -> None:
        assert parse_moment("2026-11-20", SHANGHAI) == datetime(
            2026, 11, 20, 23, 59, 59, tzinfo=SHANGHAI
        )

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-20T18:00:00+08:00", datetime(2026, 11, 20, 18, tzinfo=SHANGHAI)),
            ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 18, tzinfo=SHANGHAI)),
            ("2026-11-20 18:00", datetime(2026, 11, 20, 18, tzinfo=SHANGHAI)),
            ("2026-11-20t10:00:00.5z", datetime(2026, 11, 20, 18, 0, 0, 500000, tzinfo=SHANGHAI)),
        ],
    )
    def test_an_rfc_3339_date_time(self, text: str, expected: datetime) -> None:
        assert parse_moment(text, SHANGHAI) == expected

    @pytest.mark.parametrize(
        "text", ["20261120", "20261120T180000", "2026-11-20T18", "2026-W47-5", "", "9998-12-31"]
    )
    def test_anything_else_is_an_invalid_command(self, text: str) -> None:
        with pytest.raises(InvalidCommand):
            parse_moment(text, SHANGHAI, "--as-of")


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+08:00"])
def test_a_moment_at_the_ends_of_time_is_refused_not_an_overflow(text: str) -> None:
    with pytest.raises(InvalidCommand, match="the year must be from 1980 to 2099"):
        parse_moment(text, SHANGHAI, "--as-of")
