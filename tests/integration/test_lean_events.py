"""`Hazard.trigger_event` and `Hazard._create` make the events (and the new case) that
eventsourcing's own make.

The engine's version sets an event's fields directly instead of going through the library's
generic steps (a tenth of a bulk command's cost). The events, their order of fields and so
their stored bytes must be exactly the library's: the hash chains cover those bytes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
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


def a_case() -> Hazard:
    at = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
    hazard = Hazard._create(
        Hazard.Discovered, id=Hazard.create_id("H1"), timestamp=at, at=at, actor="wang",
        idempotency_key=None, hazard_id="H1", grid="G1", category="fire", grade="general",
        title="t", description=None, location=None, source="patrol", reporter="wang",
        reporter_sealed=False, evidence=[], fixed_on_spot=False,
        deadline={"step": "report", "due": at, "limit": "1wd", "provisional": False,
                  "policy_version": "1"},
    )  # fmt: skip
    hazard.collect_events()
    return hazard


@pytest.mark.parametrize(
    "change",
    [
        lambda kw: kw.pop("note"),  # a field missing
        lambda kw: kw.update(colour="red"),  # a field the event does not have
    ],
)
def test_anything_but_the_events_fields_is_refused_and_changes_nothing(change: Any) -> None:
    hazard = a_case()
    at = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)
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
    lean = a_case()
    at = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
    library = Aggregate._create.__func__(  # type: ignore[attr-defined]
        Hazard, Hazard.Discovered, id=Hazard.create_id("H1"), timestamp=at, at=at, actor="wang",
        idempotency_key=None, hazard_id="H1", grid="G1", category="fire", grade="general",
        title="t", description=None, location=None, source="patrol", reporter="wang",
        reporter_sealed=False, evidence=[], fixed_on_spot=False,
        deadline={"step": "report", "due": at, "limit": "1wd", "provisional": False,
                  "policy_version": "1"},
    )  # fmt: skip
    (event,) = library.collect_events()
    assert vars(lean) == vars(library)
    assert list(vars(lean)) == list(vars(library))
    relean = a_case_event()
    assert vars(relean) == vars(event)
    assert list(vars(relean)) == list(vars(event))


def a_case_event() -> Any:
    at = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
    hazard = Hazard._create(
        Hazard.Discovered, id=Hazard.create_id("H1"), timestamp=at, at=at, actor="wang",
        idempotency_key=None, hazard_id="H1", grid="G1", category="fire", grade="general",
        title="t", description=None, location=None, source="patrol", reporter="wang",
        reporter_sealed=False, evidence=[], fixed_on_spot=False,
        deadline={"step": "report", "due": at, "limit": "1wd", "provisional": False,
                  "policy_version": "1"},
    )  # fmt: skip
    (event,) = hazard.collect_events()
    return event


def test_a_case_with_a_field_missing_is_refused() -> None:
    at = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
    with pytest.raises(TypeError, match="Can't construct event"):
        Hazard._create(Hazard.Discovered, id=Hazard.create_id("H1"), timestamp=at, at=at)
