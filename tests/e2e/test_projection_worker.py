"""`hazardloop projections run` on SQLite: a real worker process following other processes' writes.

Every wait below is for a condition (a tracked position, a log line, an exit), bounded only so a
broken worker fails the test instead of hanging it; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.bootstrap import Settings, build_engine, build_runner
from projections.tables import grids, ledger, post_tenures, step_segments, steps
from tests.integration.test_transitions import T0, command

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HAZARDLOOP_LOG_LEVEL": "info"}
VIEWS = (ledger, steps, step_segments, grids, post_tenures)
#: The loop each hazard walks, one command per batch below.
WALK = ("discover", "report", "assign", "rectify", "verify", "close")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "adapters.cli", *args]


def apply(db: Path, commands: list[dict[str, Any]]) -> None:
    """Write commands through another process: `hazardloop apply` (all must be accepted)."""
    lines = "".join(json.dumps(c) + "\n" for c in commands)
    done = subprocess.run(cli("apply", "-", "--db", str(db), "--batch-size", "7"), input=lines,
                          cwd=ROOT, env=ENV, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def batch(step: int, hazards: range, prefix: str = "W") -> list[dict[str, Any]]:
    at = T0 + timedelta(hours=step)
    return [command(WALK[step], f"{prefix}{i:03d}", at) for i in hazards]


def head(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM stored_events").fetchone()[0])


def tracked(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT name, position FROM projection_tracking").fetchall()
        except sqlite3.OperationalError:
            return {}
    return {str(n): int(p) for n, p in rows}


def wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a performance assertion
    while not condition():
        assert proc.poll() is None, f"the worker exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def caught_up(db: Path) -> Callable[[], bool]:
    def check() -> bool:
        positions = tracked(db)
        end = head(db)
        return set(positions) == {"cases", "organisation"} and min(positions.values()) == end

    return check


def views(db: Path) -> dict[str, list[tuple[object, ...]]]:
    app = build_engine(Settings(db=str(db)))
    try:
        engine = build_runner(app).engine
        with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key))]
                for t in VIEWS
            }
    finally:
        app.close()


def rebuilt(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """The views after a clean rebuild from the first event (the worker stopped)."""
    app = build_engine(Settings(db=str(db)))
    try:
        build_runner(app).rebuild()
    finally:
        app.close()
    return views(db)


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], Path]]]:
    """Start `projections run` processes; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []

    def start(db: Path, *extra: str, level: str = "info") -> tuple[subprocess.Popen[str], Path]:
        log = tmp_path / f"worker-{len(started)}.log"
        args = cli("projections", "run", "--db", str(db), "--interval", "0.05", *extra)
        env = {**ENV, "HAZARDLOOP_LOG_LEVEL": level}
        with log.open("w") as err:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=err, text=True)  # fmt: skip
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> dict[str, Any]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


class TestWorkerOnSQLite:
    def test_follows_another_process_and_stops_on_sigterm(
        self, tmp_path: Path, worker: Callable[..., tuple[subprocess.Popen[str], Path]]
    ) -> None:
        db = tmp_path / "live.db"
        apply(db, batch(0, range(40)))  # a store with something in it before the worker starts
        proc, log = worker(db, "--chunk-size", "25")
        wait_for(caught_up(db), "the first catch-up", proc)
        for step in range(1, 4):  # each batch is written while the worker is idle, polling
            apply(db, batch(step, range(40)) + batch(0, range(step * 10, step * 10 + 10), "N"))
            wait_for(caught_up(db), f"batch {step}", proc)
        live = views(db)
        status = list(ledger.c.keys()).index("status")
        by_status = sorted(str(row[status]) for row in live["ledger"])
        assert by_status == ["discovered"] * 30 + ["rectified"] * 40
        result = stop(proc)
        assert result["positions"] == {"cases": head(db), "organisation": head(db)}
        assert result["events"] == head(db)
        assert live == rebuilt(db)
        lines = [entry["event"] for entry in log_lines(log)]
        assert lines[0] == "projection worker started"
        assert lines[-1] == "projection worker stopped"

    def test_sigint_also_stops_it_cleanly(
        self, tmp_path: Path, worker: Callable[..., tuple[subprocess.Popen[str], Path]]
    ) -> None:
        db = tmp_path / "int.db"
        apply(db, batch(0, range(5)))
        proc, _ = worker(db)
        wait_for(caught_up(db), "the catch-up", proc)
        assert stop(proc, signal.SIGINT)["events"] == head(db)

    def test_another_runner_moving_the_positions_under_it(
        self, tmp_path: Path, worker: Callable[..., tuple[subprocess.Popen[str], Path]]
    ) -> None:
        """A report's catch-up (another runner) projects events while the worker holds cases in
        memory: the worker must notice the moved positions and not fold its stale copies."""
        db = tmp_path / "two.db"
        apply(db, batch(0, range(30)))
        proc, _ = worker(db)
        wait_for(caught_up(db), "the first catch-up", proc)  # the worker now holds 30 cases
        proc.send_signal(signal.SIGSTOP)  # frozen between polls, never mid-chunk: it is idle
        try:
            apply(db, batch(1, range(30)))  # every held case moves on...
            other = subprocess.run(cli("projections", "catch-up", "--db", str(db)), cwd=ROOT,
                                   env=ENV, capture_output=True, text=True)  # fmt: skip
            assert other.returncode == 0, other.stderr  # ...projected by someone else
            apply(db, batch(2, range(30)))  # and moves again, for the worker to project
        finally:
            proc.send_signal(signal.SIGCONT)
        wait_for(caught_up(db), "the worker to project the last batch", proc)
        live = views(db)
        stop(proc)
        assert live == rebuilt(db)
        status = list(ledger.c.keys()).index("status")
        assert {row[status] for row in live["ledger"]} == {"assigned"}

    def test_a_second_signal_abandons_the_chunk_in_progress(
        self, tmp_path: Path, worker: Callable[..., tuple[subprocess.Popen[str], Path]]
    ) -> None:
        """SIGINT then SIGTERM while a chunk waits for the write lock: the chunk is rolled back,
        exit 0, nothing projected; the next worker projects it all, equal to a rebuild."""
        db = tmp_path / "abandon.db"
        apply(db, batch(0, range(20)))
        views(db)  # the read models' tables exist: the worker only needs the lock to project
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock: the worker's chunk will wait for it
        try:
            proc, log = worker(db, level="debug")

            def reading() -> bool:
                return any(e["event"] == "chunk read" for e in log_lines(log))

            wait_for(reading, "the worker to read its first chunk", proc)
            # Python runs the handlers once SQLite returns, in signal-number order: SIGINT asks
            # to stop, SIGTERM (a second request) abandons the chunk.
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGTERM)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        result = json.loads(proc.communicate(timeout=60)[0].strip().splitlines()[-1])
        assert proc.returncode == 0
        assert result == {"events": 0, "positions": None}
        assert tracked(db) == {}
        assert "stopped mid-chunk: the chunk was rolled back" in [
            e["event"] for e in log_lines(log)
        ]
        again, _ = worker(db)
        wait_for(caught_up(db), "the next worker to catch up", again)
        live = views(db)
        assert stop(again)["events"] == head(db)
        assert len(live["ledger"]) == 20
        assert live == rebuilt(db)
