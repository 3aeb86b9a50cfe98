"""A case on both time axes: as it had happened by T, and as the engine knew it at T."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from adapters.timetravel import case_chain, hazard_at, known_positions, version_at
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.errors import HazardNotFound
from tests.conftest import SHANGHAI, FakeClock

D = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)


def _do(app: HazardLoop, **cmd: object) -> None:
    result = app.handle(parse_command({"hazard_id": "TT-1", **cmd}))
    assert result.ok, result.to_dict()


@pytest.fixture
def late_upload(engine: HazardLoop, clock: FakeClock) -> HazardLoop:
    """Discovered, reported, assigned on the day; the rectification (done on day 5) arrives on
    day 10, when a patrol phone finally finds a signal."""
    clock.now = D
    _do(engine, command="discover", actor="wang", grid="G1", category="fire", grade="general",
        title="blocked exit", at=D.isoformat())  # fmt: skip
    clock.now = D + timedelta(hours=2)
    _do(engine, command="report", actor="wang", at=(D + timedelta(hours=1)).isoformat())
    clock.now = D + timedelta(days=1)
    _do(engine, command="assign", actor="centre", unit="U1", person="li",
        at=(D + timedelta(days=1)).isoformat())  # fmt: skip
    clock.now = D + timedelta(days=10)
    _do(engine, command="rectify", actor="li", note="cleared",
        at=(D + timedelta(days=5)).isoformat())  # fmt: skip
    return engine


def test_as_of_and_known_at_are_different_axes(late_upload: HazardLoop) -> None:
    app = late_upload
    day7 = D + timedelta(days=7)
    # What had happened by day 7, as we know now: rectified on day 5.
    assert hazard_at(app, "TT-1", as_of=day7).status.value == "rectified"
    # What the engine knew on day 7: still with the unit, awaiting rectification.
    assert hazard_at(app, "TT-1", known_at=day7).status.value == "assigned"
    assert hazard_at(app, "TT-1", as_of=day7, known_at=day7).status.value == "assigned"
    # Before the report: discovered, on both axes.
    early = D + timedelta(minutes=30)
    assert hazard_at(app, "TT-1", as_of=early).status.value == "discovered"
    assert version_at(app, "TT-1", as_of=early, known_at=day7) == 1
    assert version_at(app, "TT-1") == 4
    with pytest.raises(HazardNotFound, match="had not been discovered"):
        hazard_at(app, "TT-1", known_at=D - timedelta(seconds=1))
    with pytest.raises(HazardNotFound):
        hazard_at(app, "TT-1", as_of=D - timedelta(days=1))


def test_record_times_come_from_the_engine_clock_and_form_a_prefix(
    late_upload: HazardLoop,
) -> None:
    chain = case_chain(late_upload, "TT-1")
    assert [e.version for e in chain] == [1, 2, 3, 4]
    assert [e.recorded_at for e in chain] == [
        D, D + timedelta(hours=2), D + timedelta(days=1), D + timedelta(days=10)
    ]  # fmt: skip
    assert [e.position for e in chain] == [1, 2, 3, 4]
    assert known_positions(late_upload, D + timedelta(days=7)) == 3
    assert known_positions(late_upload, D - timedelta(days=1)) == 0


def test_cli_show_and_history_on_both_axes(late_upload: HazardLoop, store: str) -> None:
    cli = [sys.executable, "-m", "adapters.cli"]
    day7 = (D + timedelta(days=7)).isoformat()
    show = subprocess.run([*cli, "show", "TT-1", "--db", store, "--known-at", day7],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["status"] == "assigned"
    history = subprocess.run(
        [*cli, "history", "TT-1", "--db", store, "--known-at", day7],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert history.returncode == 0, history.stderr
    events = [json.loads(line) for line in history.stdout.splitlines()]
    assert [e["event"] for e in events] == ["Discovered", "Reported", "Assigned"]
    assert [e["position"] for e in events] == [1, 2, 3]
    assert all(len(e["log_hash"]) == 64 for e in events)
    bad = subprocess.run([*cli, "show", "TT-1", "--db", store, "--known-at", "yesterday"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "--known-at" in bad.stderr


@pytest.mark.sqlite_only("another connection holds the SQLite file's write lock")
def test_record_time_is_read_once_the_write_lock_is_held(
    engine: HazardLoop, clock: FakeClock, db_path: Path
) -> None:
    """A writer that waits for the lock records the time it got it, not the time it asked:
    otherwise `--known-at T` would take in an event nobody could have seen at T."""
    clock.now = D
    _do(engine, command="discover", actor="wang", grid="G1", category="fire", grade="general",
        title="blocked exit", at=D.isoformat())  # fmt: skip
    held, waited = threading.Event(), threading.Event()
    released: list[datetime] = []

    def hold_the_lock() -> None:
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            held.set()
            waited.wait(5)
            time.sleep(0.5)  # the command is waiting for the lock by now
            released.append(clock.advance(minutes=10))
            other.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(5)
    clock.now = D + timedelta(minutes=1)  # the command is decided at D + 1 min…
    waited.set()
    _do(engine, command="report", actor="wang", at=(D + timedelta(minutes=1)).isoformat())
    holder.join()
    chain = case_chain(engine, "TT-1")
    # …but could be seen only once the other writer let go, 10 minutes later.
    assert chain[-1].recorded_at >= released[0]
    assert known_positions(engine, D + timedelta(minutes=5)) == 1
