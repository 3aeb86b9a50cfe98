"""The pull feed: every stored event, in commit order, as JSON-ready dicts (docs/subscriptions.md).

Positions are the event log's notification ids: dense, in commit order, never reused, on SQLite
(rowids, one writer at a time) and on PostgreSQL (numbered under the events' table lock, held
until commit), so `after` + `limit` pages through the whole log without gaps and a reader
resumes from the last position it processed, never skipping an event that committed late. Each
item carries the event's log hash from the hash chain, so a subscriber can check what it
received against a published head (docs/audit.md).

Nothing is ever decrypted here: a public tip's reporter stays the sealed token it was stored as.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, Notification, PersistenceError

from adapters.store import CHAIN_TABLE, from_micros
from adapters.storesql import select_rows
from loop.application import HazardLoop
from loop.errors import InvalidCommand, StoreError
from projections.runner import reading_mapper

__all__ = [
    "MAX_LIMIT",
    "FeedPage",
    "event_type",
    "feed_head",
    "feed_page",
    "known_event_types",
    "read_feed",
]

#: The most items one read returns.
MAX_LIMIT = 1000

#: Fields every event has, lifted out of `data` to the top of the item.
_TOP_FIELDS = frozenset(
    {"originator_id", "originator_version", "originator_topic", "timestamp", "at", "actor"}
)

#: The aggregate class named in a topic, and the kind of subject it is.
_KIND_OF_CLASS = {"Hazard": "hazard", "Grid": "grid", "Unit": "unit", "Person": "person"}


def event_type(topic: str) -> str:
    """The public name of a stored topic: `loop.hazard:Hazard.Assigned` -> `Hazard.Assigned`."""
    return topic.rsplit(":", 1)[-1]


def known_event_types() -> list[str]:
    """Every event type the engine records (what `--event` filters may name)."""
    from eventsourcing.domain import Aggregate

    from loop.hazard import Hazard
    from loop.organisation import Grid, Person, Unit

    names = []
    for cls in (Hazard, Grid, Unit, Person):
        for attr, value in vars(cls).items():
            if (
                isinstance(value, type)
                and issubclass(value, Aggregate.Event)
                and attr not in ("Event", "Created")  # the base classes, never stored as such
                and not attr.startswith("_")
            ):
                names.append(f"{cls.__name__}.{attr}")
    return sorted(names)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _jsonable(obj: Any) -> Any:
    """The value as plain JSON types (datetimes as RFC 3339 strings, UUIDs as hex strings)."""
    return orjson.loads(orjson.dumps(obj, default=_json_default))


@dataclass
class _Subject:
    """What the feed says about an aggregate: its kind, client id, and a hazard's grid and grade."""

    kind: str
    ident: str
    version: int
    grid: str | None = None
    grade: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.ident}
        if self.kind == "hazard":
            out["grid"] = self.grid
            out["grade"] = self.grade
        return out


class _Reader:
    """Reads pages of the log for one application; remembers each subject's id, grid and grade.

    Only the first event of an aggregate names its client id (and a hazard's grid); a later
    event's subject is found by following the aggregate's events in order, or, when reading from
    the middle of the log, by folding its earlier events once. Thread-safe (one lock).
    """

    cache_size = 100_000

    def __init__(self, app: HazardLoop) -> None:
        self.app = app
        self.mapper: Mapper[Any] = reading_mapper(app)
        self.subjects: OrderedDict[UUID | str, _Subject] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, after: int, limit: int) -> list[dict[str, Any]]:
        # One read at a time per application: reads take milliseconds, and threads sharing an
        # application (the HTTP server, the webhook workers) never exhaust its connection pool.
        with self.lock:
            try:
                notes = self.app.recorder.select_notifications(start=after + 1, limit=limit)
                if not notes:
                    return []
                chain = self._chain(notes[0].id, notes[-1].id)
                items = []
                for note in notes:
                    event = self.mapper.to_domain_event(note)
                    subject = self._subject(note, event)
                    items.append(self._item(note, event, subject, chain.get(note.id)))
            except PersistenceError as exc:
                raise StoreError(f"cannot read the event log: {exc}") from exc
        return items

    def _chain(self, first: int, last: int) -> dict[int, tuple[int, bytes]]:
        rows = select_rows(
            self.app,
            f"SELECT position, recorded_at, log_hash FROM {CHAIN_TABLE} "
            "WHERE position BETWEEN :first AND :last",
            first=first,
            last=last,
        )
        return {int(r[0]): (int(r[1]), bytes(r[2])) for r in rows}

    def _subject(self, note: Notification, event: DomainEventProtocol[Any]) -> _Subject:
        oid = note.originator_id
        version = note.originator_version
        known = self.subjects.get(oid)
        if version == 1:
            known = None
            subject = self._start(note.topic, event)
        elif known is not None and known.version == version - 1:
            subject = known
            self._follow(subject, event)
        else:
            subject = self._fold(oid, version, note.topic)
        subject.version = version
        self.subjects[oid] = subject
        self.subjects.move_to_end(oid)
        while len(self.subjects) > self.cache_size:
            self.subjects.popitem(last=False)
        return subject

    @staticmethod
    def _start(topic: str, event: DomainEventProtocol[Any]) -> _Subject:
        cls_name = event_type(topic).split(".", 1)[0]
        kind = _KIND_OF_CLASS.get(cls_name, cls_name.lower())
        fields = vars(event)
        ident = fields.get("hazard_id") if kind == "hazard" else fields.get("code")
        return _Subject(
            kind,
            str(ident if ident is not None else fields["originator_id"]),
            1,
            grid=fields.get("grid") if kind == "hazard" else None,
            grade=fields.get("grade") if kind == "hazard" else None,
        )

    @staticmethod
    def _follow(subject: _Subject, event: DomainEventProtocol[Any]) -> None:
        if subject.kind == "hazard" and type(event).__name__ == "Regraded":
            subject.grade = vars(event)["grade"]

    def _fold(self, oid: UUID | str, version: int, topic: str) -> _Subject:
        """The subject as of `version`, from the aggregate's stored events."""
        stored = self.app.recorder.select_events(oid, lte=version)
        subject: _Subject | None = None
        for s in stored:
            event = self.mapper.to_domain_event(s)
            if subject is None:
                subject = self._start(s.topic, event)
            else:
                self._follow(subject, event)
        if subject is None:  # the first event is missing: say what we can
            cls_name = event_type(topic).split(".", 1)[0]
            subject = _Subject(_KIND_OF_CLASS.get(cls_name, cls_name.lower()), str(oid), version)
        return subject

    @staticmethod
    def _item(
        note: Notification,
        event: DomainEventProtocol[Any],
        subject: _Subject,
        chained: tuple[int, bytes] | None,
    ) -> dict[str, Any]:
        fields = vars(event)
        data = {k: v for k, v in fields.items() if k not in _TOP_FIELDS}
        top = _jsonable(
            {
                "at": fields.get("at"),
                "timestamp": fields.get("timestamp"),
                "recorded_at": from_micros(chained[0]) if chained else None,
                "actor": fields.get("actor"),
                "data": data,
            }
        )
        return {
            "position": note.id,
            "type": event_type(note.topic),
            "subject": subject.to_dict(),
            "version": note.originator_version,
            "at": top["at"],
            "recorded_at": top["recorded_at"],
            "timestamp": top["timestamp"],
            "actor": top["actor"],
            "data": top["data"],
            "log_hash": chained[1].hex() if chained else None,
        }


_READERS: weakref.WeakKeyDictionary[HazardLoop, _Reader] = weakref.WeakKeyDictionary()
_READERS_LOCK = threading.Lock()


def _reader(app: HazardLoop) -> _Reader:
    with _READERS_LOCK:
        reader = _READERS.get(app)
        if reader is None:
            reader = _READERS[app] = _Reader(app)
        return reader


def _check(after: int, limit: int) -> None:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidCommand(
            f"`after` must be a position, 0 or more (got {after!r})", field="after", value=after
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidCommand(
            f"`limit` must be from 1 to {MAX_LIMIT} (got {limit!r})", field="limit", value=limit
        )


def read_feed(app: HazardLoop, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` events after position `after`, in commit order (positions contiguous).

    Each item: `position`, `type` (e.g. "Hazard.Assigned"), `subject` (`kind`, `id`, and for a
    hazard its `grid` and `grade` as of this event), `version`, `at` (business time),
    `recorded_at` (record time on the hash chain), `timestamp` (the event's own record time),
    `actor`, `data` (the event's other fields, as stored; a sealed reporter stays sealed) and
    `log_hash` (hex). Resume with `after` = the last item's `position`. `InvalidCommand` for a
    negative `after` or a `limit` outside 1..MAX_LIMIT; `StoreError` if the store cannot be read.
    """
    _check(after, limit)
    return _reader(app).read(after, limit)


def feed_head(app: HazardLoop) -> int:
    """The position of the newest event (0 for an empty log)."""
    try:
        return int(app.recorder.max_notification_id() or 0)
    except PersistenceError as exc:
        raise StoreError(f"cannot read the event log: {exc}") from exc


@dataclass(frozen=True)
class FeedPage:
    """A page with its envelope: the items, where to resume, and the log's head when read."""

    events: Sequence[dict[str, Any]]
    next_after: int
    head: int

    def to_dict(self) -> dict[str, Any]:
        return {"events": list(self.events), "next_after": self.next_after, "head": self.head}


def feed_page(app: HazardLoop, after: int, limit: int) -> FeedPage:
    """`read_feed` with its envelope: `next_after` (pass it as the next `after`) and `head`."""
    _check(after, limit)
    head = feed_head(app)
    events = read_feed(app, after, limit)
    if not events:
        return FeedPage([], after, head)
    last = int(events[-1]["position"])
    return FeedPage(events, last, max(head, last))  # events committed since the head was read
