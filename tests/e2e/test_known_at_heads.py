"""A printed report is reproduced from the chain head it prints: `--known-at COUNT:HASH` (with
the report's own --as-of) gives the same bytes, whatever was recorded since, even in the same
second; a head that is not the store's is refused, naming why."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from tests.conftest import SHANGHAI, FakeClock
from tests.e2e.test_known_at_reports import _cli, _three_overdue_cases, _write

DAY = "2026-09-30"


def _late_rectification(db: str, recorded: datetime) -> None:
    """K-1's rectification of 25 September, recorded at `recorded`."""
    _write(db, FakeClock(recorded), [{"command": "rectify", "hazard_id": "K-1", "actor": "li",
           "note": "done on site", "at": "2026-09-25T16:00:00+08:00"}])  # fmt: skip


def test_a_live_report_is_reproduced_from_its_printed_head(store: str) -> None:
    db = store
    _three_overdue_cases(db)
    first = _cli(db, "report", "overdue", "--format", "json")  # as of now
    assert first.returncode == 0, first.stderr
    printed = json.loads(first.stdout)
    as_of, head = printed["as_of"], printed["chain_head"]
    assert head.startswith("9:")
    assert datetime.fromisoformat(as_of) <= datetime.now(SHANGHAI)
    csv = _cli(db, "report", "overdue", "--as-of", as_of, "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    # A back-dated event recorded straight after, in the same minute: not in what was printed.
    _late_rectification(db, datetime.now(SHANGHAI))
    for fmt, original in (("json", first.stdout), ("csv", csv.stdout)):
        again = _cli(db, "report", "overdue", "--as-of", as_of, "--known-at", head,
                     "--format", fmt)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert again.stdout == original, fmt
    now = json.loads(_cli(db, "report", "overdue", "--as-of", as_of, "--format", "json").stdout)
    assert now["chain_head"].startswith("10:")
    steps = {r["hazard_id"]: r["step"] for r in now["rows"]}
    assert steps["K-1"] != "rectify"  # as known now: rectified (and its verification late)
    assert {r["hazard_id"]: r["step"] for r in printed["rows"]}["K-1"] == "rectify"
    # The case and its dossier as known at that head: before the rectification.
    show = _cli(db, "show", "K-1", "--known-at", head)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["status"] == "assigned"
    history = _cli(db, "history", "K-1", "--known-at", head)
    assert [json.loads(line)["event"] for line in history.stdout.splitlines()] == [
        "Discovered", "Reported", "Assigned"
    ]  # fmt: skip
    dossier = _cli(db, "dossier", "K-1", "--format", "json", "--known-at", head)
    assert dossier.returncode == 0, dossier.stderr
    data = json.loads(dossier.stdout)
    assert data["proof"]["log_head"] == head
    assert data["state"]["status"] == "assigned"
    again = _cli(db, "dossier", "K-1", "--format", "json", "--known-at", head)
    assert again.stdout == dossier.stdout


def test_the_nightly_files_are_reproduced_from_their_head(store: str, tmp_path: Path) -> None:
    db = store
    _three_overdue_cases(db)
    out = tmp_path / "reports"
    nightly = _cli(db, "nightly", "--as-of", DAY, "--out", str(out))
    assert nightly.returncode == 0, nightly.stderr
    head = json.loads((out / f"overdue-{DAY}.json").read_bytes())["chain_head"]
    assert head.startswith("9:")
    # Recorded after the nightly ran, yet still on its date: known-at the date would take it in.
    _late_rectification(db, datetime.now(SHANGHAI))
    for fmt in ("json", "csv", "html", "xlsx"):
        again = _cli(db, "report", "overdue", "--as-of", DAY, "--known-at", head, "--format", fmt)
        assert again.returncode == 0, again.stderr
        assert again.stdout == (out / f"overdue-{DAY}.{fmt}").read_bytes(), fmt


def test_a_head_that_is_not_the_stores_is_refused(store: str) -> None:
    db = store
    _three_overdue_cases(db)
    head = _cli(db, "audit", "head").stdout.decode().strip()
    count, digest = head.split(":")
    other = "0" * 63 + "1"
    for args, words in (
        (["report", "overdue", "--known-at", f"{count}:{other}"], "rewritten"),
        (["report", "overdue", "--known-at", f"99:{digest}"], "holds 9"),
        (["show", "K-1", "--known-at", f"5:{other}"], "rewritten"),
        (["history", "K-1", "--known-at", f"0:{other}"], "rewritten"),
        (["dossier", "K-1", "--known-at", f"10:{digest}"], "holds 9"),
        (["report", "overdue", "--known-at", "9:abc"], "64 hex digits"),
    ):
        run = _cli(db, *args)
        assert run.returncode == 2, (args, run.stderr)
        lines = run.stderr.decode().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith("InvalidCommand: invalid_command:"), lines
        assert words in lines[0], lines


def test_dossier_known_at_reads_dates_as_every_command(store: str) -> None:
    """A compact date (20261103) or another script's digits is refused, not read as midnight;
    dates and date-times are read as by every other command (`adapters.nightly.parse_moment`)."""
    db = store
    _three_overdue_cases(db)
    for text in ("20261103", "2026-09-3０", "2026-09-30T12", "09/30/2026", ""):
        run = _cli(db, "dossier", "K-1", "--format", "json", "--known-at", text)
        assert run.returncode == 2, (text, run.stdout)
        assert run.stderr.decode().startswith("InvalidCommand: invalid_command: bad --known-at")
    for text in (
        "2026-09-30",
        "2026-09-30T18:00:00+08:00",
        "2026-09-30T18:00:00",
        "2026-09-30 18:00",
    ):
        run = _cli(db, "dossier", "K-1", "--format", "json", "--known-at", text)
        assert run.returncode == 0, (text, run.stderr)
