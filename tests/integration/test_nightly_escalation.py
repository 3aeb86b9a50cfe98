"""The nightly script's escalations (督办), on a real store with the clock moved by the test.

A report for a past date names the steps that were late then; an escalation is recorded only
for a step the case is still at, with the same deadline, now past — and once per late step and
level, so a case late again at a later step is escalated again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from adapters import logs
from adapters.nightly import run_nightly
from loop.application import HazardLoop
from loop.commands import parse_command
from tests.conftest import SHANGHAI, FakeClock

MONDAY = datetime(2026, 11, 2, 9, 0, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logs._configured = False


def handle(engine: HazardLoop, name: str, hazard_id: str, **fields: Any) -> None:
    at = engine.clock()
    body: dict[str, Any] = {"command": name, "hazard_id": hazard_id, "at": at.isoformat()}
    actors = {"discover": "grid-member-wang", "report": "grid-member-wang", "assign": "centre-li"}
    body["actor"] = actors[name]
    if name == "discover":
        body.update(grid="D01-S01-C01", category="fire", grade="general", title="blocked exit")
    if name == "assign":
        body.update(unit="fire-brigade", person="zhao")
    result = engine.handle(parse_command(body))
    assert result.ok, result


def escalations(engine: HazardLoop, hazard_id: str) -> list[tuple[str, str, datetime]]:
    return [(e["level"], e["step"], e["due"]) for e in engine.get_hazard(hazard_id).escalations]


def nightly(engine: HazardLoop, day: date, out: Path) -> int:
    return len(run_nightly(engine, day, out, escalate=True).escalations)


class TestOnlyWhatIsStillLate:
    """A past date's report escalates only steps the case has not left since."""

    def test_a_step_left_since_the_report_date_is_not_escalated(
        self, engine: HazardLoop, clock: FakeClock, tmp_path: Path
    ) -> None:
        clock.now = MONDAY
        handle(engine, "discover", "LATE-1")
        handle(engine, "report", "LATE-1")
        assign_due = engine.get_hazard("LATE-1").due
        assert assign_due is not None
        clock.now = MONDAY + timedelta(days=4)  # Friday: the assignment was late…
        handle(engine, "assign", "LATE-1")  # …and is done now; rectification runs, not late
        rectify_due = engine.get_hazard("LATE-1").due
        assert rectify_due is not None
        assert rectify_due > clock.now
        # The report as of Thursday lists the late assignment.
        assert nightly(engine, date(2026, 11, 5), tmp_path / "thu") == 0
        assert escalations(engine, "LATE-1") == []

    def test_a_step_still_late_is_escalated_with_its_step_and_deadline(
        self, engine: HazardLoop, clock: FakeClock, tmp_path: Path
    ) -> None:
        clock.now = MONDAY
        handle(engine, "discover", "LATE-2")
        handle(engine, "report", "LATE-2")
        due = engine.get_hazard("LATE-2").due
        clock.now = MONDAY + timedelta(days=4)
        assert nightly(engine, date(2026, 11, 5), tmp_path / "thu") == 1
        assert escalations(engine, "LATE-2") == [("reminder", "assign", due)]

    def test_a_report_for_a_later_date_escalates_nothing_not_yet_late(
        self, engine: HazardLoop, clock: FakeClock, tmp_path: Path
    ) -> None:
        clock.now = MONDAY
        handle(engine, "discover", "SOON-1")
        handle(engine, "report", "SOON-1")
        # As of Friday the assignment is late, but the clock says Monday: it is not, yet.
        assert nightly(engine, date(2026, 11, 6), tmp_path / "fri") == 0
        assert escalations(engine, "SOON-1") == []


class TestOncePerLateStep:
    """Once per late step and level: late at assign, then late again at rectify, is two lates."""

    def test_a_case_late_again_at_a_later_step_is_escalated_again_once(
        self, engine: HazardLoop, clock: FakeClock, tmp_path: Path
    ) -> None:
        clock.now = MONDAY
        handle(engine, "discover", "TWICE-1")
        handle(engine, "report", "TWICE-1")
        assign_due = engine.get_hazard("TWICE-1").due
        clock.now = MONDAY + timedelta(days=3, hours=3)  # Thursday noon
        assert nightly(engine, date(2026, 11, 4), tmp_path / "wed") == 1
        handle(engine, "assign", "TWICE-1")
        rectify_due = engine.get_hazard("TWICE-1").due
        assert rectify_due is not None
        clock.now = MONDAY + timedelta(days=22, hours=3)  # Tuesday 24 November, noon
        assert clock.now > rectify_due
        assert nightly(engine, date(2026, 11, 23), tmp_path / "mon") == 1
        expected = [("reminder", "assign", assign_due), ("reminder", "rectify", rectify_due)]
        assert escalations(engine, "TWICE-1") == expected
        version = engine.get_hazard("TWICE-1").version
        assert nightly(engine, date(2026, 11, 23), tmp_path / "again") == 0
        assert engine.get_hazard("TWICE-1").version == version
        assert escalations(engine, "TWICE-1") == expected


def test_a_store_without_hash_chains_still_gets_its_report_without_a_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `report` and the API do for a store written before the hash chains: the files are
    written and no head is printed (the nightly once refused such a store outright)."""
    import sqlite3

    from adapters.bootstrap import Settings, build_engine
    from adapters.store import CHAIN_TABLE, HEAD_TABLE

    monkeypatch.delenv("HAZARDLOOP_CIPHER_KEY_FILE", raising=False)
    db = tmp_path / "old.db"
    clock = FakeClock(MONDAY)
    engine = build_engine(Settings(db=str(db)), clock=clock)
    try:
        handle(engine, "discover", "OLD-1")
        handle(engine, "report", "OLD-1")
    finally:
        engine.close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"DELETE FROM {CHAIN_TABLE}")
        conn.execute(f"DELETE FROM {HEAD_TABLE}")
    clock.now = MONDAY + timedelta(days=4)
    engine = build_engine(Settings(db=str(db)), clock=clock)
    try:
        result = run_nightly(engine, date(2026, 11, 5), tmp_path / "out")
    finally:
        engine.close()
    assert result.chain_head is None
    assert result.overdue == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"overdue-2026-11-05.{fmt}" for fmt in ("csv", "html", "json", "xlsx")
    ]
