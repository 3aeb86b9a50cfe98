"""The nightly overdue report as cron runs it: a real script, a real SQLite file, real folders.

It must be idempotent (the same date gives the same bytes and records nothing new), escalate at
most once, and fail loudly — one line, a non-zero status, no half-written files.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import structlog

from adapters import logs
from adapters.demo import build_district
from adapters.nightly import NIGHTLY_FORMATS, main, run_nightly
from tests.conftest import StoreFactory
from tests.stores import event_count

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-20"  # the demo district's own date
FILES = [f"overdue-{DAY}.{fmt}" for fmt in NIGHTLY_FORMATS]


def nightly_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "nightly_overdue_report.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning"},
        timeout=300,
    )


def hazardloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning"},
        timeout=300,
    )


def log_position(db: Path) -> tuple[int, int]:
    """How many events the store holds, and the newest notification id."""
    with sqlite3.connect(db) as conn:
        count, top = conn.execute("SELECT COUNT(*), MAX(rowid) FROM stored_events").fetchone()
    return int(count), int(top or 0)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """`main` configures logging for its process; in this one, undo that after each test (its
    log stream was the test's captured stderr)."""
    yield
    structlog.reset_defaults()
    logs._configured = False


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo district, built once; tests that write take a copy."""
    db = tmp_path_factory.mktemp("district") / "district.db"
    build_district(str(db))
    return db


@pytest.fixture
def store(district: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store.db"
    shutil.copyfile(district, copy)
    return copy


class TestIdempotent:
    """Run twice for one date: the same four files, byte for byte, and nothing recorded."""

    def test_the_script_twice_gives_the_same_files_and_no_new_events(
        self, store: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "reports"
        before = log_position(store)
        first = nightly_script("--db", str(store), "--as-of", DAY, "--out", str(out))
        assert first.returncode == 0, first.stderr
        assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
        written = contents(out)
        assert log_position(store) == before
        second = nightly_script("--db", str(store), "--as-of", DAY, "--out", str(out))
        assert second.returncode == 0, second.stderr
        assert contents(out) == written
        assert log_position(store) == before
        assert all(written[name] for name in FILES)
        assert written[f"overdue-{DAY}.csv"].startswith(b"\xef\xbb\xbf")
        assert written[f"overdue-{DAY}.xlsx"].startswith(b"PK")

    def test_escalation_is_recorded_once(
        self, store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "reports"
        args = ["--db", str(store), "--as-of", DAY, "--out", str(out), "--escalate"]
        count, top = log_position(store)
        assert main(args) == 0, capsys.readouterr().err
        after_first = log_position(store)
        assert after_first[0] > count, "the demo has cases overdue past the first level"
        assert after_first[1] > top
        written = contents(out)
        assert main(args) == 0, capsys.readouterr().err
        assert log_position(store) == after_first
        assert contents(out) == written
        # The head printed on the report pins everything the run saw and recorded.
        from adapters.audit import verify

        published = json.loads(written[f"overdue-{DAY}.json"])["chain_head"]
        assert published == str(verify(store).head)
        assert published.split(":")[0] == str(after_first[0])
        assert published.encode() in written[f"overdue-{DAY}.html"]


class TestPastTheCalendar:
    """A date past the working-day calendar (chinese-calendar knows up to 2026): the working days
    of 2027 are counted Monday–Friday — an estimate, marked and warned about, never a failure."""

    LATE = "D01-2026-00282"  # the reviewer's case: due in 2026, still late in February 2027

    def run(self, store: Path, out: Path, calendar: Path | None = None) -> Any:
        env = {"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning"}
        if calendar is not None:
            env["HAZARDLOOP_CALENDAR"] = str(calendar)
        args = ["--db", str(store), "--as-of", "2027-02-12", "--out", str(out)]
        script = str(ROOT / "scripts" / "nightly_overdue_report.py")
        return subprocess.run(
            [sys.executable, script, *args],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
        )  # fmt: skip

    def row(self, out: Path) -> dict[str, Any]:
        data = json.loads((out / "overdue-2027-02-12.json").read_bytes())
        found: dict[str, Any] = next(r for r in data["rows"] if r["hazard_id"] == self.LATE)
        return found | {"estimated_from": data["estimated_from"]}

    def test_the_count_is_marked_warned_about_and_the_run_succeeds(
        self, store: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "guessed"
        done = self.run(store, out)
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
        assert len(warnings) == 1, done.stderr
        assert "2027-01-01" in warnings[0]
        assert "HAZARDLOOP_CALENDAR" in warnings[0]
        row = self.row(out)
        assert (row["provisional"], row["estimated"]) == (True, True)
        assert row["estimated_from"] == "2027-01-01"
        assert "含日历未覆盖日期" in (out / "overdue-2027-02-12.html").read_text(encoding="utf-8")
        written = contents(out)
        again = self.run(store, out)
        assert again.returncode == 0, again.stderr
        assert contents(out) == written  # still byte-identical

    def test_a_calendar_file_for_the_year_makes_the_count_exact(
        self, store: Path, tmp_path: Path
    ) -> None:
        from tests.unit.test_workday_counter import CALENDAR_2027

        calendar = tmp_path / "cal2027.toml"
        calendar.write_text(CALENDAR_2027, encoding="utf-8")
        guessed = self.run(store, tmp_path / "guessed")
        exact = self.run(store, tmp_path / "exact", calendar)
        assert exact.returncode == 0, exact.stderr
        assert "warning:" not in exact.stderr
        row = self.row(tmp_path / "exact")
        assert (row["provisional"], row["estimated"], row["estimated_from"]) == (False, False, None)
        days = self.row(tmp_path / "guessed")["overdue_working_days"]
        assert guessed.returncode == 0
        assert (days, row["overdue_working_days"]) == (52, 46)

    def test_the_report_command_warns_too(self, store: Path) -> None:
        done = hazardloop(
            "report", "overdue", "--db", str(store), "--as-of", "2027-02-12", "--format", "json"
        )
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, done.stderr
        assert "2027-01-01" in warnings[0]
        assert json.loads(done.stdout)["estimated_from"] == "2027-01-01"


class TestFailsLoudly:
    """Every failure: a non-zero status, exactly one line on stderr, no partial files."""

    @pytest.mark.parametrize(
        "day",
        [
            "2026-13-45",
            "1979-12-31",  # a zip (xlsx) cannot date its entries before 1980
            "2108-01-01",  # nor after 2107
            "9998-12-31",  # a year's working days beyond it overflow the date type
            "20261120",  # ISO 8601's basic format: not the date the docs promise
            "2026-W47-5",  # an ISO week date
            "２０２６-11-20",  # full-width digits
            "",  # not "today"
        ],
    )
    def test_a_bad_date_is_a_usage_error(self, day: str, store: Path, tmp_path: Path) -> None:
        out = tmp_path / "reports"
        before = log_position(store)
        run = nightly_script("--db", str(store), "--as-of", day, "--out", str(out), "--escalate")
        assert run.returncode == 2
        assert len(run.stderr.splitlines()) == 1, run.stderr
        assert f"bad date {day!r}" in run.stderr
        assert not out.exists()
        assert log_position(store) == before

    def test_an_empty_date_through_the_cli_is_a_usage_error(
        self, store: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "reports"
        run = hazardloop("nightly", "--db", str(store), "--as-of", "", "--out", str(out))
        assert run.returncode == 2
        assert len(run.stderr.splitlines()) == 1, run.stderr
        assert not out.exists()

    @pytest.mark.parametrize("kind", ["not_a_database", "a_directory"])
    def test_an_unreadable_store(
        self, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        if kind == "not_a_database":
            db = tmp_path / "notes.db"
            db.write_text("minutes of the safety committee, not a database\n" * 50)
        else:
            db = tmp_path / "folder.db"
            db.mkdir()
        out = tmp_path / "reports"
        status = main(["--db", str(db), "--as-of", DAY, "--out", str(out)])
        err = capsys.readouterr().err
        assert status != 0
        assert len(err.splitlines()) == 1, err
        assert "store" in err
        assert not out.exists()

    def test_an_unreadable_store_through_the_cli(self, tmp_path: Path) -> None:
        db = tmp_path / "notes.db"
        db.write_bytes(b"\x00not sqlite\x00" * 200)
        run = hazardloop("nightly", "--db", str(db), "--as-of", DAY, "--out", str(tmp_path / "r"))
        assert run.returncode != 0
        assert len(run.stderr.splitlines()) == 1, run.stderr

    def test_an_out_folder_that_cannot_exist(self, store: Path, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("a regular file where a folder should be")
        run = nightly_script("--db", str(store), "--as-of", DAY, "--out", str(blocker / "reports"))
        assert run.returncode != 0
        assert len(run.stderr.splitlines()) == 1, run.stderr
        left = {p.name for p in tmp_path.iterdir() if not p.name.startswith(store.name)}
        assert left == {blocker.name}
        assert blocker.read_text().startswith("a regular file")

    def test_a_file_that_cannot_be_written_leaves_no_temporary_file(
        self, store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "reports"
        out.mkdir()
        (out / f"overdue-{DAY}.html").mkdir()  # a folder where the HTML file must go
        before = log_position(store)
        status = main(["--db", str(store), "--as-of", DAY, "--out", str(out), "--escalate"])
        err = capsys.readouterr().err
        assert status != 0
        assert len(err.splitlines()) == 1, err
        assert f"overdue-{DAY}.html" in err
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        assert log_position(store) == before, "no escalation when the report was not written"

    def test_a_write_that_fails_records_no_escalation_and_leaves_nothing(
        self, store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A real write failure the folder checks cannot see: the report files' paths fit in
        PATH_MAX but their temporary files' do not (like a full disk, it shows only when the
        bytes are written). Nothing is recorded, nothing is left."""
        limit = os.pathconf("/", "PC_PATH_MAX") - 1  # the longest path, without its NUL
        # overdue-DAY.html fits, .overdue-DAY.html.XXXXXXXX.tmp does not.
        length = limit - len(f"/overdue-{DAY}.xlsx") - 5
        out = tmp_path
        while len(str(out)) < length:
            room = length - len(str(out)) - 1
            out = out / ("d" * min(200, room) if room > 0 else "")
        assert len(str(out)) == length
        out.mkdir(parents=True)
        before = log_position(store)
        status = main(["--db", str(store), "--as-of", DAY, "--out", str(out), "--escalate"])
        err = capsys.readouterr().err
        assert status != 0
        assert len(err.splitlines()) == 1, err
        assert "cannot write" in err
        assert log_position(store) == before, "no escalation when the report was not written"
        assert list(out.iterdir()) == []

    def test_a_report_that_cannot_be_rendered_leaves_no_file(
        self, store: Path, tmp_path: Path
    ) -> None:
        """All four files are rendered before any is written: here the xlsx (a zip archive
        cannot be dated before 1980), past the edge's date check."""
        from adapters.bootstrap import Settings, build_engine
        from adapters.demo import AS_OF
        from loop.errors import HazardLoopError

        app = build_engine(Settings(db=str(store)), clock=lambda: AS_OF)
        out = tmp_path / "reports"
        try:
            with pytest.raises(HazardLoopError):
                run_nightly(app, date(1979, 12, 31), out)
        finally:
            app.close()
        assert not out.exists() or list(out.iterdir()) == []


class TestEitherStore:
    """The same district gives the same report on SQLite and on PostgreSQL, byte for byte but
    for the chain head (a sealed tipster's ciphertext differs from one build to the next)."""

    def test_the_report_and_its_escalations_do_not_depend_on_the_store(
        self,
        store_factory: StoreFactory,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("HAZARDLOOP_CIPHER_KEY_FILE", str(tmp_path / "master.key"))
        reference = str(tmp_path / "reference.db")  # the same district in a SQLite file
        tested = store_factory(tmp_path, "nightly")
        written, heads = {}, {}
        for name, db in (("reference", reference), ("tested", tested)):
            build_district(db, hazards=60)
            out = tmp_path / name
            assert main(["--db", db, "--as-of", DAY, "--out", str(out)]) == 0, capsys.readouterr()
            files = contents(out)
            heads[name] = json.loads(files[f"overdue-{DAY}.json"])["chain_head"]
            written[name] = {
                n: data.replace(heads[name].encode(), b"HEAD")
                for n, data in files.items()
                if not n.endswith(".xlsx")  # zipped: the head is inside, compressed
            }
        assert written["tested"] == written["reference"]
        assert b"HEAD" in written["tested"][f"overdue-{DAY}.html"]
        assert json.loads(written["tested"][f"overdue-{DAY}.json"])["rows"]
        from adapters.audit import verify

        assert heads["tested"] == str(verify(tested).head)
        assert heads["tested"].split(":")[0] == heads["reference"].split(":")[0]
        # Escalations go to the store it reads: recorded once, whichever the store.
        args = ["--db", tested, "--as-of", DAY, "--out", str(tmp_path / "esc"), "--escalate"]
        before = event_count(tested)
        assert main(args) == 0, capsys.readouterr().err
        escalated = event_count(tested)
        assert escalated > before
        assert main(args) == 0, capsys.readouterr().err
        assert event_count(tested) == escalated
