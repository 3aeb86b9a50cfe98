"""`Hazard.trigger_event` and `Hazard._create` make the events (and the new case) that
eventsourcing's own make.

The engine's version sets an event's fields directly instead of going through the library's
generic steps (a tenth of a bulk command's cost). The events, their order of fields and so
their stored bytes must be exactly the library's: the hash chains cover those bytes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing.domain import Aggregate

from adapters.demo import build_district
from loop.hazard import Hazard


def stored(db: Path) -> list[tuple[Any, ...]]:
    """The store's events in order; a sealed tipster's token left out (its nonce is random)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        ).fetchall()
    out = []
    for oid, version, topic, state in rows:
        data = orjson.loads(state)
        if data.get("reporter_sealed"):
            data.pop("reporter")
            state = orjson.dumps(data)
        out.append((oid, version, topic, state))
    return out


def test_a_district_stores_the_same_events_as_with_the_librarys_trigger_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_district(str(tmp_path / "lean.db"), hazards=200)
    monkeypatch.delattr(Hazard, "trigger_event")  # the library's own, inherited
    monkeypatch.delattr(Hazard, "_create")
    assert Hazard.trigger_event is Aggregate.trigger_event
    build_district(str(tmp_path / "library.db"), hazards=200)
    lean, library = stored(tmp_path / "lean.db"), stored(tmp_path / "library.db")
    assert len(lean) > 1000
    assert lean == library
    # Every kind of hazard event went through the lean steps.
    kinds = {topic.rsplit(".", 1)[-1] for _, _, topic, _ in lean}
    assert {"Discovered", "Reported", "Assigned", "Rectified", "Verified", "Closed",
            "Rejected", "Returned", "Reassigned", "Extended", "Parked", "Resumed",
            "VerificationFailed", "Reopened", "Regraded", "Escalated"} <= kinds  # fmt: skip


AT = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
#: A case's `Discovered` event, as `Hazard.discover` gives `_create` its fields.
DISCOVERED: dict[str, Any] = {
    "id": Hazard.create_id("H1"), "timestamp": AT, "at": AT, "actor": "wang",
    "idempotency_key": None, "hazard_id": "H1", "grid": "G1", "category": "fire",
    "grade": "general", "title": "t", "description": None, "location": None, "source": "patrol",
    "reporter": "wang", "reporter_sealed": False, "evidence": [], "fixed_on_spot": False,
    "deadline": {"step": "report", "due": AT, "limit": "1wd", "provisional": False,
                 "policy_version": "1"},
}  # fmt: skip


def made(create: Any) -> tuple[Hazard, Any]:
    """The case `create` makes of DISCOVERED, and its one event (collected)."""
    hazard = create(Hazard, Hazard.Discovered, **DISCOVERED)
    (event,) = hazard.collect_events()
    return hazard, event


def a_case() -> Hazard:
    return made(Hazard._create.__func__)[0]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        lambda kw: kw.pop("note"),  # a field missing
        lambda kw: kw.update(colour="red"),  # a field the event does not have
    ],
)
def test_anything_but_the_events_fields_is_refused_and_changes_nothing(change: Any) -> None:
    hazard = a_case()
    at = AT + timedelta(hours=1)
    kwargs: dict[str, Any] = {
        "timestamp": at, "at": at, "actor": "wang", "idempotency_key": None, "note": None,
        "deadline": {"step": "assign", "due": at, "limit": "1wd", "provisional": False,
                     "policy_version": "1"},
    }  # fmt: skip
    change(kwargs)
    with pytest.raises(TypeError, match="Can't construct event"):
        hazard.trigger_event(Hazard.Reported, **kwargs)
    assert hazard.version == 1
    assert hazard.status.value == "discovered"
    assert hazard.collect_events() == []


def test_only_hazard_events_are_made_this_way() -> None:
    hazard = a_case()
    with pytest.raises(TypeError, match="not a Hazard event"):
        hazard.trigger_event(Aggregate.Event, timestamp=datetime.now(UTC))


def test_a_case_made_the_lean_way_is_the_librarys() -> None:
    lean, lean_event = made(Hazard._create.__func__)  # type: ignore[attr-defined]
    library, library_event = made(Aggregate._create.__func__)  # type: ignore[attr-defined]
    assert type(lean) is type(library) is Hazard
    for ours, theirs in ((lean, library), (lean_event, library_event)):
        assert vars(ours) == vars(theirs)
        assert list(vars(ours)) == list(vars(theirs))  # in the same order


def test_a_case_with_a_field_missing_is_refused() -> None:
    with pytest.raises(TypeError, match="Can't construct event"):
        Hazard._create(Hazard.Discovered, id=Hazard.create_id("H1"), timestamp=AT, at=AT)


def test_a_step_made_the_lean_way_leaves_the_case_as_the_librarys_does() -> None:
    """`trigger_event` sets the library's attributes behind `version` and `modified_on`
    itself: the case after a step is the one the library's own `trigger_event` leaves."""
    at = AT + timedelta(hours=1)
    kwargs: dict[str, Any] = {
        "timestamp": at + timedelta(seconds=5), "at": at, "actor": "wang",
        "idempotency_key": None, "note": None,
        "deadline": {"step": "assign", "due": at, "limit": "1wd", "provisional": False,
                     "policy_version": "1"},
    }  # fmt: skip
    lean, library = a_case(), a_case()
    lean.trigger_event(Hazard.Reported, **kwargs)
    Aggregate.trigger_event(library, Hazard.Reported, **kwargs)
    assert (lean.version, lean.modified_on) == (2, at + timedelta(seconds=5))
    assert vars(lean) == vars(library)
    assert list(vars(lean)) == list(vars(library))
