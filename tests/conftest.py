"""Shared fixtures: a real SQLite event store in a temporary folder, and a clock we control."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.bootstrap import Settings, build_engine
from loop.application import HazardLoop

SHANGHAI = ZoneInfo("Asia/Shanghai")


class FakeClock:
    """The engine's clock, moved by the test (the only thing we fake: never the store)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now = self.now + timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 18, 0, tzinfo=SHANGHAI))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "hazards.db"


@pytest.fixture
def engine(db_path: Path, clock: FakeClock) -> Iterator[HazardLoop]:
    app = build_engine(Settings(db=str(db_path)), clock=clock)
    yield app
    app.close()
