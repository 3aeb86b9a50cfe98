"""Stored events' bytes: what eventsourcing's `JSONTranscoder` writes, written by orjson.

The library's transcoder encodes an event's state with the `json` module, calling back into
Python for each date-time (three or more per event): 18 µs per event here, a sixth of a bulk
command's cost. `FastJSONTranscoder` gives the same bytes — the same separators, the same
non-ASCII text, the same `{"_type_": …, "_data_": …}` objects for registered types — from
orjson, and decodes exactly as the library does. The bytes must be the same: they are what the
hash chains cover and what every other reader of the store (the library's own mapper, older
versions of this engine) decodes. `tests/integration/test_encoding.py` holds that on every
event type and on hostile text.

Where orjson and `json` could differ, orjson is not used:

- orjson writes `uuid.UUID`, `enum.Enum` and floats itself (`json` calls the registered
  transcoding for a UUID, refuses an Enum, and spells some floats differently). Event states
  carry none of them (`tests/integration/test_encoding.py` checks every event class's
  fields), and any object orjson cannot take as `json` would (a non-string key, a lone
  surrogate, a huge integer, a cycle) makes it raise: those states go to the library's
  encoder, which behaves as it always did, error included.
- date-times reach the library's `_encode_obj` and so the registered transcoding
  (`OPT_PASSTHROUGH_DATETIME`), not orjson's own format; dataclasses likewise
  (`OPT_PASSTHROUGH_DATACLASS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
)
from eventsourcing.utils import get_topic

__all__ = ["FastJSONTranscoder", "Row", "known_iso", "to_rows"]

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class FastJSONTranscoder(JSONTranscoder):
    """`JSONTranscoder`, encoding with orjson to the same bytes; decoding is the library's."""

    def __init__(self) -> None:
        super().__init__()
        self._default: Callable[[Any], dict[str, Any]] = self._encode_obj

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        # The library's own date-time transcoding: its object made here, without the two calls
        # `_encode_obj` makes for each of an event's three or more date-times.
        iso = type(self.types.get(datetime)) is DatetimeAsISO
        self._default = self._encode_datetime if iso else self._encode_obj

    def _encode_datetime(self, obj: Any) -> dict[str, Any]:
        if type(obj) is datetime:
            known = _KNOWN_ISO.get(id(obj))
            if known is not None and known[0] is obj:
                return {"_type_": DatetimeAsISO.name, "_data_": known[1]}
            text = obj.isoformat()
            if type(obj.tzinfo) is ZoneInfo:  # a deadline: the same object comes again
                known_iso(obj, text)
            return {"_type_": DatetimeAsISO.name, "_data_": text}
        return self._encode_obj(obj)

    def encode(self, obj: Any) -> bytes:
        if type(obj) is dict:
            try:
                return orjson.dumps(obj, default=self._default, option=_OPTIONS)
            except TypeError:  # orjson.JSONEncodeError: see the module's docstring
                pass
        return super().encode(obj)


#: ISO texts known for date-time objects, by the object's identity (each entry holds its object,
#: so that its id is not another's while the entry is here): a command's `at` as it was given
#: (`loop.commands`), and a deadline's `due` once written (`Policy.deadline` gives the same object
#: to every step starting on the same day). `isoformat` is the largest single cost of encoding
#: an event; a text known is written as it is. At most `_KNOWN_MAX` entries, then it starts again.
_KNOWN_ISO: dict[int, tuple[datetime, str]] = {}
_KNOWN_MAX = 16_384


def known_iso(moment: datetime, text: str) -> None:
    """Say that `moment.isoformat()` is `text`, for the encoder (the caller knows it is)."""
    if len(_KNOWN_ISO) >= _KNOWN_MAX:
        _KNOWN_ISO.clear()
    _KNOWN_ISO[id(moment)] = (moment, text)


#: Per event class: its topic and its class version, as `Mapper.to_stored_event` looks them up.
_CLASSES: dict[type, tuple[str, int]] = {}

#: A stored event as a batch writer is handed it (`loop.application.BatchWriter`): the case id,
#: its version, the topic and the state, as `Mapper.to_stored_event` makes them, the id as the
#: 128-bit number of its UUID (or its text, if it is not a UUID): what `marshal` writes.
Row = tuple[int | str, int, str, bytes]


def to_rows(mapper: Mapper[Any], events: Sequence[Any]) -> list[Row]:
    """The `Row` of each event, in order (a bulk batch's events).

    The library's own steps of `mapper.to_stored_event`, with what depends only on the event's
    class (its topic and class version) looked up once per class, and without a method call
    or a `StoredEvent` per event: when the mapper is the library's `Mapper` without a
    compressor or a cipher. Any other mapper's own method, its stored events made rows.
    """
    if type(mapper) is not Mapper or mapper.compressor is not None or mapper.cipher is not None:
        return [_row(mapper.to_stored_event(e)) for e in events]
    encode = mapper.transcoder.encode
    out: list[Row] = []
    append = out.append
    for event in events:
        cls = type(event)
        known = _CLASSES.get(cls)
        if known is None:
            known = _CLASSES[cls] = (get_topic(cls), getattr(cls, "class_version", 1))
        state = dict(vars(event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if known[1] > 1:
            state["class_version"] = known[1]
        append(
            (
                originator_id.int if type(originator_id) is UUID else str(originator_id),
                originator_version,
                known[0],
                encode(state),
            )
        )
    return out


def _row(stored: StoredEvent) -> Row:
    oid = stored.originator_id
    return (
        oid.int if type(oid) is UUID else str(oid),
        stored.originator_version,
        stored.topic,
        stored.state,
    )
