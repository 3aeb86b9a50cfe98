"""Stored events are the bytes eventsourcing's own `JSONTranscoder` writes (loop.encoding).

The engine encodes with orjson; the hash chains cover these bytes and every other reader of the
store decodes them, so each stored event must be exactly what the library would have written.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import types
import typing
import uuid
from dataclasses import astuple
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    StoredEvent,
    UUIDAsHex,
)
from hypothesis import example, given, strategies as st

from adapters.bootstrap import Settings, build_engine
from adapters.demo import build_district
from loop import hazard, organisation
from loop.encoding import FastJSONTranscoder, to_rows


def library() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


def fast() -> FastJSONTranscoder:
    transcoder = FastJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


def event_classes() -> list[type[Aggregate.Event]]:
    found: list[type[Aggregate.Event]] = []
    for module in (hazard, organisation):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Aggregate):
                found += [
                    v for v in vars(value).values()
                    if isinstance(v, type) and issubclass(v, Aggregate.Event)
                ]  # fmt: skip
    return found


class TestTheEngineWritesTheLibrarysBytes:
    def test_the_engine_uses_the_fast_encoder(self, tmp_path: Path) -> None:
        app = build_engine(Settings(db=str(tmp_path / "s.db")))
        try:
            assert type(app.mapper.transcoder) is FastJSONTranscoder
        finally:
            app.close()

    def test_every_stored_event_of_a_district_is_what_the_library_writes(
        self, tmp_path: Path
    ) -> None:
        db = str(tmp_path / "district.db")
        build_district(db, hazards=200)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT topic, state FROM stored_events").fetchall()
        lib = library()
        topics = set()
        for topic, state in rows:
            assert lib.encode(lib.decode(state)) == state, topic
            topics.add(topic.rsplit(".", 1)[-1])
        # Every kind of event the loop records was among them (organisation ones included).
        assert {"Discovered", "Reported", "Assigned", "Rectified", "Verified", "Closed",
                "Rejected", "Returned", "Reassigned", "Extended", "Parked", "Resumed",
                "VerificationFailed", "Reopened", "Regraded", "Escalated"} <= topics  # fmt: skip
        assert len(rows) > 1000

    def test_no_event_field_has_a_type_orjson_writes_otherwise(self) -> None:
        """orjson writes UUIDs, Enums and floats itself, unlike `json` + the transcodings; no
        event may carry one (a new field of such a type fails here first)."""
        allowed = {str, int, bool, datetime, type(None), Any, list, dict}
        classes = event_classes()
        assert len(classes) > 20
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for name in (f.name for f in dataclasses.fields(cls)):
                if name in {"originator_id", "originator_version"}:
                    continue  # not in the stored state: the mapper takes them out
                hint = hints[name]
                for part in _parts(hint):
                    assert part in allowed, f"{cls.__qualname__}.{name}: {part}"


def _parts(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin is None:
        return [hint]
    out = [list if origin is list else dict if origin is dict else origin]
    if origin in (typing.Union, types.UnionType):
        out = []
    for arg in typing.get_args(hint):
        out += _parts(arg)
    return out


texts = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=40
)  # every code point: controls, quotes, backslashes, U+2028, astral planes, lone surrogates
moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
)  # fmt: skip
leaves = st.one_of(texts, st.none(), st.booleans(), st.integers(-(2**70), 2**70), moments)
states = st.dictionaries(
    texts,
    st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
        max_leaves=12,
    ),
    max_size=8,
)


@given(state=states)
def test_any_state_of_those_types_encodes_to_the_same_bytes_or_the_same_error(
    state: dict[str, Any],
) -> None:
    try:
        expected: bytes | type[BaseException] = library().encode(state)
    except Exception as exc:
        expected = type(exc)
    try:
        got: bytes | type[BaseException] = fast().encode(state)
    except Exception as exc:
        got = type(exc)
    assert got == expected


@pytest.mark.parametrize(
    "state",
    [
        {1: "a non-string key"},
        {"big": 2**80},
        {"lone": "\ud800"},
        {"nested": {"deep": [{"at": datetime(2026, 9, 28, 9, 30, tzinfo=UTC)}]}},
        {"ctl": "".join(map(chr, range(0x20))) + '"\\\x7f\u2028\u2029😀'},
    ],
)
def test_what_orjson_refuses_goes_to_the_library(state: dict[Any, Any]) -> None:
    try:
        expected: bytes | str = library().encode(state)
    except UnicodeEncodeError as exc:
        expected = type(exc).__name__
    try:
        got: bytes | str = fast().encode(state)
    except UnicodeEncodeError as exc:
        got = type(exc).__name__
    assert got == expected


class _DatetimeAsEpoch(DatetimeAsISO):
    """Another transcoding of date-times, registered in place of the library's."""

    name = "datetime_epoch"

    def encode(self, obj: datetime) -> str:
        return str(obj.timestamp())


def test_date_times_use_whichever_transcoding_is_registered_for_them() -> None:
    """The fast encoder writes the library's date-time object itself only while the library's
    own `DatetimeAsISO` is the one registered; another takes its place as in the library."""
    state = {"at": datetime(2026, 9, 1, 9, 30, tzinfo=timezone(timedelta(hours=8))), "n": 1}
    assert fast().encode(state) == library().encode(state)
    assert b'"_type_":"datetime_iso"' in fast().encode(state)
    ours, theirs = fast(), library()
    ours.register(_DatetimeAsEpoch())
    theirs.register(_DatetimeAsEpoch())
    assert ours.encode(state) == theirs.encode(state)
    assert b'"_type_":"datetime_epoch"' in ours.encode(state)


def test_a_batch_is_encoded_as_the_mapper_encodes_each_event(tmp_path: Path) -> None:
    """`to_rows` (a bulk batch's encoding) gives, event for event, what the application's own
    mapper gives: every event of a district, each class at least once."""
    db = str(tmp_path / "district.db")
    build_district(db, hazards=60)
    app = build_engine(Settings(db=db))
    try:
        notes = app.recorder.select_notifications(start=1, limit=100_000)
        events = [app.mapper.to_domain_event(n) for n in notes]
        assert len({type(e) for e in events}) >= 10

        def row(stored: StoredEvent) -> tuple[Any, ...]:
            assert isinstance(stored.originator_id, uuid.UUID)
            return (stored.originator_id.int, *astuple(stored)[1:])

        assert to_rows(app.mapper, events) == [row(app.mapper.to_stored_event(e)) for e in events]
        # A mapper that is not the library's own (a subclass) is asked itself.
        asked: list[Any] = []

        class Counting(type(app.mapper)):  # type: ignore[misc]
            def to_stored_event(self, domain_event: Any) -> Any:
                asked.append(domain_event)
                return super().to_stored_event(domain_event)

        counting = Counting(app.mapper.transcoder)
        assert to_rows(counting, events[:5]) == [
            row(app.mapper.to_stored_event(e)) for e in events[:5]
        ]
        assert asked == events[:5]
    finally:
        app.close()


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30)),
    offset_minutes=st.sampled_from([0, 480, -300, 330, 345, -720, 840]),
    style=st.sampled_from(["iso", "Z", "z", "t", "space", "-00:00", "zeros", "short", "nanos"]),
)
@example(moment=datetime(2026, 9, 1, 9, 30), offset_minutes=0, style="Z")
@example(moment=datetime(2026, 9, 1, 9, 30), offset_minutes=0, style="-00:00")
@example(moment=datetime(2026, 9, 1, 9, 30), offset_minutes=480, style="zeros")
@example(moment=datetime(2026, 9, 1, 9, 30, 0, 500_000), offset_minutes=480, style="short")
@example(moment=datetime(2026, 9, 1, 9, 30, 0, 123_456), offset_minutes=480, style="nanos")
@example(moment=datetime(2026, 9, 1, 9, 30, 0, 123_456), offset_minutes=480, style="t")
@example(moment=datetime(2026, 9, 1, 9, 30, 0, 123_456), offset_minutes=-300, style="iso")
def test_a_date_time_given_as_text_is_written_as_the_library_writes_it(
    moment: datetime, offset_minutes: int, style: str
) -> None:
    """A command's `at` given as `isoformat` writes it is known to the encoder as given
    (`known_iso`) and written so; given any other way, it is formatted again. Either way the
    bytes are the library's."""
    from loop.commands import _rfc3339
    from loop.encoding import _KNOWN_ISO

    zone = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=zone)
    text = aware.isoformat()
    if style == "Z" and offset_minutes == 0:
        text = text[:-6] + "Z"
    elif style == "z" and offset_minutes == 0:
        text = text[:-6] + "z"
    elif style == "t":
        text = text[:10] + "t" + text[11:]
    elif style == "space":
        text = text[:10] + " " + text[11:]
    elif style == "-00:00" and offset_minutes == 0:
        text = text[:-6] + "-00:00"
    elif style == "zeros" and aware.microsecond == 0:
        text = text[:19] + ".000000" + text[19:]
    elif style == "short" and aware.microsecond % 100_000 == 0 and aware.microsecond:
        text = text[:19] + f".{aware.microsecond // 100_000}" + text[26:]
    elif style == "nanos":
        text = text[:19] + f".{aware.microsecond:06d}123" + text[-6:]
    parsed = _rfc3339(text)
    assert parsed == aware
    state = {"at": parsed}
    assert fast().encode(state) == library().encode(state)
    known = _KNOWN_ISO.get(id(parsed))
    assert (known is not None and known[0] is parsed) == (text == parsed.isoformat())
