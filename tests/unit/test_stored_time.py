"""`projections.cases.stored_time`: date-times as the views' database stores them, memoised by
value within a chunk. Equal instants must give one stored value, different instants never; on
PostgreSQL the text of the naive UTC `timestamp` SQLAlchemy stores (`as_text`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from projections.cases import as_text, stored_time
from projections.tables import stored_moment

BEIJING = timezone(timedelta(hours=8))
NEW_YORK = ZoneInfo("America/New_York")  # 2026-11-01 01:30 happens twice (fold 0, then 1)


def test_equal_instants_in_any_zone_are_stored_alike_and_as_sqlalchemy_would() -> None:
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        time = stored_time(dialect.name)
        local = datetime(2026, 9, 1, 16, 30, 0, 250, tzinfo=BEIJING)
        for moment in (local, local.astimezone(UTC), local.astimezone(NEW_YORK)):
            assert time(moment) == as_text(stored_moment(local, dialect))
        assert time(None) is None


def test_the_second_of_a_repeated_hour_is_not_taken_for_the_first() -> None:
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK)  # EDT, 05:30 UTC
    second = first.replace(fold=1)  # EST, 06:30 UTC; equal to `first` by Python's rules
    assert first == second
    assert first.utcoffset() != second.utcoffset()
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        for order in ((first, second), (second, first)):
            time = stored_time(dialect.name)
            for moment in (*order, *order):  # each asked twice: memoised or not, the same
                assert time(moment) == as_text(stored_moment(moment, dialect))
        time = stored_time(dialect.name)
        assert time(first) != time(second)


def test_naive_date_times_are_refused_even_when_an_equal_aware_one_was_seen() -> None:
    time = stored_time("sqlite")
    aware = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    time(aware)
    with pytest.raises(ValueError, match="aware"):
        time(aware.replace(tzinfo=None))
