"""Reports as of a date past the working-day calendar the engine knows (chinese-calendar knows
2004–2026): the working days are counted Monday–Friday, as deadlines are, and never silently —
the row (or the average) is marked estimated, the report names the first day it guessed, and
the nightly does not escalate on a guess. And a report far outside the years a report can be
about is `invalid_command`, never an overflow. On a real store; the clock is the test's.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from openpyxl import load_workbook

from adapters import logs
from adapters.bootstrap import Settings
from adapters.embed import EmbeddedEngine, open_engine
from adapters.http import create_app
from adapters.nightly import run_nightly
from adapters.reports import render_accountability, render_overdue
from loop.errors import InvalidCommand
from tests.apiclient import ApiClient, issue
from tests.conftest import SHANGHAI, FakeClock
from tests.unit.test_workday_counter import CALENDAR_2027

MONDAY = datetime(2026, 12, 14, 9, 0, tzinfo=SHANGHAI)
AS_OF = datetime(2027, 2, 12, 23, 59, 59, tzinfo=SHANGHAI)  # the reviewer's date


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    # Before too: a test run earlier in this process (another file's, under xdist in any
    # order) may have configured logging onto a stream that is not this test's capsys.
    structlog.reset_defaults()
    logs._configured = False
    yield
    structlog.reset_defaults()
    logs._configured = False


def open_store(store: str, clock: FakeClock, folder: Path, *, with_2027: bool) -> EmbeddedEngine:
    calendar = None
    if with_2027:
        calendar = folder / "calendar-2027.toml"
        calendar.write_text(CALENDAR_2027, encoding="utf-8")
    return open_engine(Settings(db=store, calendar=calendar), clock=clock)


def handle(hl: EmbeddedEngine, name: str, hazard_id: str, **fields: Any) -> None:
    body: dict[str, Any] = {"command": name, "hazard_id": hazard_id, "at": hl.app.clock()}
    body["actor"] = {"assign": "centre-li"}.get(name, "grid-member-wang")
    if name == "discover":
        body.update(grid="D01-S01-C01", category="fire", grade="general", title="blocked exit")
    if name == "assign":
        body.update(unit="fire-brigade", person="zhao")
    hl.handle(body | fields)


@pytest.fixture(params=[False, True], ids=["package-only", "with-2027-file"])
def hl(
    request: pytest.FixtureRequest, store: str, clock: FakeClock, tmp_path: Path
) -> Iterator[EmbeddedEngine]:
    """LATE-1 waits for assignment since 2026-12-15 (due that night); LATE-2 was assigned on
    2027-01-05 and rectified on 2027-01-08 (three working days, all in 2027)."""
    found = open_store(store, clock, tmp_path, with_2027=request.param)
    clock.now = MONDAY
    handle(found, "discover", "LATE-1")
    handle(found, "report", "LATE-1")
    clock.now = datetime(2026, 12, 28, 9, 0, tzinfo=SHANGHAI)
    handle(found, "discover", "LATE-2")
    handle(found, "report", "LATE-2")
    clock.now = datetime(2027, 1, 5, 10, 0, tzinfo=SHANGHAI)
    handle(found, "assign", "LATE-2")
    clock.now = datetime(2027, 1, 8, 16, 0, tzinfo=SHANGHAI)
    handle(found, "rectify", "LATE-2", actor="zhao", note="exit cleared")
    clock.now = datetime(2027, 2, 13, 9, 0, tzinfo=SHANGHAI)
    yield found
    found.close()


def known_2027(hl: EmbeddedEngine) -> bool:
    return hl.app.calendar.is_workday(date(2027, 1, 4)) is not None


class TestOverdue:
    def test_a_count_past_the_calendar_is_marked_and_the_first_guessed_day_named(
        self, hl: EmbeddedEngine
    ) -> None:
        report = hl.overdue(as_of=AS_OF)
        (row,) = [r for r in report.rows if r.hazard_id == "LATE-1"]
        assert row.step == "assign"
        if known_2027(hl):
            assert (row.estimated, row.provisional, report.estimated_from) == (False, False, None)
            assert row.overdue_working_days == 12 + 25  # Dec 16–31; 2027 to 12 Feb, 6 days off
        else:
            assert (row.estimated, row.provisional) == (True, True)
            assert report.estimated_from == date(2027, 1, 1)
            assert row.overdue_working_days == 12 + 31  # 2027 counted Monday–Friday

    def test_inside_the_calendar_nothing_is_marked(self, hl: EmbeddedEngine) -> None:
        report = hl.overdue(as_of=datetime(2026, 12, 31, 23, 59, 59, tzinfo=SHANGHAI))
        assert report.rows
        assert report.estimated_from is None
        assert not any(r.estimated or r.provisional for r in report.rows)

    def test_every_format_shows_the_estimate(self, hl: EmbeddedEngine) -> None:
        report = hl.overdue(as_of=AS_OF)
        guessed = not known_2027(hl)
        data = orjson.loads(render_overdue(report, "json"))
        (row,) = [r for r in data["rows"] if r["hazard_id"] == "LATE-1"]
        assert (row["estimated"], row["provisional"]) == (guessed, guessed)
        assert data["estimated_from"] == ("2027-01-01" if guessed else None)
        days = row["overdue_working_days"]
        zh_note, en_note = "含日历未覆盖日期（2027-01-01 起）", "includes days past the working-day"
        for fmt in ("html", "table"):
            assert (zh_note in render_overdue(report, fmt).decode()) == guessed, fmt
            assert (en_note in render_overdue(report, fmt, "en").decode()) == guessed, fmt
            assert (f"≈{days}" in render_overdue(report, fmt).decode()) == guessed, fmt
        csv_text = render_overdue(report, "csv").decode("utf-8-sig")
        assert (f"≈{days}" in csv_text) == guessed
        book = load_workbook(io.BytesIO(render_overdue(report, "xlsx")))
        sheet = book.worksheets[0]
        header = [c.value for c in sheet[1]]
        line = next(r for r in sheet.iter_rows(min_row=2) if r[0].value == "LATE-1")
        cell = line[header.index("超期工作日")]
        assert cell.value == days  # still a number
        assert ("≈" in cell.number_format) == guessed
        summary = [c.value for r in book.worksheets[1].iter_rows() for c in r if c.value]
        assert any(zh_note in str(v) for v in summary) == guessed


class TestAccountability:
    def test_an_average_past_the_calendar_is_marked(self, hl: EmbeddedEngine) -> None:
        report = hl.accountability("2027-01", as_of=AS_OF)
        guessed = not known_2027(hl)
        assert report.totals.estimated == guessed
        assert report.estimated_from == (date(2027, 1, 6) if guessed else None)
        # LATE-2's rectification, the one step handled: 6, 7 and 8 January.
        assert (report.totals.handled, report.totals.avg_working_days) == (1, 3)
        data = orjson.loads(render_accountability(report, "json"))
        assert data["totals"]["estimated"] == guessed
        assert all(r["estimated"] == guessed for r in data["rows"] if r["handled"])
        assert data["estimated_from"] == ("2027-01-06" if guessed else None)
        html = render_accountability(report, "html").decode()
        assert ("含日历未覆盖日期（2027-01-06 起）" in html) == guessed
        assert ("≈3" in html) == guessed
        csv_text = render_accountability(report, "csv", "en").decode("utf-8-sig")
        assert ("≈3" in csv_text) == guessed
        text = render_accountability(report, "table", "en").decode()
        assert ("includes days past the working-day calendar" in text) == guessed


class TestNightlyEscalation:
    def test_an_estimated_count_is_not_escalated(
        self, hl: EmbeddedEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        result = run_nightly(hl.app, date(2027, 2, 12), tmp_path / "out", escalate=True)
        late = hl.app.get_hazard("LATE-1").escalations
        if known_2027(hl):
            assert result.estimated_from is None
            assert {e["level"] for e in late} == {"reminder", "supervision_letter", "public_notice"}
        else:
            assert result.estimated_from == date(2027, 1, 1)
            assert late == []
            assert result.escalations == []
            assert "not escalated" in capsys.readouterr().err
        data = orjson.loads((tmp_path / "out" / "overdue-2027-02-12.json").read_bytes())
        assert data["estimated_from"] == (None if known_2027(hl) else "2027-01-01")


class TestYearsOfAReport:
    @pytest.mark.parametrize(
        "moment",
        [
            datetime(9999, 12, 31, 20, 0, tzinfo=UTC),  # already year 10000 in Shanghai
            datetime(9999, 6, 1, tzinfo=SHANGHAI),
            datetime(2100, 1, 1, tzinfo=SHANGHAI),
            datetime(1979, 12, 31, 12, tzinfo=SHANGHAI),
            datetime(2099, 12, 31, 20, 0, tzinfo=UTC),  # 2100 in Shanghai
        ],
    )
    def test_outside_1980_to_2099_is_an_invalid_command(
        self, store: str, clock: FakeClock, tmp_path: Path, moment: datetime
    ) -> None:
        with open_store(store, clock, tmp_path, with_2027=False) as hl:
            with pytest.raises(InvalidCommand):
                hl.overdue(as_of=moment)
            with pytest.raises(InvalidCommand):
                hl.overdue(known_at=moment)
            with pytest.raises(InvalidCommand):
                hl.accountability("2026", as_of=moment)

    def test_over_http_422_outside_and_a_report_inside(
        self, store: str, clock: FakeClock, tmp_path: Path
    ) -> None:
        app = create_app(Settings(db=store), clock=clock)
        engine: EmbeddedEngine = app.state.engine
        try:
            auditor = ApiClient(app, issue(engine, "audit.zhou", "auditor"))
            for query in ("as_of=2100-06-01", "known_at=2100-06-01", "as_of=1979-12-31"):
                for path in ("/reports/overdue", "/reports/accountability?period=2026"):
                    url = f"{path}{'&' if '?' in path else '?'}{query}"
                    response = auditor.get(url)
                    assert response.status_code == 422, (url, response.text)
                    assert response.json()["error"]["code"] == "invalid_command"
            for query in ("as_of=1985-06-01", "as_of=2099-12-31"):
                response = auditor.get(f"/reports/overdue?{query}")
                assert response.status_code == 200, (query, response.text)
        finally:
            engine.close()


def test_the_xlsx_is_still_the_same_bytes(hl: EmbeddedEngine) -> None:
    report = hl.overdue(as_of=AS_OF)
    first, second = render_overdue(report, "xlsx"), render_overdue(report, "xlsx")
    assert first == second
    assert zipfile.ZipFile(io.BytesIO(first)).testzip() is None
