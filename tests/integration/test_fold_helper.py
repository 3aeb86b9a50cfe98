"""Catch-ups that fold cases in helper processes (projections/helper.py) write exactly what one
process writes, and fail as a whole: a helper that raises or dies leaves nothing committed."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.demo import AS_OF, build_district
from loop.application import HazardLoop
from projections import helper as helper_module, runner as runner_module
from projections.cases import Batch, CasesProjection
from projections.helper import FoldHelperError, can_fork
from projections.runner import ProjectionRunner, _PostgresReader, _SQLiteReader
from projections.tables import grids, ledger, post_tenures, step_segments, steps, tracking
from tests.conftest import StoreFactory

pytestmark = pytest.mark.skipif(not can_fork(), reason="fold helpers need Linux and 2+ CPUs")

TABLES = (ledger, steps, step_segments, grids, post_tenures, tracking)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table and the tracking positions, ordered by key."""
    out = {}
    with engine.connect() as conn:
        for table in TABLES:
            keys = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*keys))]
    return out


@pytest.fixture(scope="module")
def district(
    store_factory: StoreFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HazardLoop, dict[str, list[tuple[Any, ...]]]]]:
    """A demo district (grids, posts, 300 hazards) and its views as one process builds them."""
    db = store_factory(tmp_path_factory.mktemp("fold"), "district")
    build_district(db, hazards=300, seed=7)
    app = build_engine(Settings(db=db), clock=lambda: AS_OF)
    runner = build_runner(app)
    runner.fold_helper_from = 0
    runner.rebuild()
    expected = snapshot(runner.engine)
    runner.engine.dispose()
    yield app, expected
    app.close()


def helped_runner(app: HazardLoop, helpers: int, **options: Any) -> ProjectionRunner:
    runner = build_runner(app)
    runner.fold_helper_from, runner.fold_helpers = 1, helpers
    for name, value in options.items():
        setattr(runner, name, value)
    return runner


def count_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The part number of each helper started from now on (in the order started)."""
    started: list[int] = []
    start = helper_module.FoldHelper.start

    def counted(self: helper_module.FoldHelper, inherited: Any = ()) -> None:
        start(self, inherited)
        started.append(self.part[0])

    monkeypatch.setattr(helper_module.FoldHelper, "start", counted)
    return started


def hazard_events(app: HazardLoop) -> int:
    notes = app.recorder.select_notifications(1, app.recorder.max_notification_id() or 0)
    return sum(1 for n in notes if n.topic.startswith("loop.hazard:Hazard."))


def empty_views(runner: ProjectionRunner) -> None:
    """Drop every view row and position, as `rebuild` does, without catching up."""
    with runner.engine.begin() as conn:
        for table in TABLES:
            if table is not steps:  # a view of `step_segments`
                conn.execute(table.delete())
    for p in runner.projections:
        p.reset()


@pytest.mark.parametrize(
    ("helpers", "slice_size", "chunk_size"),
    [(1, 10_000, 100_000), (2, 97, 100_000), (3, 250, 700), (2, None, 400)],
)
def test_helpers_write_what_one_process_writes(
    district: tuple[HazardLoop, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    helpers: int,
    slice_size: int | None,
    chunk_size: int,
) -> None:
    """One or more helpers, one slice or many, one chunk or many (the next read and folded
    while one is written; whole chunks when `slice_size` is None): the same views, and the
    runner's own process folded nothing (its fold is never called)."""
    app, expected = district
    started = count_starts(monkeypatch)
    folded_here: list[int] = []
    fold = CasesProjection.fold

    def fold_spy(self: CasesProjection, items: Any, time: Any) -> Any:
        folded_here.append(os.getpid())  # in a helper this appends to the helper's copy
        return fold(self, items, time)

    monkeypatch.setattr(CasesProjection, "fold", fold_spy)
    runner = helped_runner(app, helpers, fold_slice=slice_size, chunk_size=chunk_size)
    head = runner.head()
    assert runner.rebuild() == head
    assert snapshot(runner.engine) == expected
    assert sorted(started) == list(range(helpers)), "one start per helper, for the whole run"
    assert folded_here == []
    # Each hazard event was folded by exactly one helper (the parts do not overlap).
    assert runner.helped == hazard_events(app)
    assert runner.positions() == {"cases": head, "organisation": head}
    runner.engine.dispose()


def test_a_small_catch_up_after_a_helped_one_folds_the_cases_again(
    district: tuple[HazardLoop, dict[str, Any]],
) -> None:
    """The cases a helper folded are not the runner's: it forgets its own, and a later catch-up
    in its own process folds a case again from the event store before its next event."""
    app, expected = district
    runner = helped_runner(app, 2, fold_slice=500)
    head = runner.head()
    last_cases = head - 40  # catch up to here with helpers, the rest in this process
    empty_views(runner)
    runner.catch_up(until=last_cases)
    cases = runner.projections[0]
    assert isinstance(cases, CasesProjection)
    assert len(cases.cache) == 0
    runner.fold_helper_from = 1_000  # 40 events behind: no helper
    assert runner.catch_up() == 40
    assert cases.refolded > 0
    assert snapshot(runner.engine) == expected
    runner.engine.dispose()


def test_one_runner_in_one_process_then_with_helpers_then_in_one_process_again(
    district: tuple[HazardLoop, dict[str, Any]],
) -> None:
    """The runner's own cases are older than the views after its helpers folded on: it must
    forget them, or the next event folded onto one would find the case versions behind."""
    app, expected = district
    runner = helped_runner(app, 2, fold_slice=300, chunk_size=400)
    head = runner.head()
    empty_views(runner)
    runner.fold_helper_from = 0
    runner.catch_up(until=head // 3)
    cases = runner.projections[0]
    assert isinstance(cases, CasesProjection)
    assert len(cases.cache) > 0
    runner.fold_helper_from = 1
    runner.catch_up(until=2 * head // 3)
    assert runner.helped > 0
    runner.fold_helper_from = 0
    assert runner.catch_up() == head - 2 * head // 3
    assert snapshot(runner.engine) == expected
    runner.engine.dispose()


def test_helpers_that_cannot_open_the_store_leave_the_fold_to_the_runner(
    district: tuple[HazardLoop, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that cannot start (here: building its application fails; e.g. a server that
    refuses another connection) says why; the runner folds in its own process instead."""
    app, expected = district
    runner = helped_runner(app, 2)
    empty_views(runner)

    def refuse(self: HazardLoop, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("too many connections")

    monkeypatch.setattr(HazardLoop, "__init__", refuse)  # the helpers build theirs after this
    with capture_logs() as logs:
        assert runner.catch_up() == runner.head()
    assert runner.helped == 0
    assert snapshot(runner.engine) == expected
    (warning,) = [
        e for e in logs if e["event"] == "fold helpers unavailable, folding in one process"
    ]
    assert "too many connections" in warning["error"]
    runner.engine.dispose()


@pytest.mark.parametrize("failure", ["raises", "killed"])
@pytest.mark.parametrize(("chunk_size", "slice_size"), [(100_000, 200), (400, 100), (400, None)])
def test_a_failing_helper_leaves_nothing_committed(
    district: tuple[HazardLoop, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
    chunk_size: int,
    slice_size: int | None,
) -> None:
    """A helper that raises (its error is named, after the rows it sent) or is killed mid-chunk,
    with one chunk or with the next one read ahead and queued, in slices or whole chunks (their
    batches awaited before the transaction): the chunk is rolled back, and the next catch-up
    ends as one process builds the views."""
    app, expected = district
    runner = helped_runner(app, 2, fold_slice=slice_size, chunk_size=chunk_size)
    empty_views(runner)
    ours = os.getpid()
    fold = CasesProjection.fold
    calls: list[int] = []
    fail_at = 3 if slice_size else 1  # whole chunks: the first, with the second queued

    def failing(self: CasesProjection, items: Any, time: Any) -> Any:
        calls.append(1)
        if os.getpid() != ours and len(calls) == fail_at:
            if failure == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"boom in slice {fail_at}")
        return fold(self, items, time)

    monkeypatch.setattr(CasesProjection, "fold", failing)
    expected_error = (
        f"RuntimeError: boom in slice {fail_at}" if failure == "raises" else "exit code -9"
    )
    with pytest.raises(FoldHelperError, match=expected_error):
        runner.catch_up()
    assert runner.positions() == {"cases": 0, "organisation": 0}
    assert snapshot(runner.engine)["ledger"] == []
    assert calls == []  # the runner's process folded nothing
    monkeypatch.setattr(CasesProjection, "fold", fold)
    assert runner.catch_up() == runner.head()
    assert snapshot(runner.engine) == expected
    runner.engine.dispose()


def test_no_helper_below_the_threshold_or_for_a_store_in_memory(
    district: tuple[HazardLoop, dict[str, Any]], tmp_path: Path
) -> None:
    app, _ = district
    runner = build_runner(app, settings=Settings(fold_helper_from=10**9))
    assert runner._start_helper(None) is None
    runner = build_runner(app, settings=Settings(fold_helper_from=0))
    assert runner._start_helper(None) is None
    memory = HazardLoop(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                             "SQLITE_DBNAME": ":memory:"})  # fmt: skip
    runner = build_runner(memory, runner.engine, settings=Settings(fold_helper_from=1))
    assert runner._start_helper(None) is None
    runner.engine.dispose()


def test_another_runner_moving_the_positions_mid_catch_up_restarts_the_helpers(
    district: tuple[HazardLoop, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another runner takes the chunk the helpers were folding (and the one read ahead): the
    chunk is refused (compare-and-set on the positions), the helpers are stopped and started
    again from the positions the other runner left, and the views end as one process builds
    them."""
    app, expected = district
    starts = count_starts(monkeypatch)
    runner = helped_runner(app, 2, chunk_size=400)
    empty_views(runner)
    other = build_runner(app, settings=Settings(fold_helper_from=0))
    moved: list[int] = []

    def on_chunk(first: int, last: int) -> None:
        if first > 1 and not moved:  # the second chunk, read ahead: another runner takes it
            moved.append(other.catch_up(until=last + 200))

    runner.on_chunk = on_chunk
    runner.catch_up()
    assert moved
    assert moved[0] > 0
    assert len(starts) == 4, "two helpers, started again once"
    assert snapshot(runner.engine) == expected
    runner.engine.dispose()
    other.engine.dispose()


def test_whole_chunks_from_two_chunks_behind_and_slices_under_that(
    district: tuple[HazardLoop, dict[str, Any]],
) -> None:
    app, _ = district
    runner = helped_runner(app, 1)
    empty_views(runner)
    head = runner.head()
    for chunk_size, slice_size in ((head // 2, head // 2), (20_000, 10_000), (100_000, 10_000)):
        runner.chunk_size = chunk_size
        helpers = runner._start_helper(None)
        assert helpers is not None
        try:
            assert [h.slice_size for h in helpers.helpers] == [slice_size]
        finally:
            runner._stop_helper(helpers, kill=True)
    runner.engine.dispose()


def test_a_helper_that_counts_the_chunk_otherwise_fails_the_chunk(
    district: tuple[HazardLoop, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helpers read only their part of the chunk, and the database counts the whole of it
    for them: a count that is not the runner's stops the chunk, nothing committed."""
    app, expected = district
    runner = helped_runner(app, 2)
    reader = type(runner.read)
    assert reader in (_SQLiteReader, _PostgresReader)
    empty_views(runner)
    count = reader.count
    monkeypatch.setattr(reader, "count", lambda self, a, b: count(self, a, b) + 1)
    fails_then_heals(
        runner, expected, r"read \d+ events at positions 1\.\.\d+, the runner",
        lambda: monkeypatch.setattr(reader, "count", count),
    )  # fmt: skip


def fails_then_heals(runner: ProjectionRunner, expected: Any, error: str, heal: Any) -> None:
    """The catch-up fails with `error`, nothing committed; healed, it ends as one process."""
    with pytest.raises(FoldHelperError, match=error):
        runner.catch_up()
    assert runner.positions() == {"cases": 0, "organisation": 0}
    heal()
    assert runner.catch_up() == runner.head()
    assert snapshot(runner.engine) == expected
    runner.engine.dispose()


def test_messages_travel_by_marshal_and_date_times_by_pickle() -> None:
    """Rows of text and numbers go by marshal; a message marshal cannot write (a date-time, as
    rows for PostgreSQL hold) by pickle; both arrive as sent (a tuple subclass as a tuple)."""
    ours, theirs = multiprocessing.Pipe()
    rows = ("rows", (["H1", 1, None, True, 2.5, "2026-09-01 01:00:00.000000"], []))
    moment = ("rows", ([datetime(2026, 9, 1, 1, 0)], ()))  # naive, as for PostgreSQL
    for message, kind in ((rows, b"m"), (moment, b"p"), (("done", 3, 0, 2, 1, 9), b"m")):
        helper_module._put(theirs, message)
        assert ours.poll(5)
        data = ours.recv_bytes()
        assert data[:1] == kind
        helper_module._put(theirs, message)
        assert helper_module._get(ours) == message
    batch = Batch([], [["s"]], [], [("l",)], [])
    helper_module._put(theirs, ("rows", tuple(batch)))
    assert Batch._make(helper_module._get(ours)[1]) == batch


def test_whole_chunk_batches_are_awaited_before_the_chunk_takes_the_write_lock(
    district: tuple[HazardLoop, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In whole chunks, every helper's batch is in before the runner claims the chunk's
    positions (the first write of its transaction, which takes SQLite's write lock): the lock
    is held while rows are written, not while they are folded. In slices, the runner writes
    each as it comes, inside the transaction (that is their point)."""
    app, expected = district
    order: list[tuple[str, int]] = []
    fold, advance = runner_module._Helpers.fold, ProjectionRunner._advance

    def folding(self: runner_module._Helpers, first: int, last: int, count: int) -> Any:
        batches = fold(self, first, last, count)
        yield from batches
        order.append(("folded", last))

    def claiming(conn: Any, name: str, pos: int, last: int) -> None:
        if name == "cases":
            order.append(("claimed", last))
        advance(conn, name, pos, last)

    monkeypatch.setattr(runner_module._Helpers, "fold", folding)
    monkeypatch.setattr(ProjectionRunner, "_advance", staticmethod(claiming))
    for slice_size, whole in ((None, True), (100, False)):
        order.clear()
        runner = helped_runner(app, 2, fold_slice=slice_size, chunk_size=400)
        assert runner.rebuild() == runner.head()
        assert snapshot(runner.engine) == expected
        lasts = [last for kind, last in order if kind == "claimed"]
        assert len(lasts) > 2
        for last in lasts:
            before = order.index(("folded", last)) < order.index(("claimed", last))
            assert before is whole, (slice_size, order)
        runner.engine.dispose()


@pytest.mark.parametrize("slice_size", [None, 100])
def test_helpers_that_fold_fewer_events_than_the_chunk_holds_fail_it(
    district: tuple[HazardLoop, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    slice_size: int | None,
) -> None:
    """A part that misses a case (a partition bug) would leave its events out of the views
    for good: the runner holds the helpers' folded count to SQLite's count of the chunk's
    events by topic, and fails the chunk, nothing committed (whole chunks and slices)."""
    app, expected = district
    runner = helped_runner(app, 2, fold_slice=slice_size, chunk_size=400)
    reader = type(runner.read)
    assert reader in (_SQLiteReader, _PostgresReader)
    empty_views(runner)
    part = reader.part

    def lossy(self: Any, start: int, limit: int, stop: int, i: int, k: int) -> Any:
        rows = part(self, start, limit, stop, i, k)
        return [r for r in rows if r[1].int % 7]  # a seventh of the cases, in no part

    monkeypatch.setattr(reader, "part", lossy)
    fails_then_heals(
        runner, expected, r"folded \d+ events of positions 1\.\.400, which",
        lambda: monkeypatch.setattr(reader, "part", part),
    )  # fmt: skip
