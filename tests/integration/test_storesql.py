"""The adapters' own tables and reads, the same on SQLite and PostgreSQL (adapters/storesql.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect

from adapters.store import parse_db
from adapters.storesql import store_engine, to_pyformat
from adapters.tokens import TokenStore
from adapters.webhooks import Filters, SubscriberStore
from tests.conftest import StoreFactory


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
