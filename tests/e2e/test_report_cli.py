"""`hazardloop report overdue|accountability` as an operator runs them, against the demo store.

What a report file says is checked against the same report computed in this process, so the
command line, the renderers and the read models cannot drift apart.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import orjson
import pytest
from openpyxl import load_workbook

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.demo import AS_OF, build_district
from adapters.nightly import end_of_day
from projections.model import AccountabilityReport, OverdueReport
from projections.reports import accountability_report, overdue_report, parse_period
from tests.conftest import StoreFactory, store_env
from tests.stores import event_count

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-20"
PERIOD = "2026-Q3"


def hazardloop(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning", **store_env()},
        timeout=300,
    )


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory, store_factory: StoreFactory) -> str:
    db = store_factory(tmp_path_factory.mktemp("reports"), "district")
    build_district(db)
    return db


@pytest.fixture(scope="module")
def expected(district: str) -> Iterator[tuple[OverdueReport, AccountabilityReport]]:
    """Both reports computed in this process, as of the end of DAY like `--as-of DAY`."""
    engine = build_engine(Settings(db=district), clock=lambda: AS_OF)
    runner = build_runner(engine)
    runner.catch_up()
    moment = end_of_day(date.fromisoformat(DAY), engine)
    with runner.engine.connect() as conn:
        overdue = overdue_report(conn, moment, engine.policy, engine.calendar)
        accountability = accountability_report(
            conn, parse_period(PERIOD), moment, engine.policy, engine.calendar
        )
    yield overdue, accountability
    runner.engine.dispose()
    engine.close()


@pytest.fixture(scope="module")
def files(district: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The accountability report of PERIOD written by the command line in every format."""
    out = tmp_path_factory.mktemp("accountability")
    for fmt in ("table", "json", "csv", "xlsx", "html"):
        run = hazardloop(
            "report", "accountability", "--period", PERIOD, "--db", district,
            "--as-of", DAY, "--format", fmt, "--out", str(out),
        )  # fmt: skip
        assert run.returncode == 0, (fmt, run.stderr)
    return out


class TestOverdueCommand:
    """`report overdue` prints or writes the overdue report of the read models."""

    def test_json_on_stdout_matches_the_report_computed_in_process(
        self, district: str, expected: tuple[OverdueReport, AccountabilityReport]
    ) -> None:
        report = expected[0]
        assert report.rows, "the demo has overdue cases"
        run = hazardloop("report", "overdue", "--db", district, "--as-of", DAY, "--format", "json")
        assert run.returncode == 0, run.stderr
        data = orjson.loads(run.stdout)
        assert datetime.fromisoformat(data["as_of"]) == report.as_of
        assert data["open_cases"] == report.open_cases
        assert data["parked_cases"] == report.parked_cases
        got = [
            (r["hazard_id"], r["step"], r["holder"], datetime.fromisoformat(r["due"]),
             r["overdue_working_days"])
            for r in data["rows"]
        ]  # fmt: skip
        want = [(r.hazard_id, r.step, r.holder, r.due, r.overdue_working_days) for r in report.rows]
        assert got == want

    def test_csv_into_a_folder_is_named_by_the_date(
        self, district: str, tmp_path: Path, expected: tuple[OverdueReport, AccountabilityReport]
    ) -> None:
        out = tmp_path / "out"
        args = ("report", "overdue", "--db", district, "--as-of", DAY, "--format", "csv")
        run = hazardloop(*args, "--out", str(out))
        assert run.returncode == 0, run.stderr
        assert run.stdout == b""
        assert [p.name for p in out.iterdir()] == [f"overdue-{DAY}.csv"]
        data = (out / f"overdue-{DAY}.csv").read_bytes()
        assert data.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
        assert [r[0] for r in rows[1:]] == [r.hazard_id for r in expected[0].rows]

    @pytest.mark.parametrize(
        "as_of", ["20261120", "2026-W47-5", "", "1979-12-31", "9998-12-31", "2026-11-20T18"]
    )
    def test_a_bad_as_of_is_a_usage_error_in_one_line(
        self, district: str, as_of: str, tmp_path: Path
    ) -> None:
        run = hazardloop(
            "report", "overdue", "--db", district, "--as-of", as_of, "--format", "json",
            "--out", str(tmp_path / "out"),
        )  # fmt: skip
        err = run.stderr.decode()
        assert run.returncode == 2, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"UsageError: bad --as-of {as_of!r}"), err
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("where", ["a_file", "inside_a_file", "a_folder_there"])
    def test_an_out_that_cannot_take_the_file_is_one_line(
        self, district: str, where: str, tmp_path: Path
    ) -> None:
        blocker = tmp_path / "blocker"
        blocker.write_text("a regular file")
        out = {"a_file": blocker, "inside_a_file": blocker / "reports", "a_folder_there": tmp_path}
        if where == "a_folder_there":
            (tmp_path / f"overdue-{DAY}.csv").mkdir()  # a folder where the file must go
        run = hazardloop(
            "report", "overdue", "--db", district, "--as-of", DAY, "--format", "csv",
            "--out", str(out[where]),
        )  # fmt: skip
        err = run.stderr.decode()
        assert run.returncode == 2, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith("StoreError: store_error: cannot write "), err
        assert blocker.read_text() == "a regular file"
        assert not list(tmp_path.rglob("*.tmp"))

    def test_an_unknown_format_is_a_usage_error_in_one_line(self, district: str) -> None:
        run = hazardloop("report", "overdue", "--db", district, "--format", "pdf")
        assert run.returncode == 2
        assert run.stdout == b""
        assert len(run.stderr.decode().splitlines()) == 1, run.stderr
        assert b"--format" in run.stderr


class TestAccountabilityCommand:
    """`report accountability --period 2026-Q3` in every format."""

    def test_one_file_per_format(self, files: Path) -> None:
        names = sorted(p.name for p in files.iterdir())
        assert names == sorted(f"accountability-{PERIOD}.{ext}"
                               for ext in ("txt", "json", "csv", "xlsx", "html"))  # fmt: skip

    def test_json_matches_the_report_computed_in_process(
        self, files: Path, expected: tuple[OverdueReport, AccountabilityReport]
    ) -> None:
        report = expected[1]
        data = orjson.loads((files / f"accountability-{PERIOD}.json").read_bytes())
        assert data["period"]["label"] == PERIOD
        assert data["totals"]["due"] == report.totals.due
        assert data["totals"]["indicators"] == report.totals.indicators
        assert [(r["dimension"], r["key"], r["due"], r["handled"]) for r in data["rows"]] == [
            (r.dimension, r.key, r.due, r.handled) for r in report.rows
        ]

    def test_the_other_formats_hold_every_row(
        self, files: Path, expected: tuple[OverdueReport, AccountabilityReport]
    ) -> None:
        report = expected[1]
        keys = {r.key for r in report.rows}
        text = (files / f"accountability-{PERIOD}.txt").read_text(encoding="utf-8")
        html = (files / f"accountability-{PERIOD}.html").read_text(encoding="utf-8")
        csv_bytes = (files / f"accountability-{PERIOD}.csv").read_bytes()
        assert csv_bytes.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(csv_bytes.decode("utf-8-sig"), newline="")))
        assert len(rows) == 1 + len(report.rows) + 1  # header, rows, totals
        wb = load_workbook(files / f"accountability-{PERIOD}.xlsx")
        cells = {str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                 for v in row if v is not None}  # fmt: skip
        for key in keys:
            assert key in text
            assert key in html
            assert key in cells
        assert PERIOD in text
        assert PERIOD in html

    @pytest.mark.parametrize("period", ["2026-Q5", "0000", "9999", "9999-Q4", "２０２６-Q3"])
    def test_a_bad_period_is_a_usage_error_in_one_line(
        self, district: str, period: str, tmp_path: Path
    ) -> None:
        run = hazardloop(
            "report", "accountability", "--period", period, "--db", district,
            "--out", str(tmp_path / "out"),
        )  # fmt: skip
        assert run.returncode == 2
        err = run.stderr.decode()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("InvalidCommand: invalid_command: bad period"), err
        assert not (tmp_path / "out").exists()


def test_the_demo_store_is_not_changed_by_reading_it(district: str) -> None:
    """Reports only read: the store holds the same events before and after a report."""
    before = event_count(district)
    run = hazardloop("report", "overdue", "--db", district, "--as-of", DAY, "--format", "table")
    assert run.returncode == 0, run.stderr
    assert b"\x1b" not in run.stdout
    assert event_count(district) == before


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


READ_COMMANDS = [
    ("report", "overdue", "--as-of", DAY),
    ("report", "accountability", "--period", PERIOD),
    ("nightly", "--as-of", DAY, "--out", "OUT"),
    ("show", "D01-2026-00001"),
    ("history", "D01-2026-00001"),
    ("dossier", "D01-2026-00001"),
    ("feed",),
    ("projections", "status"),
]


class TestNoStoreNoReport:
    """A read-only command never creates a store: a missing or foreign one is one line, exit
    non-zero, and nothing is created (no folder, no database, no key file, no tables)."""

    @pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: "-".join(a[:2]))
    def test_a_mistyped_path_creates_nothing(self, args: tuple[str, ...], tmp_path: Path) -> None:
        db = tmp_path / "typo" / "hazards.db"
        argv = [str(tmp_path / "out") if a == "OUT" else a for a in args]
        run = hazardloop(*argv, "--db", str(db))
        err = run.stderr.decode()
        assert run.returncode != 0
        assert len(err.splitlines()) == 1, err
        assert "no event store" in err
        assert str(db) in err
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: "-".join(a[:2]))
    def test_an_unrelated_sqlite_file_is_left_as_it_was(
        self, args: tuple[str, ...], tmp_path: Path
    ) -> None:
        import sqlite3

        db = tmp_path / "inventory.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE items (name TEXT)")
            conn.execute("INSERT INTO items VALUES ('fire extinguisher')")
        conn.close()
        before = _tree(tmp_path)
        argv = [str(tmp_path / "out") if a == "OUT" else a for a in args]
        run = hazardloop(*argv, "--db", str(db))
        err = run.stderr.decode()
        assert run.returncode != 0
        assert len(err.splitlines()) == 1, err
        assert "not a hazard-loop event store" in err
        assert _tree(tmp_path) == before
