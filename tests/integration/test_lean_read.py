"""The projection runner's lean read of the log (`log_reader`) and its row decoder.

On both stores: the rows are those `select_notifications` returns, value for value, for every
start, limit and stop (an empty log, a stop below the start, bounds past the head), and each row
decodes to the event the application's own mapper makes of the same notification.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import MapperDeserialisationError, Notification

from adapters.bootstrap import build_runner
from loop.application import HazardLoop
from loop.commands import parse_command
from projections.helper import case_part
from projections.runner import log_reader, read_chunk, reading_mapper, row_decoder
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


def test_a_chunk_holds_what_a_full_read_holds(engine: HazardLoop) -> None:
    """`read_chunk` (SQLite and PostgreSQL: counted and filtered by the database; any other
    recorder: a full read filtered here): the count and last position of the full read, only
    the rows `wanted` takes, each as the full read has it, its counts by topic, and counts of
    any part of it."""
    head = write_some(engine)
    read = log_reader(engine.recorder)
    assert callable(getattr(read, "chunk", None))  # the database's count, not a full read
    for wanted in (lambda t: t.endswith("Discovered"), lambda t: False, lambda t: True):
        for start, limit, stop in ((1, 1000, None), (2, 4, None), (3, 100, 7), (head, 5, None),
                                   (head + 1, 5, None), (4, 10, 3)):  # fmt: skip
            full = read(start, limit, stop)
            chunk = read_chunk(read, start, limit, stop, wanted)
            assert chunk.count == len(full)
            assert chunk.last == (full[-1][0] if full else 0)
            same_values(chunk.rows, [r for r in full if wanted(r[3])])
            assert chunk.topics() == dict(Counter(r[3] for r in full))
            for first in range(start, start + len(full)):
                assert chunk.count_from(first) == sum(1 for r in full if r[0] >= first)


def test_the_reader_reads_a_part_of_the_cases_as_case_part_says(engine: HazardLoop) -> None:
    """`part` computes `case_part` in SQL (SQLite from the stored text, PostgreSQL from the
    `uuid`'s bytes): for each k, the parts are disjoint, together the full read, and each row
    lies in the part of its case's id."""
    at = START
    for i in range(64):  # 64 cases: random ids, so every part of every k below gets some
        at += timedelta(minutes=1)
        engine.handle(parse_command({
            "command": "discover", "hazard_id": f"P{i}", "actor": "wang", "at": at.isoformat(),
            "grid": "G1", "category": "fire", "grade": "general", "title": "t",
        }))  # fmt: skip
    read = log_reader(engine.recorder)
    assert getattr(read, "parts", None) is True
    head = int(engine.recorder.max_notification_id() or 0)
    full = read(1, 1000, None)
    assert read.count(1, head) == head == len(full)  # type: ignore[attr-defined]
    assert read.count(3, head - 2) == head - 4  # type: ignore[attr-defined]
    for k in (2, 3, 5):
        parts = [read.part(1, 1000, head, i, k) for i in range(k)]  # type: ignore[attr-defined]
        for i, rows in enumerate(parts):
            assert rows, f"part {i} of {k} is empty"
            assert all(case_part(r[1], k) == i for r in rows)
        same_values(sorted((r for p in parts for r in p), key=lambda r: r[0]), full)
        # The limit and the bounds, as a full read's.
        few = read.part(3, 2, head - 1, 0, k)  # type: ignore[attr-defined]
        same_values(few, [r for r in full[2 : head - 1] if case_part(r[1], k) == 0][:2])


def test_parts_are_read_by_sql_only_where_ids_are_uuids(tmp_path: Any) -> None:
    """A store whose ids are free text (eventsourcing's ORIGINATOR_ID_TYPE=text) has no parts
    by id digits: its helpers read the whole chunk and split it in Python."""
    from eventsourcing.application import Application

    kinds = {}
    for kind in ("uuid", "text"):
        app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(tmp_path / f"{kind}.db"),
                               "ORIGINATOR_ID_TYPE": kind})  # fmt: skip
        kinds[kind] = getattr(log_reader(app.recorder), "parts", None)
        app.close()
    assert kinds == {"uuid": True, "text": False}
