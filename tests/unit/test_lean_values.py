"""Values the bulk path makes without their classes' generic constructors: each must be the
value the generic way makes, so a change to the class (a new field, a changed rule) fails
here rather than passing unnoticed."""

from __future__ import annotations

import dataclasses
import pickle
import uuid
from datetime import UTC, datetime

from hypothesis import given, strategies as st

from loop.application import Result
from loop.commands import Subject
from loop.hazard import NAMESPACE, hazard_uuid


@given(st.text(max_size=80))
def test_a_hazards_aggregate_id_is_uuid5_of_its_id(hazard_id: str) -> None:
    ours, theirs = hazard_uuid(hazard_id), uuid.uuid5(NAMESPACE, hazard_id)
    assert ours == theirs
    assert (ours.version, ours.variant, ours.is_safe) == (5, uuid.RFC_4122, theirs.is_safe)
    assert hash(ours) == hash(theirs)
    assert str(ours) == str(theirs)
    assert pickle.loads(pickle.dumps(ours)) == theirs


def test_a_hazards_aggregate_id_is_fixed_for_a_known_id() -> None:
    """The namespace and the arithmetic together: ids are in every store, and never change."""
    assert str(hazard_uuid("H-1")) == "52dd1dc6-3796-5de8-acbb-8e2bff31f5a8"


@given(
    hazard_id=st.text(min_size=1, max_size=20),
    event=st.sampled_from(["Discovered", "Reported", "Closed"]),
    version=st.integers(1, 10_000),
    status=st.sampled_from(["reported", "assigned", "closed"]),
    due=st.none() | st.datetimes(timezones=st.just(UTC)),
)
def test_a_succeeded_result_is_the_dataclasss_own(
    hazard_id: str, event: str, version: int, status: str, due: datetime | None
) -> None:
    extra = {"command": "report"}
    ours = Result.succeeded(
        hazard_id, event, version, status, due, Subject("hazard", hazard_id), dict(extra)
    )
    theirs = Result(
        ok=True, hazard_id=hazard_id, event=event, version=version, status=status, due=due,
        extra=dict(extra),
    )  # fmt: skip
    assert ours == theirs
    # Every field, in the dataclass's order: a field added to Result and not here fails.
    assert list(vars(ours)) == [f.name for f in dataclasses.fields(Result)]
    assert vars(ours) == vars(theirs)
    assert ours.to_dict() == theirs.to_dict()


@given(st.sampled_from(["hazard", "grid", "unit", "person"]), st.text(max_size=20))
def test_a_subject_made_by_of_is_the_named_tuples_own(kind: str, ident: str) -> None:
    ours, theirs = Subject.of(kind, ident), Subject(kind, ident)
    assert type(ours) is Subject
    assert ours == theirs
    assert hash(ours) == hash(theirs)
    assert (ours.kind, ours.id) == (kind, ident)
    assert ours.to_dict() == theirs.to_dict()
