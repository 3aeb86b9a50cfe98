"""The adapters' own tables and reads, the same on SQLite and PostgreSQL (adapters/storesql.py)."""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.embed import open_engine
from adapters.store import location_of, parse_db
from adapters.storesql import store_engine, to_pyformat
from adapters.tokens import TokenStore
from adapters.webhooks import Filters, SubscriberStore
from loop.application import HazardLoop
from tests.conftest import StoreFactory
from tests.stores import write_lock


class TestOwnTables:
    """API tokens and webhook subscribers get their tables on first use, whoever comes first."""

    def test_processes_opening_a_fresh_store_at_once_all_succeed(
        self, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        # Each opener checks for the tables and creates the missing ones; without the store's
        # write lock around both, two of them see "missing" and the second CREATE fails.
        for round_ in range(6):
            db = store_factory(tmp_path, f"race{round_}")
            barrier = threading.Barrier(8)
            failures: list[BaseException] = []

            def open_store(
                i: int,
                db: str = db,
                barrier: threading.Barrier = barrier,
                failures: list[BaseException] = failures,
            ) -> None:
                engine = store_engine(parse_db(db))
                try:
                    barrier.wait()
                    if i % 2:
                        TokenStore(engine)
                    else:
                        SubscriberStore(engine, bytes(32))
                except BaseException as exc:  # collected, then reported with the round
                    failures.append(exc)
                finally:
                    engine.dispose()

            threads = [threading.Thread(target=open_store, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert failures == [], (round_, failures[0])
            engine = store_engine(parse_db(db))
            try:
                names = set(inspect(engine).get_table_names())
            finally:
                engine.dispose()
            assert {"api_tokens", "webhook_subscribers"} <= names

    def test_the_tables_keep_their_rows_when_opened_again(self, store: str) -> None:
        engine = store_engine(parse_db(store))
        try:
            info, token = TokenStore(engine).create("wang", ["auditor"])
            assert TokenStore(engine).authenticate(token).actor == "wang"
            sub, _ = SubscriberStore(engine, bytes(32)).add(
                "https://x.example/h", Filters(), after=3
            )
            again = SubscriberStore(engine, bytes(32))
            assert again.get(sub.id) == sub
            assert [t.id for t in TokenStore(engine).list()] == [info.id]
        finally:
            engine.dispose()


@pytest.mark.parametrize(
    ("named", "pyformat"),
    [
        ("SELECT a FROM t WHERE p BETWEEN :first AND :last",
         "SELECT a FROM t WHERE p BETWEEN %(first)s AND %(last)s"),
        ("SELECT x::text, '5%' FROM t WHERE k=:key",
         "SELECT x::text, '5%%' FROM t WHERE k=%(key)s"),
    ],
)  # fmt: skip
def test_named_parameters_become_psycopgs(named: str, pyformat: str) -> None:
    assert to_pyformat(named) == pyformat


def test_opening_the_tables_waits_for_no_writer(engine: HazardLoop, store: str) -> None:
    """Once the tables exist, opening them takes no write lock: an API server starts while a
    long batch is being written."""
    tables = store_engine(parse_db(store))
    try:
        TokenStore(tables)
        SubscriberStore(tables, bytes(32))
        with write_lock(store):
            started = time.perf_counter()
            TokenStore(tables).list()
            SubscriberStore(tables, bytes(32)).list()
            assert time.perf_counter() - started < 5  # SQLite's busy timeout is 30 s
    finally:
        tables.dispose()


@contextlib.contextmanager
def _collated_store(store: str, store_kind: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test's store; on PostgreSQL, instead, a database whose text collation is ICU's
    en-US (a locale's order: punctuation and case weigh less than letters), not C."""
    if store_kind != "postgres":
        yield store
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"icu_{os.getpid()}"
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '  # type: ignore[arg-type]
            "ICU_LOCALE 'en-US' LOCALE 'C'"
        )
    try:
        yield cluster.url(name)
    finally:
        cluster.drop(name)


def test_tokens_are_listed_oldest_first_whatever_the_databases_collation(
    store: str, store_kind: str, request: pytest.FixtureRequest
) -> None:
    with _collated_store(store, store_kind, request) as db:
        engine = store_engine(parse_db(db))
        try:
            issued = TokenStore(engine)
            noon = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
            for actor, moment in [
                ("on-the-second", noon),
                ("a-microsecond-after", noon + timedelta(microseconds=1)),
                ("a-microsecond-before", noon - timedelta(microseconds=1)),
            ]:
                issued.create(actor, ["auditor"], now=moment)
            assert [t.actor for t in issued.list()] == [
                "a-microsecond-before", "on-the-second", "a-microsecond-after",
            ]  # fmt: skip
        finally:
            engine.dispose()


def test_the_ledger_orders_hazard_ids_as_sqlite_does_whatever_the_collation(
    store: str, store_kind: str, request: pytest.FixtureRequest
) -> None:
    with (
        _collated_store(store, store_kind, request) as db,
        open_engine(Settings(db=db, cipher_key=base64.b64encode(bytes(32)).decode())) as engine,
    ):
        for hazard_id in ("a-1", "B-1", "b-0", "A-2"):  # discovered at the same moment
            engine.handle({"command": "discover", "hazard_id": hazard_id, "actor": "wang",
                           "at": "2026-11-02T09:00:00+08:00", "grid": "G1", "category": "fire",
                           "grade": "general", "title": "same minute"})  # fmt: skip
        ids = [i["hazard_id"] for i in engine.ledger().items]
    assert ids == ["A-2", "B-1", "a-1", "b-0"]  # by code point: capitals first


@pytest.mark.parametrize("name", ["e%20f.db", "e f.db", "q?x#y.db", "pct%41.db", "uni_é中.db"])
def test_a_plain_path_is_the_same_file_for_events_and_read_models(
    tmp_path: Path, name: str
) -> None:
    """The store's URL (what the engine keeps, and `location_of` reads back for the read
    models) names the very file the path does: a '%20' in a name is not a space."""
    path = tmp_path / name
    location = parse_db(str(path))
    assert location.file == path
    assert parse_db(location.url).file == path  # read back as the engine does
    app = build_engine(Settings(db=str(path)))
    try:
        assert location_of(app).file == path
        runner = build_runner(app)  # makes the read models' tables
        try:
            assert runner.engine.url.database == str(path)
        finally:
            runner.engine.dispose()
    finally:
        app.close()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(name)] == []
