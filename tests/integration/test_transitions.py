"""Every cell of the lifecycle: each command in each status follows the table or is refused.

Runs against a real SQLite store; a refused command must leave the stored history untouched.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from loop.application import HazardLoop
from loop.commands import COMMAND_NAMES, parse_command
from loop.errors import CaseClosed, InvalidTransition
from loop.lifecycle import BEFORE_PARKING, UNCHANGED, Status, find_transition
from tests.conftest import SHANGHAI

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=SHANGHAI)

#: Commands that bring a fresh general hazard into each status.
PATHS: dict[Status, list[str]] = {
    Status.DISCOVERED: ["discover"],
    Status.REPORTED: ["discover", "report"],
    Status.ASSIGNED: ["discover", "report", "assign"],
    Status.RECTIFIED: ["discover", "report", "assign", "rectify"],
    Status.VERIFIED: ["discover", "report", "assign", "rectify", "verify"],
    Status.CLOSED: ["discover", "report", "assign", "rectify", "verify", "close"],
    Status.REJECTED: ["discover", "reject"],
    Status.PARKED: ["discover", "report", "assign", "park"],
}


def command(name: str, hazard_id: str, at: datetime, **over: Any) -> dict[str, Any]:
    """A valid command of each kind, with actors that satisfy the side rules."""
    base: dict[str, Any] = {"command": name, "hazard_id": hazard_id, "at": at.isoformat()}
    fields: dict[str, dict[str, Any]] = {
        "discover": {
            "actor": "grid-member-wang",
            "grid": "D01-S01-C01",
            "category": "fire",
            "grade": "general",
            "title": "blocked fire exit",
        },
        "report": {"actor": "grid-member-wang"},
        "assign": {"actor": "centre-li", "unit": "fire-brigade", "person": "zhao"},
        "rectify": {"actor": "unit-zhao", "note": "exit cleared"},
        "verify": {"actor": "grid-member-wang", "passed": True},
        "close": {"actor": "centre-li"},
        "reject": {"actor": "centre-li", "reason": "not a hazard"},
        "return": {"actor": "unit-zhao", "reason": "not ours"},
        "reassign": {"actor": "centre-li", "unit": "housing", "person": "qian", "reason": "x"},
        "extend": {
            "actor": "unit-zhao",
            "due": (at + timedelta(days=90)).isoformat(),
            "reason": "parts on order",
            "approved_by": "leader-sun",
        },
        "park": {"actor": "centre-li", "reason": "winter works", "approved_by": "leader-sun"},
        "resume": {"actor": "centre-li"},
        "reopen": {"actor": "centre-li", "reason": "recurred"},
        "regrade": {"actor": "centre-li", "grade": "major", "reason": "needs a stop"},
        "escalate": {"actor": "centre-li", "level": "reminder"},
    }
    return {**base, **fields[name], **over}


def bring_to(engine: HazardLoop, status: Status, hazard_id: str) -> datetime:
    at = T0
    for name in PATHS[status]:
        engine.handle(parse_command(command(name, hazard_id, at)))
        at += timedelta(hours=1)
    assert engine.get_hazard(hazard_id).status == status
    return at


CELLS = [(status, name) for status in Status for name in COMMAND_NAMES if name != "discover"]


class TestEveryCell:
    """Each (status, command) pair does what the table says, and nothing else."""

    @pytest.mark.parametrize(("status", "name"), CELLS, ids=[f"{s}-{n}" for s, n in CELLS])
    def test_command_in_status_follows_the_table(
        self, engine: HazardLoop, status: Status, name: str
    ) -> None:
        hazard_id = f"H-{status}-{name}"
        at = bring_to(engine, status, hazard_id)
        before = engine.get_hazard(hazard_id)
        condition = "passed=true" if name == "verify" else ""
        row = find_transition(status, name, condition)
        cmd = parse_command(command(name, hazard_id, at))
        if row is None:
            expected = (
                CaseClosed if status in (Status.CLOSED, Status.REJECTED) else InvalidTransition
            )
            with pytest.raises(expected) as info:
                engine.handle(cmd)
            assert info.value.details["status"] == status.value
            after = engine.get_hazard(hazard_id)
            assert after.version == before.version
            assert len(engine.history(hazard_id)) == before.version
            return
        result = engine.handle(cmd)
        assert result.event == row.event
        after = engine.get_hazard(hazard_id)
        assert after.version == before.version + 1
        if row.to == UNCHANGED:
            assert after.status == status
        elif row.to == BEFORE_PARKING:
            assert after.status == before.parked_from
        else:
            assert after.status == row.to


class TestSidePaths:
    """The loop's side paths keep what the domain says they keep."""

    def test_failed_verification_goes_back_to_rectification_with_rework_counted(
        self, engine: HazardLoop
    ) -> None:
        at = bring_to(engine, Status.RECTIFIED, "H1")
        due = at + timedelta(days=20)
        result = engine.handle(
            parse_command(command("verify", "H1", at, passed=False, due=due.isoformat()))
        )
        hazard = engine.get_hazard("H1")
        assert (result.event, hazard.status, hazard.rework_count) == (
            "VerificationFailed",
            Status.ASSIGNED,
            1,
        )
        assert hazard.due == due

    def test_a_discovery_fixed_on_the_spot_goes_straight_to_verification(
        self, engine: HazardLoop
    ) -> None:
        engine.handle(parse_command(command("discover", "H2", T0, fixed_on_spot=True)))
        hazard = engine.get_hazard("H2")
        assert (hazard.status, hazard.step) == (Status.RECTIFIED, "verify")

    def test_a_failed_check_of_an_on_the_spot_fix_goes_to_the_centre_to_assign(
        self, engine: HazardLoop
    ) -> None:
        engine.handle(parse_command(command("discover", "H6", T0, fixed_on_spot=True)))
        assert engine.get_hazard("H6").holder == "command_centre"  # the fixer cannot pass it
        at = T0 + timedelta(hours=2)
        due = (at + timedelta(days=9)).isoformat()
        with pytest.raises(InvalidTransition):
            engine.handle(
                parse_command(command("verify", "H6", at, actor="x", passed=False, due=due))
            )
        engine.handle(parse_command(command("verify", "H6", at, actor="x", passed=False)))
        hazard = engine.get_hazard("H6")
        assert (hazard.status, hazard.step, hazard.holder, hazard.rework_count) == (
            Status.REPORTED, "assign", "command_centre", 1,
        )  # fmt: skip
        engine.handle(parse_command(command("assign", "H6", at + timedelta(hours=1))))
        assert engine.get_hazard("H6").unit == "fire-brigade"

    def test_an_extension_keeps_the_original_deadline_on_record(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H3")
        original = engine.get_hazard("H3").due
        engine.handle(parse_command(command("extend", "H3", at)))
        hazard = engine.get_hazard("H3")
        assert hazard.deadline is not None
        assert hazard.deadline["original_due"] == original
        assert hazard.due == at + timedelta(days=90)
        assert [d["event"] for d in hazard.deadlines][-2:] == ["Assigned", "Extended"]

    def test_a_parked_case_resumes_to_its_status_with_the_parked_time_added(
        self, engine: HazardLoop
    ) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H4")
        due_before = engine.get_hazard("H4").due
        assert due_before is not None
        engine.handle(parse_command(command("park", "H4", at)))
        assert engine.get_hazard("H4").due is None  # the clock stops
        engine.handle(parse_command(command("resume", "H4", at + timedelta(days=14))))
        hazard = engine.get_hazard("H4")
        assert hazard.status == Status.ASSIGNED
        assert hazard.due is not None
        assert hazard.due > due_before

    def test_a_case_parked_for_more_than_ten_years_resumes(self, engine: HazardLoop) -> None:
        start = datetime(2010, 1, 4, 9, 0, tzinfo=SHANGHAI)
        for i, name in enumerate(["discover", "report", "assign"]):
            engine.handle(parse_command(command(name, "OLD", start + timedelta(hours=i))))
        assigned = engine.get_hazard("OLD").due
        assert assigned is not None
        engine.handle(parse_command(command("park", "OLD", start + timedelta(days=1))))
        result = engine.handle(parse_command(command("resume", "OLD", T0)))
        hazard = engine.get_hazard("OLD")
        assert (result.event, hazard.status, hazard.version) == ("Resumed", Status.ASSIGNED, 5)
        assert hazard.due is not None
        assert hazard.due > T0
        assert hazard.deadline is not None
        assert hazard.deadline["limit"] == "10wd"

    def test_a_rejected_duplicate_keeps_the_case_it_duplicates(self, engine: HazardLoop) -> None:
        bring_to(engine, Status.DISCOVERED, "first")
        bring_to(engine, Status.DISCOVERED, "second")
        engine.handle(
            parse_command(
                command("reject", "second", T0 + timedelta(hours=2), duplicate_of="first")
            )
        )
        assert engine.get_hazard("second").duplicate_of == "first"

    def test_reopening_a_closed_case_sends_it_back_for_assignment(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.CLOSED, "H5")
        engine.handle(parse_command(command("reopen", "H5", at)))
        hazard = engine.get_hazard("H5")
        assert (hazard.status, hazard.step, hazard.reopen_count) == (Status.REPORTED, "assign", 1)
