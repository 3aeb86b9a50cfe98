"""The command path's shortcuts decide exactly as the plain path did (issue #6).

A `discover` no longer reads the store to see whether its id is taken (the insert's primary
key refuses a taken id, and the batch is decided again command by command); batches run with
the cyclic garbage collector paused; aggregates are saved without the library's protocol
checks. These tests pin the verdicts, the stored history and the result's fields.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.bootstrap import Settings, build_engine
from loop.application import Authority, HazardLoop
from loop.commands import parse_command
from loop.errors import HazardAlreadyExists
from tests.conftest import FakeClock
from tests.integration.test_transitions import T0, command


def _history(engine: HazardLoop, hazard_id: str) -> list[tuple[str, int]]:
    return [(type(e).__name__, e.originator_version) for e in engine.history(hazard_id)]


@pytest.fixture
def second(store: str, clock: FakeClock) -> Iterator[HazardLoop]:
    """Another engine on the same store: nothing of the first one's is in its cache."""
    app = build_engine(Settings(db=store), clock=clock)
    yield app
    app.close()


def test_a_taken_id_in_a_batch_is_refused_and_the_rest_applies(
    engine: HazardLoop, second: HazardLoop
) -> None:
    engine.handle(parse_command(command("discover", "OLD", T0)))
    engine.handle(parse_command(command("report", "OLD", T0 + timedelta(hours=1))))
    before = _history(engine, "OLD")
    at = T0 + timedelta(hours=2)
    batch = [
        command("discover", "NEW-1", at),
        command("discover", "OLD", at),  # taken: stored by the other engine
        command("report", "NEW-1", at + timedelta(minutes=1)),
        command("assign", "OLD", at + timedelta(minutes=2)),  # decided on the stored case
        command("discover", "NEW-2", at),
    ]
    results = list(second.handle_many(map(parse_command, batch), batch_size=10))
    assert [r.ok for r in results] == [True, False, True, True, True]
    refused = results[1]
    assert isinstance(refused.error, HazardAlreadyExists)
    assert refused.error.code == "hazard_already_exists"
    assert refused.hazard_id == "OLD"
    assert refused.extra["command"] == "discover"
    assert refused.extra["actor"] == batch[1]["actor"]
    assert "duration_ms" in refused.extra
    assert results[3].event == "Assigned"
    assert results[3].version == 3
    assert _history(second, "OLD") == [*before, ("Assigned", 3)]
    assert _history(second, "NEW-1") == [("Discovered", 1), ("Reported", 2)]
    assert _history(second, "NEW-2") == [("Discovered", 1)]


def test_a_file_applied_twice_records_nothing_the_second_time(
    engine: HazardLoop, second: HazardLoop
) -> None:
    lines = []
    for i in range(30):
        lines.append(command("discover", f"H{i}", T0))
        lines.append(command("report", f"H{i}", T0 + timedelta(hours=1)))
    first = list(engine.handle_many(map(parse_command, lines), batch_size=7))
    assert all(r.ok for r in first)
    head = second.recorder.max_notification_id()
    again = list(second.handle_many(map(parse_command, lines), batch_size=7))
    assert [r.error.code if r.error else None for r in again] == [
        "hazard_already_exists" if line["command"] == "discover" else "invalid_transition"
        for line in lines
    ]
    assert second.recorder.max_notification_id() == head
    # And once more through the engine that wrote them (its cache knows the cases).
    third = list(engine.handle_many(map(parse_command, lines), batch_size=7))
    assert [r.error.code if r.error else None for r in third] == [
        r.error.code if r.error else None for r in again
    ]


def test_one_taken_discover_on_its_own(engine: HazardLoop, second: HazardLoop) -> None:
    engine.handle(parse_command(command("discover", "H", T0)))
    for app in (second, second):  # the second time, the engine reads the store first
        with pytest.raises(HazardAlreadyExists) as info:
            app.handle(parse_command(command("discover", "H", T0)))
        assert info.value.details["hazard_id"] == "H"
    assert _history(engine, "H") == [("Discovered", 1)]


def test_a_caller_expecting_a_version_hears_that_the_id_is_taken(
    engine: HazardLoop, second: HazardLoop
) -> None:
    engine.handle(parse_command(command("discover", "H", T0)))
    with pytest.raises(HazardAlreadyExists):
        second.handle(
            parse_command(command("discover", "H", T0)), authority=Authority(expected_version=0)
        )


def test_the_garbage_collector_is_as_it_was_after_a_batch(engine: HazardLoop) -> None:
    lines = [command("discover", f"H{i}", T0) for i in range(5)]
    assert gc.isenabled()
    assert all(r.ok for r in engine.handle_many(map(parse_command, lines[:2]), batch_size=1))
    assert gc.isenabled()
    gc.disable()
    try:
        assert all(r.ok for r in engine.handle_many(map(parse_command, lines[2:]), batch_size=2))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_bulk_run_keeps_the_collector_paused_and_collects_only_young_objects(
    engine: HazardLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused from the first batch to the run's end (between batches too), its young
    generations collected after a batch that refused a command, never a full pass; on again
    once the run ends or its iterator is closed early."""
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: collected.append(generation) or 0)
    lines = [command("discover", f"H{i}", T0) for i in range(60)]
    lines[10] = lines[40] = command("discover", "H0", T0)  # taken: refused
    assert gc.isenabled()
    run = engine.handle_many(map(parse_command, lines), batch_size=1)
    during = []
    for result in run:
        during.append((result.ok, gc.isenabled()))
    assert during == [(i not in (10, 40), False) for i in range(60)]
    assert collected == [1, 1]  # after batches 11 and 41
    assert gc.isenabled()
    early = engine.handle_many(
        map(parse_command, [command("discover", f"K{i}", T0) for i in range(5)]), batch_size=1
    )
    assert next(early).ok
    assert not gc.isenabled()
    early.close()
    assert gc.isenabled()


def test_a_long_run_collects_young_objects_every_so_many_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loop.gc_pause import PausedForRun

    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: collected.append(generation) or 0)
    with PausedForRun(every=3) as pause:
        for _ in range(7):
            pause.batch_done(refused=0)
        assert collected == [1, 1]  # after batches 3 and 6
        pause.batch_done(refused=2)  # a batch that refused two commands
        pause.batch_done(refused=2)  # one that refused none
        assert collected == [1, 1, 1, 1]  # after the refusals, and after batch 9
    assert gc.isenabled()
