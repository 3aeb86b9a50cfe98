"""A catch-up from zero builds the views' secondary indexes once, at its end (`ProjectionRunner.
defer_indexes_from`), on both stores: the same views as index-by-index maintenance, the
indexes there whenever the catch-up ends (however it ends), and none left missing for good."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from adapters.bootstrap import build_runner
from loop.application import HazardLoop
from projections.helper import can_fork
from projections.runner import ProjectionRunner, _index_names
from projections.tables import grids, ledger, post_tenures, step_segments, steps, tracking
from tests.integration.test_lean_read import write_some

TABLES = (ledger, steps, step_segments, grids, post_tenures, tracking)
#: The indexes a catch-up from zero defers: every non-unique index of the views.
SECONDARY = {i.name for t in TABLES for i in t.indexes if not i.unique}


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in TABLES
        }


def indexes(runner: ProjectionRunner) -> set[str]:
    with runner.engine.connect() as conn:
        return _index_names(conn)


def watched(runner: ProjectionRunner, fail_at: int | None = None) -> list[set[str]]:
    """The secondary indexes present as each chunk is read (and a failure at chunk `fail_at`)."""
    seen: list[set[str]] = []

    def on_chunk(start: int, last: int) -> None:
        seen.append(SECONDARY & indexes(runner))
        if fail_at is not None and len(seen) == fail_at:
            raise RuntimeError("the machine went down")

    runner.on_chunk = on_chunk
    return seen


def runner_for(engine: HazardLoop, defer_from: int) -> ProjectionRunner:
    runner = build_runner(engine)
    runner.fold_helper_from = 0  # one process: chunk boundaries as set here
    runner.chunk_size, runner.defer_indexes_from = 2, defer_from
    return runner


def test_a_catch_up_from_zero_builds_the_indexes_at_its_end(engine: HazardLoop) -> None:
    head = write_some(engine)
    plain = runner_for(engine, 0)
    assert plain.rebuild() == head
    expected = snapshot(plain.engine)
    assert indexes(plain) >= SECONDARY
    plain.engine.dispose()

    runner = runner_for(engine, 1)
    seen = watched(runner)
    assert runner.rebuild() == head
    assert seen == [set()] * 5, "no secondary index while folding"
    assert indexes(runner) >= SECONDARY
    assert runner.deferred == 1
    assert snapshot(runner.engine) == expected
    # The next catch-up starts past zero: nothing is dropped.
    assert runner.catch_up() == 0
    assert runner.deferred == 1
    runner.engine.dispose()


def test_under_the_threshold_or_past_zero_the_indexes_stay(engine: HazardLoop) -> None:
    head = write_some(engine)
    runner = runner_for(engine, head + 1)  # the backlog is one short
    seen = watched(runner)
    assert runner.rebuild() == head
    assert seen
    assert all(s == SECONDARY for s in seen)
    assert runner.deferred == 0
    runner.engine.dispose()


def test_a_catch_up_that_fails_midway_leaves_the_indexes_built(engine: HazardLoop) -> None:
    head = write_some(engine)
    plain = runner_for(engine, 0)
    plain.rebuild()
    expected = snapshot(plain.engine)
    plain.engine.dispose()

    runner = runner_for(engine, 1)
    seen = watched(runner, fail_at=3)
    with pytest.raises(RuntimeError, match="went down"):
        runner.rebuild()
    assert seen == [set(), set(), set()]
    assert runner.positions() == {"cases": 4, "organisation": 4}  # two chunks committed
    assert indexes(runner) >= SECONDARY, "built again as the catch-up ended"
    # The next catch-up does not start from zero: it keeps them while it folds.
    seen = watched(runner)
    assert runner.catch_up() == head - 4
    assert seen
    assert all(s == SECONDARY for s in seen)
    assert snapshot(runner.engine) == expected
    runner.engine.dispose()


def test_indexes_a_killed_catch_up_left_missing_are_built_before_the_next_one(
    engine: HazardLoop,
) -> None:
    """A process killed mid-catch-up cannot build them at its end: the next catch-up (and the
    next runner, as it starts) finds them missing and builds them first."""
    head = write_some(engine)
    runner = runner_for(engine, 1)
    runner.catch_up(until=4)
    dropped = sorted(SECONDARY)[:2]

    def drop(conn: Connection) -> None:
        for t in TABLES:
            for i in t.indexes:
                if i.name in dropped:
                    i.drop(conn)

    with runner.engine.begin() as conn:
        drop(conn)
    assert not set(dropped) & indexes(runner)
    seen = watched(runner)
    assert runner.catch_up() == head - 4
    assert seen
    assert all(s == SECONDARY for s in seen)
    with runner.engine.begin() as conn:
        drop(conn)
    runner.engine.dispose()
    again = build_runner(engine)
    assert indexes(again) >= SECONDARY
    again.engine.dispose()


def test_a_projection_rebuilt_alone_defers_only_its_own_indexes(engine: HazardLoop) -> None:
    """The organisation projection from zero (its tables have no secondary index), the cases
    projection up to date: the cases' indexes stay while the organisation is folded."""
    head = write_some(engine)
    runner = runner_for(engine, 1)
    runner.catch_up()
    assert runner.deferred == 1  # that one, from zero
    seen = watched(runner)
    assert runner.rebuild(["organisation"]) == head
    assert seen
    assert all(s == SECONDARY for s in seen)
    assert runner.deferred == 1
    runner.engine.dispose()


def spans(runner: ProjectionRunner) -> list[int]:
    """The number of positions each chunk of the runner's catch-ups covers, as read."""
    seen: list[int] = []
    runner.on_chunk = lambda start, last: seen.append(last - start + 1)
    return seen


@pytest.mark.skipif(not can_fork(), reason="fold helpers need Linux and 2+ CPUs")
def test_a_catch_up_from_zero_over_a_long_log_takes_bigger_transactions(
    engine: HazardLoop,
) -> None:
    """`rebuild_chunk_size` events per transaction for a catch-up whose fold helpers fold the
    cases from zero with twice that many or more to read; `chunk_size` for any other
    (docs/projections.md, "Rebuilding: bigger transactions"). The views are the same."""
    head = write_some(engine)
    assert head == 9
    plain = runner_for(engine, 0)
    assert plain.rebuild() == head
    expected = snapshot(plain.engine)
    plain.engine.dispose()

    runner = runner_for(engine, 0)
    runner.fold_helper_from, runner.fold_helpers = 1, 2
    runner.rebuild_chunk_size = 4  # 2 x 4 <= 9
    seen = spans(runner)
    assert runner.rebuild() == head
    assert seen == [4, 4, 1]
    assert runner.helped > 0, "the helpers folded"
    assert (runner.chunk_size, runner.last_chunk_size) == (2, 4)
    assert snapshot(runner.engine) == expected

    runner.rebuild_chunk_size = 5  # 2 x 5 > 9: not worth it
    seen = spans(runner)
    assert runner.rebuild() == head
    assert seen == [2, 2, 2, 2, 1]
    assert runner.last_chunk_size == 2

    # Past zero, the plain size, however far behind: 8 behind here, twice 4.
    runner.rebuild_chunk_size = 4
    with runner.engine.begin() as conn:
        conn.execute(tracking.update().values(position=1))
    seen = spans(runner)
    assert runner.catch_up() == head - 1
    assert seen == [2, 2, 2, 2]
    assert snapshot(runner.engine) == expected

    # The cases up to date, the organisation from zero: no helper folds, the plain size.
    seen = spans(runner)
    assert runner.rebuild(["organisation"]) == head
    assert seen == [2, 2, 2, 2, 1]

    # Without helpers (one process decodes every event of a chunk), the plain size.
    runner.fold_helper_from = 0
    seen = spans(runner)
    assert runner.rebuild() == head
    assert seen == [2, 2, 2, 2, 1]
    assert snapshot(runner.engine) == expected

    # A catch-up that fails keeps its configured size for the next one.
    runner.fold_helper_from = 1
    runner.on_chunk = lambda start, last: (_ for _ in ()).throw(RuntimeError("went down"))
    with pytest.raises(RuntimeError, match="went down"):
        runner.rebuild()
    assert (runner.chunk_size, runner.last_chunk_size) == (2, 4)
    assert indexes(runner) >= SECONDARY
    runner.engine.dispose()
