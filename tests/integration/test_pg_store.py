"""The PostgreSQL store: SQLite's chains, writers serialised, dense positions, errors named.

Chains are checked here by recomputing every event's hash from the stored rows with `frame` and
`chain_link`, on either store (the auditor's `audit verify` has its own tests).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from adapters.bootstrap import Settings, build_engine
from adapters.store import (
    GENESIS,
    HazardLoopPostgresRecorder,
    chain_link,
    frame,
    parse_db,
)
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.errors import StoreError
from tests.conftest import SHANGHAI, FakeClock, PgCluster
from tests.stores import write_lock

KEY = "A" * 43 + "="  # base64 of 32 bytes, for stores made outside the `store` fixture


def chain_rows(
    location: str,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[Any, ...]]:
    """(events by position, chain rows by position, head) exactly as stored."""
    parsed = parse_db(location)
    events_sql = (
        "SELECT {pos}, originator_id, originator_version, topic, state "
        "FROM stored_events ORDER BY {pos}"
    )
    chain_sql = (
        "SELECT position, originator_id, originator_version, recorded_at, log_hash "
        "FROM event_chain ORDER BY position"
    )
    head_sql = "SELECT count, log_hash, recorded_at FROM chain_head"
    if parsed.pg is None:
        with sqlite3.connect(parsed.path) as conn:
            events = conn.execute(events_sql.format(pos="rowid")).fetchall()
            chain = conn.execute(chain_sql).fetchall()
            head = conn.execute(head_sql).fetchone()
        events = [(p, str(uuid.UUID(o)), v, t, bytes(s)) for p, o, v, t, s in events]
    else:
        with psycopg.connect(**parsed.psycopg_kwargs()) as conn:
            events = conn.execute(events_sql.format(pos="notification_id")).fetchall()  # type: ignore[arg-type]
            chain = conn.execute(chain_sql).fetchall()  # type: ignore[arg-type]
            head = conn.execute(head_sql).fetchone()  # type: ignore[arg-type]
        events = [(p, str(o), v, t, bytes(s)) for p, o, v, t, s in events]
    chain = [(p, o, v, r, bytes(lh)) for p, o, v, r, lh in chain]
    assert head is not None
    return events, chain, (head[0], bytes(head[1]), head[2])


def assert_chains_intact(location: str) -> None:
    """Recompute every event's hash (its link in both chains) from the stored bytes: dense
    positions, record times never going back, every link, the head."""
    events, chain, head = chain_rows(location)
    assert [e[0] for e in events] == list(range(1, len(events) + 1))  # dense: no gaps
    assert [c[0] for c in chain] == [e[0] for e in events]
    assert [c[3] for c in chain] == sorted(c[3] for c in chain)
    previous, cases = GENESIS, dict[str, tuple[int, bytes]]()
    for (pos, oid, version, topic, state), row in zip(events, chain, strict=True):
        key = uuid.UUID(oid).hex
        if version <= 1:  # a case's first version: 1 (0 in eventsourcing's recorder tests)
            before = GENESIS
        else:
            assert cases[key][0] == version - 1, pos  # a case's versions run on, in log order
            before = cases[key][1]
        framed = frame(key, version, topic, state)
        log_hash = chain_link(previous, before, pos, row[3], framed)
        assert row == (pos, key, version, row[3], log_hash), pos
        previous = log_hash
        cases[key] = (version, log_hash)
    assert head[:2] == (len(events), previous)
    if chain:
        assert head[2] == chain[-1][3]  # the head's record time is the last event's


COMMANDS: list[dict[str, Any]] = [
    {"command": "discover", "hazard_id": f"H-{i}", "actor": "wang.grid",
     "at": f"2026-09-{10 + i}T09:30:00+08:00", "grid": "D01-S02-C03", "category": "fire",
     "grade": "general", "title": f"Exit {i} blocked"}
    for i in range(1, 6)
] + [
    {"command": "report", "hazard_id": f"H-{i}", "actor": "wang.grid",
     "at": f"2026-09-{10 + i}T10:00:00+08:00", "idempotency_key": f"r-{i}"}
    for i in range(1, 6)
] + [
    {"command": "assign", "hazard_id": "H-2", "actor": "centre.li",
     "at": "2026-09-20T10:00:00+08:00", "unit": "fire-brigade", "person": "zhao"},
    {"command": "report", "hazard_id": "H-1", "actor": "wang.grid",
     "at": "2026-09-11T10:00:00+08:00", "idempotency_key": "r-1"},  # replayed: no event
]  # fmt: skip


def _run(location: str) -> HazardLoop:
    clock = FakeClock(__import__("datetime").datetime(2026, 11, 20, 18, 0, tzinfo=SHANGHAI))
    app = build_engine(Settings(db=location, cipher_key=KEY), clock=clock)
    for i, cmd in enumerate(COMMANDS):
        if i < 5:
            app.handle(parse_command(cmd))  # one transaction each
    clock.advance(hours=1)
    results = app.handle_many(parse_command(c) for c in COMMANDS[5:])  # one batch
    assert all(r.ok for r in results), [r.to_dict() for r in results]
    return app


@pytest.fixture
def both(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:
    name = pg_cluster.create("same")
    yield str(tmp_path / "same.db"), pg_cluster.url(name)
    pg_cluster.drop(name)


def test_the_same_events_give_byte_identical_chains_on_both_stores(
    both: tuple[str, str],
) -> None:
    sqlite_db, pg_db = both
    for location in both:
        _run(location).close()
    lite, pg = chain_rows(sqlite_db), chain_rows(pg_db)
    assert lite[0] == pg[0]  # the same stored bytes at the same positions
    assert lite[1] == pg[1]  # the same chain rows, record times included
    assert lite[2] == pg[2]  # the same head
    assert lite[2][0] == 11
    for location in both:
        assert_chains_intact(location)


def test_a_refused_write_leaves_no_gap_and_the_chain_goes_on(store: str, store_kind: str) -> None:
    app = build_engine(Settings(db=store, cipher_key=KEY))
    try:
        a, b = uuid.uuid4(), uuid.uuid4()
        recorder = app.recorder
        assert recorder.insert_events([StoredEvent(a, 1, "t", b"1"), StoredEvent(a, 2, "t", b"2")])
        with pytest.raises(IntegrityError):  # a version clash: the whole insert is refused
            recorder.insert_events([StoredEvent(b, 1, "t", b"3"), StoredEvent(a, 2, "t", b"x")])
        recorder.insert_events([StoredEvent(b, 1, "t", b"3")], idempotency=[("k", "f", b"{}")])
        with pytest.raises(IntegrityError):  # an idempotency key stored before
            recorder.insert_events([StoredEvent(b, 2, "t", b"4")], idempotency=[("k", "f", b"{}")])
        assert recorder.insert_events([StoredEvent(b, 2, "t", b"4")]) == [4]
        assert recorder.max_notification_id() == 4
    finally:
        app.close()
    assert_chains_intact(store)


def test_writers_are_serialised_and_readers_never_pass_an_uncommitted_position(
    pg_cluster: PgCluster,
) -> None:
    """A transaction that holds the events' table lock (as a writer does from its insert to its
    commit) makes other writers wait; readers are not blocked and see only committed events."""
    name = pg_cluster.create("lock")
    location = pg_cluster.url(name)
    app = build_engine(Settings(db=location, cipher_key=KEY))
    try:
        recorder = app.recorder
        assert isinstance(recorder, HazardLoopPostgresRecorder)
        first = uuid.uuid4()
        recorder.insert_events([StoredEvent(first, 1, "t", b"1")])
        done: list[Any] = []

        def write() -> None:
            done.append(recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "t", b"w")]))

        with psycopg.connect(**parse_db(location).psycopg_kwargs()) as holder:
            holder.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")  # a writer mid-flight
            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.5)
            assert not done  # waiting for the lock
            assert recorder.max_notification_id() == 1  # readers go on, and see position 1 only
            assert [n.id for n in recorder.select_notifications(1, 10)] == [1]
            holder.rollback()  # the lock goes with the transaction
        writer.join(10)
        assert done == [[2]]
    finally:
        app.close()
    assert_chains_intact(location)
    pg_cluster.drop(name)


def test_concurrent_writers_keep_one_chain_in_commit_order(store: str) -> None:
    apps = [build_engine(Settings(db=store, cipher_key=KEY)) for _ in range(4)]
    try:

        def hammer(app: HazardLoop, n: int) -> None:
            for i in range(25):
                oid = uuid.uuid4()
                app.recorder.insert_events(
                    [StoredEvent(oid, v, "t", f"{n}-{i}-{v}".encode()) for v in (1, 2, 3)]
                )

        threads = [threading.Thread(target=hammer, args=(a, n)) for n, a in enumerate(apps)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for a in apps:
            a.close()
    events, _, head = chain_rows(store)
    assert head[0] == len(events) == 300
    assert_chains_intact(store)


class TestParseDb:
    def test_postgres_urls_in_every_spelling(self) -> None:
        for scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            loc = parse_db(f"{scheme}://ann:s%40cret@db.example:6543/hazards", env={})
            assert loc.pg is not None
            assert (loc.pg.host, loc.pg.port, loc.pg.user, loc.pg.dbname) == (
                "db.example", 6543, "ann", "hazards")  # fmt: skip
            assert loc.pg.password == "s@cret"
            assert loc.display == "postgresql://ann@db.example:6543/hazards"  # no password
            env = loc.env()
            assert env["PERSISTENCE_MODULE"] == "adapters.store:HazardLoopPostgresFactory"
            assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
                "db.example", "6543", "hazards")  # fmt: skip
            assert str(loc.sqlalchemy_url().drivername) == "postgresql+psycopg"

    def test_pool_and_lock_settings_from_the_environment_or_the_url(self) -> None:
        env = {"HAZARDLOOP_POOL_SIZE": "7", "HAZARDLOOP_LOCK_TIMEOUT": "5", "PGPASSWORD": "pw"}
        loc = parse_db("postgresql://ann@h/db", env=env)
        assert loc.pg is not None
        assert (loc.pg.pool_size, loc.pg.lock_timeout, loc.pg.port, loc.pg.password) == (
            7, 5, 5432, "pw")  # fmt: skip
        assert loc.env()["POSTGRES_POOL_SIZE"] == "7"
        assert loc.env()["POSTGRES_LOCK_TIMEOUT"] == "5"
        loc = parse_db("postgresql://ann@h/db?pool_size=3", env=env)
        assert loc.pg is not None
        assert loc.pg.pool_size == 3

    @pytest.mark.parametrize(
        ("url", "env", "named"),
        [
            ("postgresql://ann@h:5432/", {}, "names no database"),
            ("postgresql://ann@h:port/db", {}, "port"),
            ("postgresql://ann@h/db", {"HAZARDLOOP_POOL_SIZE": "zero"}, "HAZARDLOOP_POOL_SIZE"),
            ("postgresql://ann@h/db", {"HAZARDLOOP_POOL_SIZE": "0"}, "HAZARDLOOP_POOL_SIZE"),
            ("postgresql://ann@h/db", {"HAZARDLOOP_LOCK_TIMEOUT": "-1"}, "LOCK_TIMEOUT"),
            ("postgresql://ann@h/db?sslmode=x", {}, "'sslmode'"),
            ("mysql://ann@h/db", {}, "'mysql'"),
        ],
    )
    def test_bad_urls_and_settings_are_named(
        self, url: str, env: dict[str, str], named: str
    ) -> None:
        with pytest.raises(StoreError, match=named):
            parse_db(url, env=env)

    def test_a_postgres_store_has_no_file(self) -> None:
        with pytest.raises(StoreError, match="PostgreSQL store"):
            _ = parse_db("postgresql://ann@h/db", env={}).path

    def test_sqlite_spellings_are_unchanged(self) -> None:
        assert parse_db("hazards.db", env={}).path == Path("hazards.db")
        assert parse_db("sqlite:///a/b.db", env={}).path == Path("a/b.db")
        assert parse_db(None, env={"HAZARDLOOP_DB": "x.db"}).path == Path("x.db")


def test_an_unreachable_server_or_missing_database_is_a_store_error(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    missing = pg_cluster.url("no_such_database")
    with pytest.raises(StoreError, match='database "no_such_database" does not exist'):
        build_engine(Settings(db=missing, cipher_key=KEY))
    with pytest.raises(StoreError, match="cannot connect to the event store"):
        build_engine(Settings(db="postgresql://nobody@127.0.0.1:1/x", cipher_key=KEY))


def test_a_postgres_store_needs_a_master_key_setting(pg_cluster: PgCluster) -> None:
    with pytest.raises(StoreError, match="HAZARDLOOP_CIPHER_KEY_FILE"):
        build_engine(Settings(db=pg_cluster.url("postgres"), cipher_key=None, cipher_key_file=None))


def test_an_engine_opens_while_a_writer_holds_the_lock(store: str) -> None:
    """Opening a store whose schema is complete takes no lock (CREATE INDEX IF NOT EXISTS would
    wait for the writer's commit on PostgreSQL)."""
    build_engine(Settings(db=store, cipher_key=KEY)).close()  # the schema, made once
    with write_lock(store):
        done: list[HazardLoop] = []
        opener = threading.Thread(
            target=lambda: done.append(build_engine(Settings(db=store, cipher_key=KEY)))
        )
        opener.start()
        opener.join(20)
        assert done, "opening the engine waited for the writer's lock"
        done[0].close()


def _views(location: str) -> tuple[dict[str, list[tuple[Any, ...]]], list[Any]]:
    """Every read-model row, and the reports at several moments, of a caught-up store."""
    from sqlalchemy import select

    from adapters.bootstrap import build_runner
    from adapters.demo import AS_OF
    from projections.reports import accountability_report, overdue_report, parse_period
    from projections.tables import grids, ledger, post_tenures, step_segments, steps

    app = build_engine(Settings(db=location, cipher_key=KEY), clock=lambda: AS_OF)
    runner = build_runner(app)
    try:
        runner.catch_up()
        rows: dict[str, list[tuple[Any, ...]]] = {}
        reports: list[Any] = []
        with runner.engine.connect() as conn:
            for table in (ledger, steps, step_segments, grids, post_tenures):
                key = list(table.primary_key.columns)
                rows[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*key))]
            for days in (0, 20, 45, 80):
                moment = AS_OF - __import__("datetime").timedelta(days=days)
                reports.append(overdue_report(conn, moment, app.policy, app.calendar))
            for period in ("2026-07", "2026-08", "2026-Q3"):
                reports.append(
                    accountability_report(
                        conn, parse_period(period), AS_OF, app.policy, app.calendar
                    )
                )
        return rows, reports
    finally:
        runner.engine.dispose()
        app.close()


def test_the_read_models_and_reports_are_the_same_on_both_stores(
    both: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo district, built the same way in both stores: equal rows, equal reports."""
    from adapters.demo import build_district

    monkeypatch.setenv("HAZARDLOOP_CIPHER_KEY", KEY)
    for location in both:
        build_district(location, hazards=120, seed=11)
    lite_rows, lite_reports = _views(both[0])
    pg_rows, pg_reports = _views(both[1])
    assert sum(len(v) for v in lite_rows.values()) > 1000
    for name in lite_rows:
        assert lite_rows[name] == pg_rows[name], name
    assert any(r.rows for r in lite_reports)
    assert lite_reports == pg_reports


def test_engines_opening_a_fresh_store_at_once_all_succeed(pg_cluster: PgCluster) -> None:
    """The first opening creates the schema; others opening at the same moment wait for it (the
    server does not serialise CREATE TYPE / CREATE TABLE IF NOT EXISTS among themselves)."""
    name = pg_cluster.create("fresh", empty=True)
    location = pg_cluster.url(name)
    go = threading.Event()
    outcomes: list[str] = []

    def open_it() -> None:
        go.wait(10)
        try:
            build_engine(Settings(db=location, cipher_key=KEY)).close()
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    try:
        assert outcomes == ["ok"] * 6, outcomes
    finally:
        pg_cluster.drop(name)


@pytest.mark.sqlite_only("checks the marker itself: the test's store is a file")
def test_a_sqlite_only_test_runs_on_a_file_only(store: str, store_kind: str) -> None:
    assert store_kind == "sqlite"
    assert Path(store).suffix == ".db"
