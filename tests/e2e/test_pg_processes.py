"""Many processes, one PostgreSQL: writers and a projection worker, each its own process.

- Eight writer processes and `hazardloop projections run` on one database. One writer's insert
  is held open (inserted, lock held, not committed) while the others try to write and the worker
  catches up with everything committed: the worker must not pass the held position. Then no
  event is lost or doubled, the hash chains verify, and the worker's views equal a rebuild.
- The server is stopped under a worker mid catch-up and started again: the worker logs the
  outage, reconnects, resumes from its tracked position and ends equal to a rebuild.

Every wait is for a condition, bounded only so that a broken run fails instead of hanging.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.store import GENESIS, chain_link, frame
from loop.commands import parse_command
from projections.tables import grids, ledger, post_tenures, step_segments, steps
from tests.e2e.test_projection_worker import log_lines
from tests.integration.test_transitions import T0, command
from tests.pgserver import PostgresServer, pg_available

pytestmark = pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not installed")

ROOT = Path(__file__).resolve().parents[2]
#: The tipsters' master key: a PostgreSQL store keeps no key file beside it, so every process
#: (the test, forked writers, the CLI) is pointed at the same key file, made per test.
KEY_ENV = "HAZARDLOOP_CIPHER_KEY_FILE"


def settings(url: str) -> Settings:
    return Settings(db=url, cipher_key_file=Path(os.environ[KEY_ENV]))


VIEWS = (ledger, steps, step_segments, grids, post_tenures)

#: Writers are forked from the test process, which has imported everything already: eight
#: real processes, each with its own engine and connections, without paying eight interpreter
#: start-ups on two cores.
FORK = multiprocessing.get_context("fork")


def write(
    url: str, prefix: str, count: int, hold: int, channel: Any, release: Any, opening: Any,
    together: Any, unlocked: bool,
) -> None:  # fmt: skip
    """A writer process: `count` hazards, each discovered, reported and assigned (one
    transaction per command); puts `{"versions": {hazard: version}}` on `channel`.

    With `hold=N` its Nth insert pauses after inserting — the events table's lock held, its
    positions numbered but uncommitted — puts `{"holding": positions}` and commits only once
    `release` is set. It runs the product's own recorder; only that one insert is paused.
    With `unlocked`, the recorder is made into one without the table lock (the control).
    """
    try:
        from adapters.store import HazardLoopPostgresRecorder

        class Held(HazardLoopPostgresRecorder):
            inserts = 0

            def _fetch_ids_after_insert_events(
                self, curs: Any, stored_events: Any, **kwargs: Any
            ) -> Any:
                positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                Held.inserts += 1
                if Held.inserts == hold:
                    channel.put({"holding": list(positions or ())})
                    release.wait(120)  # the transaction stays open, the lock held, until told
                return positions

        with opening:  # one at a time: see test_eight_processes_open_the_store_at_once
            engine = build_engine(settings(url))
        together.wait(120)  # every writer open (opening waits for a held lock), then all write
        if hold:
            engine.recorder.__class__ = Held
        if unlocked:
            _unlock(engine.recorder)
        versions = {}
        for step, name in enumerate(("discover", "report", "assign")):
            for i in range(count):
                hazard = f"{prefix}{i:03d}"
                cmd = command(name, hazard, T0 + timedelta(hours=step, minutes=i))
                result = engine.handle(parse_command(cmd))
                assert result.ok, result
                assert result.version is not None
                versions[hazard] = result.version
        engine.close()
        channel.put({"versions": versions})
    except BaseException:
        channel.put({"error": traceback.format_exc()})
        raise


def _unlock(recorder: Any) -> None:
    """The control experiment's recorder: positions from the `bigserial` sequence, as a plain
    insert takes them, and no `LOCK TABLE` (nor the hash chains, which need the lock)."""
    from psycopg.sql import SQL, Identifier

    recorder.insert_events_statement = SQL(
        "INSERT INTO {events} (originator_id, originator_version, topic, state) "
        "SELECT originator_id, originator_version, topic, state "
        "FROM unnest(%s::{schema}.{kind}[]) RETURNING notification_id"
    ).format(events=Identifier("stored_events"), schema=Identifier("public"),
             kind=Identifier(recorder.stored_event_type_name))  # fmt: skip
    setattr(recorder, "_lock_table", lambda curs: None)  # noqa: B010
    setattr(recorder, "_chain", lambda *args, **kwargs: None)  # noqa: B010


class Writers:
    """Forked writer processes and what they report."""

    def __init__(self) -> None:
        self.channel: Any = FORK.Queue()
        self.release = FORK.Event()
        self.opening: Any = FORK.Lock()
        self.procs: list[Any] = []

    def start(self, url: str, *writers: tuple[str, int, int], unlocked: bool = False) -> list[Any]:
        """Start writers `(prefix, hazards, hold)`; they open the store, then write together."""
        together = FORK.Barrier(len(writers))
        started = []
        for prefix, count, hold in writers:
            args = (url, prefix, count, hold, self.channel, self.release, self.opening, together,
                    unlocked)  # fmt: skip
            proc = FORK.Process(target=write, name=prefix, args=args, daemon=True)
            proc.start()
            started.append(proc)
        self.procs.extend(started)
        return started

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = self.channel.get(timeout=120)  # a hang guard
        assert "error" not in message, message["error"]
        return message

    def finish(self) -> dict[str, int]:
        """Wait for every writer; the versions each hazard reached."""
        versions: dict[str, int] = {}
        for _ in self.procs:
            versions.update(self.receive()["versions"])
        for proc in self.procs:
            proc.join(60)
            assert proc.exitcode == 0, f"writer {proc.name} exited {proc.exitcode}"
        self.procs.clear()
        return versions

    def close(self) -> None:
        self.release.set()
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "adapters.cli", *args]


def query(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def head(url: str) -> int:
    return int(query(url, "SELECT COALESCE(MAX(notification_id), 0) FROM stored_events")[0][0])


def tracked(url: str) -> int:
    """The worker's position: the least of both projections' (0 before its first chunk)."""
    try:
        rows = query(url, "SELECT position FROM projection_tracking")
    except psycopg.errors.UndefinedTable:
        return 0
    return min((int(r[0]) for r in rows), default=0) if len(rows) == 2 else 0


def waiting_on_events_lock(url: str) -> int:
    """How many writers wait for the events table's write lock (`LOCK TABLE … IN EXCLUSIVE
    MODE`, which every insert takes first) behind the one holding it."""
    sql = ("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
           "WHERE c.relname = 'stored_events' AND l.mode = 'ExclusiveLock' "
           "AND NOT l.granted")  # fmt: skip
    return int(query(url, sql)[0][0])


#: Each started process's stderr log, by pid: a process that dies says why in the failure.
LOGS: dict[int, Path] = {}


def last_lines(proc: subprocess.Popen[str], n: int = 12) -> str:
    log = LOGS.get(proc.pid)
    return "\n".join(log.read_text().splitlines()[-n:]) if log and log.exists() else ""


def wait_for(condition: Callable[[], bool], what: str, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120  # a hang guard, not a performance assertion
    while not condition():
        assert worker.poll() is None, (
            f"the worker exited ({worker.returncode}) before {what}:\n{last_lines(worker)}"
        )
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def views(url: str) -> dict[str, list[tuple[object, ...]]]:
    app = build_engine(settings(url))
    try:
        engine = build_runner(app).engine
        with engine.connect() as conn:
            out = {
                t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key))]
                for t in VIEWS
            }
        engine.dispose()
        return out
    finally:
        app.close()


def rebuilt(url: str) -> dict[str, list[tuple[object, ...]]]:
    """The views after a clean rebuild from the first event (the worker stopped)."""
    app = build_engine(settings(url))
    try:
        runner = build_runner(app)
        runner.rebuild()
        runner.engine.dispose()
    finally:
        app.close()
    return views(url)


def verify_chains(url: str) -> int:
    """Recompute every event's hash over the stored events; return how many events there are."""
    events = query(url, "SELECT notification_id, originator_id, originator_version, topic, state "
                        "FROM stored_events ORDER BY notification_id")  # fmt: skip
    chain = query(url, "SELECT position, originator_id, originator_version, log_hash, recorded_at "
                       "FROM event_chain ORDER BY position")  # fmt: skip
    assert len(chain) == len(events)
    previous, cases = GENESIS, dict[str, bytes]()
    for (position, oid, version, topic, state), link in zip(events, chain, strict=True):
        key = oid.hex
        framed = frame(key, version, topic, bytes(state))
        log_hash = chain_link(previous, cases.get(key, GENESIS), position, link[4], framed)
        assert link == (position, key, version, log_hash, link[4]), f"break at {position}"
        previous = cases[key] = log_hash
    count, head_hash = query(url, "SELECT count, log_hash FROM chain_head")[0]
    assert (count, bytes(head_hash)) == (len(events), previous)
    return len(events)


def started(log: Path) -> bool:
    return any(e["event"] == "projection worker started" for e in log_lines(log))


class Processes:
    """Subprocesses started by a test; whatever still runs at the end is killed."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], name: str, stdin: bool = False) -> subprocess.Popen[str]:
        path = self.tmp / f"{name}.log"
        with path.open("w") as err:
            env = {**os.environ, "HAZARDLOOP_LOG_LEVEL": "info"}
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    text=True)  # fmt: skip
        LOGS[proc.pid] = path
        self.started.append(proc)
        return proc

    def worker(
        self, url: str, *extra: str, name: str = "worker", interval: str = "0.05"
    ) -> subprocess.Popen[str]:
        args = cli("projections", "run", "--db", url, "--interval", interval, *extra)
        return self.start(args, name)

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.close()


@pytest.fixture
def writers() -> Iterator[Writers]:
    w = Writers()
    yield w
    w.close()


@pytest.fixture(autouse=True)
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "master.key"
    monkeypatch.setenv(KEY_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One server for this module (each test makes its own database); the restart test stops
    and starts it, so it is not the session's shared server."""
    with PostgresServer() as server:
        yield server


_names = itertools.count()


def create_store(pg: PostgresServer) -> str:
    url = pg.create_database(f"hazards{next(_names)}")
    app = build_engine(settings(url))  # the event store's tables
    build_runner(app).engine.dispose()  # and the read models'
    app.close()
    return url


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{proc.args!r} exited {proc.returncode}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def stop_worker(worker: subprocess.Popen[str], url: str) -> dict[str, Any]:
    worker.send_signal(signal.SIGTERM)
    result = finish(worker)
    assert result["positions"] == {"cases": head(url), "organisation": head(url)}
    return result


class TestEightWritersAndAWorker:
    def test_a_held_insert_is_not_passed_and_nothing_is_lost_or_doubled(
        self, pg: PostgresServer, procs: Processes, writers: Writers
    ) -> None:
        url = create_store(pg)
        worker = procs.worker(url, "--chunk-size", "40")
        wait_for(lambda: started(procs.tmp / "worker.log"), "the worker to start", worker)
        # Eight writers of 8 hazards each; the first one's 6th transaction stays open.
        held, *fast = writers.start(url, ("S", 8, 6), *((f"W{n}", 8, 0) for n in range(7)))
        holding: list[int] = writers.receive()["holding"]

        # While that insert is uncommitted, every other writer queues behind it (or is done)...
        def queued() -> bool:
            running = sum(1 for p in fast if p.is_alive())
            return waiting_on_events_lock(url) >= running

        wait_for(queued, "the other writers to queue behind the held insert", worker)
        assert held.is_alive()
        # ...and the worker catches up with everything committed. It must stop before the held
        # positions: were writers committing past them, a reader would skip them for good.
        committed = head(url)
        wait_for(lambda: tracked(url) >= committed, "the worker to catch up", worker)
        assert tracked(url) < holding[0] == committed + 1
        writers.release.set()

        versions = writers.finish()
        total = sum(versions.values())
        wait_for(lambda: tracked(url) >= total, "the worker to project every event", worker)
        live = views(url)
        result = stop_worker(worker, url)

        assert len(versions) == 8 * 8
        assert set(versions.values()) == {3}
        assert verify_chains(url) == total == head(url)
        rows = query(url, "SELECT notification_id, originator_version FROM stored_events "
                          "ORDER BY notification_id")  # fmt: skip
        assert [r[0] for r in rows] == list(range(1, total + 1))  # dense, each once
        assert sorted(r[1] for r in rows) == sorted(v for _ in versions for v in (1, 2, 3))
        assert result["events"] == total  # the worker read each position exactly once
        assert len(live["ledger"]) == 64
        assert live == rebuilt(url)

    def test_the_control_without_the_lock_a_reader_skips(
        self, pg: PostgresServer, procs: Processes, writers: Writers
    ) -> None:
        """The same run with writers that take positions from the sequence without the lock:
        the other commits past the held position and the worker passes it, so the assertion
        of the test above would fail — it can tell a store that lets readers skip.

        The held writer holds its first insert and one other writer starts only then, so the
        held position is the only one ever open behind a committed one. (Unlocked writers racing
        each other skip positions of their own at random; a case whose version 2 is skipped and
        whose version 3 then arrives stops the worker with OriginatorVersionError — a skip too,
        but not the one this test is about.)"""
        url = create_store(pg)
        worker = procs.worker(url, "--chunk-size", "40")
        wait_for(lambda: started(procs.tmp / "worker.log"), "the worker to start", worker)
        writers.start(url, ("S", 4, 1), unlocked=True)
        holding: list[int] = writers.receive()["holding"]
        fast = writers.start(url, ("W", 12, 0), unlocked=True)
        wait_for(lambda: not any(p.is_alive() for p in fast), "the others to finish", worker)
        committed = head(url)
        wait_for(lambda: tracked(url) >= committed, "the worker to catch up", worker)
        assert tracked(url) > holding[0]  # passed a position whose transaction is still open
        writers.release.set()
        writers.finish()
        found = query(url, "SELECT count(*) FROM stored_events WHERE notification_id = %s",
                      holding[0])  # fmt: skip
        assert found == [(1,)]  # committed now, below the worker's position: skipped for good


class TestTwoWorkers:
    def test_two_workers_on_one_store_project_each_event_once(
        self, pg: PostgresServer, procs: Processes, writers: Writers
    ) -> None:
        """Two workers race for every chunk while four writers write: each chunk is claimed by
        moving the tracking position from the value read (compare-and-set), so exactly one
        commits it; the loser rolls back, and folds its cases again from the store."""
        url = create_store(pg)
        workers = [procs.worker(url, "--chunk-size", "7", name=f"worker{n}") for n in range(2)]
        for n, w in enumerate(workers):
            log = procs.tmp / f"worker{n}.log"
            wait_for(lambda log=log: started(log), "the workers to start", w)  # type: ignore[misc]
        writers.start(url, *((f"W{n}", 10, 0) for n in range(4)))
        versions = writers.finish()
        total = sum(versions.values())
        for w in workers:
            wait_for(lambda: tracked(url) >= total, "the workers to project every event", w)
        live = views(url)
        read = [stop_worker(w, url)["events"] for w in workers]
        assert sum(read) >= total  # between them they read everything (a loser reads again)
        assert verify_chains(url) == total
        assert len(live["ledger"]) == 40
        assert live == rebuilt(url)


class TestWokenByNotify:
    def test_each_commit_wakes_an_idle_worker(
        self, pg: PostgresServer, procs: Processes, writers: Writers
    ) -> None:
        """With an hour between polls, only the NOTIFY the recorder sends in every insert
        transaction (delivered at commit) can bring the worker to new events: batch after
        batch, it does (the hang guard is far shorter than the hour)."""
        url = create_store(pg)
        worker = procs.worker(url, interval="3600")
        wait_for(lambda: started(procs.tmp / "worker.log"), "the worker to start", worker)
        for n in range(3):
            writers.start(url, (f"N{n}", 3, 0))
            writers.finish()
            total = head(url)

            def projected(total: int = total) -> bool:
                return tracked(url) >= total

            wait_for(projected, f"batch {n} to be projected", worker)
        assert stop_worker(worker, url)["events"] == head(url) == 27


class TestServerRestart:
    def test_the_worker_reconnects_and_resumes(
        self, pg: PostgresServer, procs: Processes, writers: Writers
    ) -> None:
        url = create_store(pg)
        writers.start(url, ("B", 40, 0))  # a backlog for the worker to be in the middle of
        writers.finish()
        backlog = head(url)
        worker = procs.worker(url, "--chunk-size", "4")
        wait_for(lambda: tracked(url) >= backlog // 4, "the worker to be under way", worker)
        pg.stop("immediate")  # as if the server crashed, mid catch-up
        log = procs.tmp / "worker.log"

        def noticed() -> bool:
            return any(e["event"] == "store unreachable, reconnecting" for e in log_lines(log))

        wait_for(noticed, "the worker to notice the outage", worker)
        pg.restart()
        writers.start(url, ("A", 10, 0))  # written after the restart
        writers.finish()
        total = head(url)
        wait_for(lambda: tracked(url) >= total, "the worker to catch up after the restart", worker)
        live = views(url)
        stop_worker(worker, url)
        events = [e["event"] for e in log_lines(log)]
        assert "reconnected" in events
        assert events.index("reconnected") > events.index("store unreachable, reconnecting")
        assert len(live["ledger"]) == 50
        assert live == rebuilt(url)


class TestOpeningTogether:
    def test_eight_processes_open_the_store_at_once(self, pg: PostgresServer) -> None:
        url = create_store(pg)
        channel, go = FORK.Queue(), FORK.Event()
        procs = [FORK.Process(target=_open, args=(url, channel, go), daemon=True)
                 for _ in range(8)]  # fmt: skip
        for proc in procs:
            proc.start()
        go.set()
        outcomes = [channel.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(60)
        assert outcomes == ["ok"] * 8, next(o for o in outcomes if o != "ok")


def _open(url: str, channel: Any, go: Any) -> None:
    go.wait(60)
    try:
        build_engine(settings(url)).close()
        channel.put("ok")
    except Exception as exc:
        channel.put(f"{type(exc).__name__}: {exc}")
