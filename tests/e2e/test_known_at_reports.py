"""A report as known at T reproduces what the same report printed at T, despite back-dated events.

A patrol's rectification, done before the report date, is uploaded days after the report was
run: the report as known then must print exactly what it printed then; as known now it differs
by exactly that case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

from adapters.bootstrap import Settings, build_engine
from loop.commands import parse_command
from tests.conftest import SHANGHAI, FakeClock

D = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)
AS_OF = "2026-09-30T18:00:00+08:00"


def _cli(db: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args, "--db", db],
        capture_output=True,
        check=False,
    )


def _write(db: str, clock: FakeClock, commands: list[dict[str, object]]) -> None:
    app = build_engine(Settings(db=db), clock=clock)
    try:
        for result in app.handle_many([parse_command(c) for c in commands]):
            assert result.ok, result.to_dict()
    finally:
        app.close()


def _three_overdue_cases(db: str, clock: FakeClock | None = None) -> None:
    """K-0, K-1, K-2 discovered, reported and assigned on 1 September, recorded on 21 September
    (or by `clock`): three rectifications overdue by the end of the month."""
    commands: list[dict[str, object]] = []
    for i in range(3):
        hid = f"K-{i}"
        commands += [
            {"command": "discover", "hazard_id": hid, "actor": "wang", "grid": "G1",
             "category": "fire", "grade": "general", "title": f"case {i}", "at": D.isoformat()},
            {"command": "report", "hazard_id": hid, "actor": "wang",
             "at": (D + timedelta(hours=2)).isoformat()},
            {"command": "assign", "hazard_id": hid, "actor": "centre", "unit": "U1",
             "person": "li", "at": (D + timedelta(hours=3)).isoformat()},
        ]  # fmt: skip
    _write(db, clock or FakeClock(D + timedelta(days=20)), commands)


def test_known_at_reproduces_the_report_and_diff_names_the_late_upload(store: str) -> None:
    db = store
    clock = FakeClock(D + timedelta(days=20))  # everything below recorded on 21 September
    _three_overdue_cases(db, clock)
    # The report run on 1 October, as of 30 September: all three rectifications overdue.
    first = _cli(db, "report", "overdue", "--as-of", AS_OF, "--format", "json")
    assert first.returncode == 0, first.stderr
    then = json.loads(first.stdout)
    assert sorted(r["hazard_id"] for r in then["rows"]) == ["K-0", "K-1", "K-2"]
    assert then["chain_head"].startswith("9:")
    # On 5 October, K-1's rectification of 25 September finally arrives.
    clock.now = datetime(2026, 10, 5, 10, 0, tzinfo=SHANGHAI)
    _write(db, clock, [{"command": "rectify", "hazard_id": "K-1", "actor": "li",
                        "note": "done on site", "at": "2026-09-25T16:00:00+08:00"}])  # fmt: skip
    known_then = "2026-10-01T09:00:00+08:00"
    again = _cli(db, "report", "overdue", "--as-of", AS_OF, "--known-at", known_then,
                 "--format", "json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # byte for byte what was printed then
    now = json.loads(_cli(db, "report", "overdue", "--as-of", AS_OF, "--format", "json").stdout)
    assert sorted(r["hazard_id"] for r in now["rows"]) == ["K-0", "K-2"]
    assert now["chain_head"].startswith("10:")
    diff = _cli(db, "report", "overdue", "--as-of", AS_OF, "--known-at", known_then, "--diff")
    assert diff.returncode == 0, diff.stderr
    d = json.loads(diff.stdout)
    assert [(r["hazard_id"], r["step"]) for r in d["only_then"]] == [("K-1", "rectify")]
    assert d["only_now"] == []
    assert d["changed"] == []
    assert (d["known_then"], d["known_now"]) == (then["chain_head"], now["chain_head"])
    # Accountability for September, as known then and now, differ in the same case.
    acc = _cli(db, "report", "accountability", "--period", "2026-09", "--known-at", known_then,
               "--as-of", AS_OF, "--diff")  # fmt: skip
    assert acc.returncode == 0, acc.stderr
    changed = {tuple(c["key"]) for c in json.loads(acc.stdout)["changed"]}
    assert ("unit", "U1") in changed
    bad = _cli(db, "report", "overdue", "--diff")
    assert bad.returncode == 2
    assert b"--known-at" in bad.stderr
