"""A projection process killed with SIGKILL mid catch-up loses and doubles nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.demo import AS_OF, build_district
from projections.tables import ledger, post_tenures, step_segments, steps
from tests.stores import rows

ROOT = Path(__file__).resolve().parents[2]


def snapshot(db: str) -> dict[str, list[tuple[object, ...]]]:
    app = build_engine(Settings(db=db), clock=lambda: AS_OF)
    runner = build_runner(app)
    out = {}
    with runner.engine.connect() as conn:
        for table in (ledger, steps, step_segments, post_tenures):
            keys = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*keys))]
    runner.engine.dispose()
    app.close()
    return out


def position(db: str) -> int:
    try:
        found = rows(db, "SELECT position FROM projection_tracking WHERE name='cases'")
    except Exception:  # no such table yet (sqlite3 and psycopg say so differently)
        return 0
    return int(found[0][0]) if found else 0


class TestKilledProjection:
    """SIGKILL mid-catch-up, then resume: the read models equal a clean rebuild."""

    def test_a_killed_catch_up_resumes_and_ends_equal_to_a_rebuild(self, store: str) -> None:
        db = store
        build_district(db, hazards=1500, seed=11)
        head = rows(db, "SELECT MAX({position}) FROM stored_events")[0][0]
        run = [sys.executable, "-m", "adapters.cli", "projections", "catch-up", "--db", db]
        env = {**os.environ, "HAZARDLOOP_LOG_LEVEL": "warning"}
        proc = subprocess.Popen([*run, "--chunk-size", "25"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while position(db) < head // 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = position(db)
        assert 0 < killed_at < head, "the kill must land in the middle of catching up"
        resumed = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert position(db) == head
        after_resume = snapshot(db)
        rebuilt = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "projections", "rebuild", "--db", db],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert snapshot(db) == after_resume
        assert len(after_resume["ledger"]) == 1500
