"""The projection runner's lean read of the log (`log_reader`) and its row decoder.

On both stores: the rows are those `select_notifications` returns, value for value, for every
start, limit and stop (an empty log, a stop below the start, bounds past the head), and each row
decodes to the event the application's own mapper makes of the same notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import MapperDeserialisationError, Notification

from adapters.bootstrap import build_runner
from loop.application import HazardLoop
from loop.commands import parse_command
from projections.runner import log_reader, reading_mapper, row_decoder
from tests.conftest import SHANGHAI

START = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)


def write_some(app: HazardLoop) -> int:
    """A few cases through the engine, their events interleaved; returns the head position."""
    at = START
    for i, hazard_id in enumerate(("A", "B", "C")):
        at += timedelta(hours=1)
        app.handle(parse_command({
            "command": "discover", "hazard_id": hazard_id, "actor": "wang", "at": at.isoformat(),
            "grid": f"G{i}", "category": "fire", "grade": "general", "title": f"隐患 {hazard_id}",
        }))  # fmt: skip
    for name, extra in (("report", {}), ("assign", {"unit": "U1", "person": "p"})):
        for hazard_id in ("A", "B", "C"):
            at += timedelta(hours=2)
            app.handle(parse_command({"command": name, "hazard_id": hazard_id, "actor": "zhao",
                                      "at": at.isoformat(), **extra}))  # fmt: skip
    return int(app.recorder.max_notification_id() or 0)


def as_rows(notes: Sequence[Notification]) -> list[tuple[Any, ...]]:
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]


def same_values(got: Sequence[tuple[Any, ...]], want: Sequence[tuple[Any, ...]]) -> None:
    assert got == want
    for a, b in zip(got, want, strict=True):
        assert [type(x) for x in a] == [type(x) for x in b]


def test_the_lean_read_is_used_on_both_stores(engine: HazardLoop, store_kind: str) -> None:
    assert getattr(log_reader(engine.recorder), "kind", None) == store_kind
    runner = build_runner(engine)
    try:
        assert getattr(runner.read, "kind", None) == store_kind
        write_some(engine)
        assert runner.catch_up() == 9
        assert runner.catch_up() == 0
    finally:
        runner.engine.dispose()


def test_an_empty_log(engine: HazardLoop) -> None:
    read = log_reader(engine.recorder)
    for start, limit, stop in ((1, 10, None), (1, 1, 1), (5, 10, 2), (1, 100, 0)):
        want = as_rows(engine.recorder.select_notifications(start=start, limit=limit, stop=stop))
        assert want == []
        assert read(start, limit, stop) == []


def test_the_same_rows_as_select_notifications(engine: HazardLoop) -> None:
    head = write_some(engine)
    assert head == 9
    read = log_reader(engine.recorder)
    starts = (1, 2, 4, head - 1, head, head + 1, head + 5)
    limits = (1, 2, 3, head, 1000)
    for start in starts:
        stops = (None, start - 1, start, start + 1, start + 3, head - 1, head, head + 10, 0)
        for limit in limits:
            for stop in stops:
                want = as_rows(
                    engine.recorder.select_notifications(start=start, limit=limit, stop=stop)
                )
                got = read(start, limit, stop)
                same_values(got, want)
                # The bounds, spelled out: start <= position <= stop, ascending, at most limit.
                top = head if stop is None else min(stop, head)
                assert [row[0] for row in got] == list(range(start, top + 1))[:limit]


def test_each_row_decodes_as_the_mapper_decodes(engine: HazardLoop) -> None:
    head = write_some(engine)
    decode = row_decoder(reading_mapper(engine))
    rows = log_reader(engine.recorder)(1, 1000, None)
    notes = engine.recorder.select_notifications(start=1, limit=1000)
    assert len(rows) == len(notes) == head
    for row, note in zip(rows, notes, strict=True):
        got = decode(row[1], row[2], row[3], row[4])
        want = engine.mapper.to_domain_event(note)
        assert type(got) is type(want)
        assert got.__dict__ == want.__dict__
        assert {k: type(v) for k, v in got.__dict__.items()} == {
            k: type(v) for k, v in want.__dict__.items()
        }


def test_a_row_that_does_not_decode_fails_as_the_mapper_does(engine: HazardLoop) -> None:
    write_some(engine)
    position, oid, version, topic, _ = log_reader(engine.recorder)(1, 1, None)[0]
    decode = row_decoder(reading_mapper(engine))
    with pytest.raises(MapperDeserialisationError, match="Failed to deserialise"):
        decode(oid, version, topic, b"{not json")
    assert position == 1


def test_a_recorder_that_reads_its_own_way_is_read_through_select_notifications(
    engine: HazardLoop,
) -> None:
    write_some(engine)
    recorder = engine.recorder
    base = type(recorder)
    calls: list[tuple[Any, ...]] = []

    class Filtering(base):  # type: ignore[valid-type, misc]
        def select_notifications(self, start: Any, limit: int, stop: Any = None, topics: Any = (),
                                 *, inclusive_of_start: bool = True) -> Any:  # fmt: skip
            calls.append((start, limit, stop))
            notes = super().select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
            return [n for n in notes if n.originator_version == 1]

    recorder.__class__ = Filtering
    try:
        read = log_reader(recorder)
        assert getattr(read, "kind", None) == "select_notifications"
        rows = read(1, 100, None)
        assert calls == [(1, 100, None)]
        assert [row[2] for row in rows] == [1, 1, 1]
    finally:
        recorder.__class__ = base
