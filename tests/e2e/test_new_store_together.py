"""Processes started together on a brand-new store all come up (a deployment's workers).

Several processes — `hazardloop projections run` workers and API workers (the embedded engine)
— open one new store at the same moment: each creates the event store's tables, the tipsters'
key file, the API tokens' table and the read models (tables, indexes, the `steps` view, the
tracking table), then catches up once. Whoever comes second must find what the first made, not
fail on it: "table … already exists" (SQLite), "relation … already exists" or a unique
violation on pg_type (PostgreSQL, even with IF NOT EXISTS), "database is locked" from the
switch to WAL, or a key file read before its key was written ("damaged").

The processes are forked (each has its own connections) and wait at one event, so they start
within a millisecond or so of each other; a few new stores make a collision near certain when
the read models' schema is unguarded (measured before the guards: most rounds failed on both
stores). The key file's and WAL's guards are rarer to hit here: the key file has tests of its
own (tests/integration/test_tipsters.py).
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy import inspect

from adapters.bootstrap import Settings, build_engine, build_runner, views_engine
from adapters.embed import EmbeddedEngine
from projections.tables import METADATA, VIEW_SQL
from tests.conftest import StoreFactory

FORK = multiprocessing.get_context("fork")
PROCESSES = 6
ROUNDS = 5


def _start(i: int, settings: Settings, go: Any, out: Any) -> None:
    """One process: open the store and catch the read models up, as the worker (odd `i`) or
    as the API (even `i`: the embedded engine, whose first read catches up) does."""
    go.wait(60)
    try:
        app = build_engine(settings)
        try:
            if i % 2:
                runner = build_runner(app, settings=settings)
                runner.catch_up()
                runner.engine.dispose()
            else:
                embedded = EmbeddedEngine(app)
                embedded.ledger()
                embedded.close()
        finally:
            app.close()
        out.put("ok")
    except BaseException:
        out.put(traceback.format_exc())


def _together(settings: Settings) -> list[str]:
    """What each process said; all within one deadline (a hang fails the test in two minutes,
    not in six times that)."""
    go, out = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_start, args=(i, settings, go, out), daemon=True)
             for i in range(PROCESSES)]  # fmt: skip
    for proc in procs:
        proc.start()
    go.set()
    deadline = time.monotonic() + 120
    try:
        return [out.get(timeout=max(0.1, deadline - time.monotonic())) for _ in procs]
    finally:
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def test_processes_opening_a_new_store_at_once_all_come_up(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    for round_ in range(ROUNDS):
        db = store_factory(tmp_path, f"new{round_}", empty=True)
        # A key file of this round's, made by whoever comes first (beside a SQLite store).
        key = tmp_path / f"new{round_}.pg.key" if "://" in db else None
        settings = Settings(db=db, cipher_key_file=key)
        outcomes = _together(settings)
        failed = [o for o in outcomes if o != "ok"]
        assert not failed, f"round {round_}: {len(failed)} of {PROCESSES} failed:\n{failed[0]}"
        app = build_engine(settings, existing=True)
        engine = views_engine(app)
        try:
            found = inspect(engine)
            assert set(METADATA.tables) <= set(found.get_table_names())
            assert set(VIEW_SQL) <= set(found.get_view_names())
            assert build_runner(app, engine).positions() == {"cases": 0, "organisation": 0}
        finally:
            engine.dispose()
            app.close()
        store_factory.drop(db)
