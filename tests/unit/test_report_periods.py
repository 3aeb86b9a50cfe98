"""Accountability periods: ASCII digits, a year a report can be about, a clear error otherwise."""

from __future__ import annotations

from datetime import date

import pytest

from loop.errors import InvalidCommand
from projections.reports import FIRST_YEAR, LAST_YEAR, parse_period


class TestParsePeriod:
    @pytest.mark.parametrize(
        ("text", "start", "end"),
        [
            ("2026-09", date(2026, 9, 1), date(2026, 9, 30)),
            ("2026-Q3", date(2026, 7, 1), date(2026, 9, 30)),
            ("2026-H2", date(2026, 7, 1), date(2026, 12, 31)),
            ("2026", date(2026, 1, 1), date(2026, 12, 31)),
            (f"{FIRST_YEAR}-01", date(FIRST_YEAR, 1, 1), date(FIRST_YEAR, 1, 31)),
            (f"{LAST_YEAR}-Q4", date(LAST_YEAR, 10, 1), date(LAST_YEAR, 12, 31)),
        ],
    )
    def test_a_period_names_its_first_and_last_day(self, text: str, start: date, end: date) -> None:
        period = parse_period(text)
        assert (period.label, period.start, period.end) == (text, start, end)

    @pytest.mark.parametrize(
        "text",
        ["0000", "9999", "9999-Q4", "9999-12", "1979-H2", f"{LAST_YEAR + 1}"],
    )
    def test_a_year_out_of_range_is_an_invalid_command_naming_the_range(self, text: str) -> None:
        with pytest.raises(InvalidCommand) as info:
            parse_period(text)
        assert text in info.value.message
        assert f"{FIRST_YEAR} to {LAST_YEAR}" in info.value.message
        assert info.value.to_dict()["code"] == "invalid_command"

    @pytest.mark.parametrize(
        "text", ["２０２６-Q3", "２０２６", "2026-０９", "٢٠٢٦-Q3", "2026-Q3\n"]
    )
    def test_only_ascii_digits(self, text: str) -> None:
        if text.endswith("\n"):  # surrounding white space is forgiven, as before
            assert parse_period(text).label == "2026-Q3"
            return
        with pytest.raises(InvalidCommand) as info:
            parse_period(text)
        assert info.value.details == {"period": text}
