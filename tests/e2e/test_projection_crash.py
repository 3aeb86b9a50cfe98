"""A projection process killed with SIGKILL mid catch-up loses and doubles nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.demo import AS_OF, build_district
from projections.helper import can_fork
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


def child_pids(pid: int) -> set[int]:
    """The processes `pid` started (Linux's /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class TestKilledProjection:
    """SIGKILL mid-catch-up, then resume: the read models equal a clean rebuild."""

    @pytest.mark.parametrize("helpers", [0, 2], ids=["one-process", "fold-helpers"])
    def test_a_killed_catch_up_resumes_and_ends_equal_to_a_rebuild(
        self, store: str, helpers: int
    ) -> None:
        """With fold helpers (projections/helper.py), they end too when the runner is killed."""
        if helpers and not can_fork():
            pytest.skip("fold helpers need Linux and 2+ CPUs")
        db = store
        build_district(db, hazards=1500, seed=11)
        head = rows(db, "SELECT MAX({position}) FROM stored_events")[0][0]
        run = [sys.executable, "-m", "adapters.cli", "projections", "catch-up", "--db", db]
        env = {**os.environ, "HAZARDLOOP_LOG_LEVEL": "warning"}
        if helpers:
            env |= {"HAZARDLOOP_FOLD_HELPER_FROM": "1", "HAZARDLOOP_FOLD_HELPERS": str(helpers)}
        proc = subprocess.Popen([*run, "--chunk-size", "25"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        children: set[int] = set()
        while position(db) < head // 3 and proc.poll() is None and time.monotonic() < deadline:
            children |= child_pids(proc.pid)
            time.sleep(0.01)
        children |= child_pids(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = position(db)
        assert 0 < killed_at < head, "the kill must land in the middle of catching up"
        assert len(children) == helpers
        ended = time.monotonic() + 20
        while any(alive(pid) for pid in children) and time.monotonic() < ended:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in children), "a helper outlived its runner"
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
