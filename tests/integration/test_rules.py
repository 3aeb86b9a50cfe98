"""The rules the engine enforces, each with its own error code, and idempotent submissions.

Every refusal is checked to leave the stored history exactly as it was.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from loop.application import HazardLoop
from loop.commands import parse_command
from loop.errors import (
    ApproverIsRequester,
    AtBeforePrevious,
    AtInFuture,
    DueNotAfterStart,
    DueRequired,
    ExtensionNeedsHigherApprover,
    ExtensionNotLater,
    HazardAlreadyExists,
    HazardLoopError,
    HazardNotFound,
    IdempotencyKeyReused,
    InvalidCommand,
    InvalidDuplicate,
    UnknownCommand,
    VerifierIsRectifier,
)
from loop.lifecycle import Status
from tests.conftest import FakeClock
from tests.integration.test_transitions import T0, bring_to, command


def refused(
    engine: HazardLoop, hazard_id: str, cmd: dict[str, Any], error: type[HazardLoopError]
) -> HazardLoopError:
    """Apply `cmd`, expect `error`, and check the case's history did not change."""
    before = len(engine.history(hazard_id)) if engine.exists(hazard_id) else 0
    with pytest.raises(error) as info:
        engine.handle(parse_command(cmd))
    after = len(engine.history(hazard_id)) if engine.exists(hazard_id) else 0
    assert after == before
    assert info.value.code == error.code
    return info.value


class TestRules:
    """Each rule refuses with its own code and records nothing."""

    def test_the_rectifier_cannot_pass_their_own_verification(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.RECTIFIED, "H")
        refused(engine, "H", command("verify", "H", at, actor="unit-zhao"), VerifierIsRectifier)

    def test_the_rectifier_may_record_a_failed_verification(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.RECTIFIED, "H")
        result = engine.handle(
            parse_command(command("verify", "H", at, actor="unit-zhao", passed=False))
        )
        assert result.event == "VerificationFailed"

    def test_who_fixed_it_on_the_spot_cannot_pass_its_verification(
        self, engine: HazardLoop
    ) -> None:
        engine.handle(parse_command(command("discover", "H", T0, fixed_on_spot=True)))
        refused(engine, "H", command("verify", "H", T0), VerifierIsRectifier)

    def test_an_extension_is_not_approved_by_its_requester(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H")
        refused(
            engine, "H", command("extend", "H", at, approved_by="unit-zhao"), ApproverIsRequester
        )

    def test_a_second_extension_of_a_step_needs_another_higher_approver(
        self, engine: HazardLoop
    ) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H")

        def extend(approver: str, days: int) -> dict[str, Any]:
            due = engine.get_hazard("H").due
            assert due is not None
            return command("extend", "H", at, approved_by=approver,
                           due=(due + timedelta(days=days)).isoformat())  # fmt: skip

        engine.handle(parse_command(extend("lead-a", 5)))
        error = refused(engine, "H", extend("lead-a", 5), ExtensionNeedsHigherApprover)
        assert error.details["earlier_approvers"] == ["lead-a"]
        assert error.details["approved_by"] == "lead-a"
        assert engine.handle(parse_command(extend("chief-b", 5))).event == "Extended"
        for approver in ("lead-a", "chief-b"):  # nor the second's approver for a third
            refused(engine, "H", extend(approver, 5), ExtensionNeedsHigherApprover)
        assert engine.get_hazard("H").extension_approvers == ["lead-a", "chief-b"]

    def test_a_new_step_starts_its_extensions_afresh(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H")
        due = engine.get_hazard("H").due
        assert due is not None
        engine.handle(parse_command(command(
            "extend", "H", at, approved_by="lead-a", due=(due + timedelta(days=5)).isoformat()
        )))  # fmt: skip
        engine.handle(parse_command(command("rectify", "H", at)))
        engine.handle(parse_command(command("verify", "H", at, passed=False)))  # rework
        hazard = engine.get_hazard("H")
        assert (hazard.extension_count, hazard.extension_approvers) == (1, [])
        assert hazard.due is not None
        again = command("extend", "H", at, approved_by="lead-a",
                        due=(hazard.due + timedelta(days=5)).isoformat())  # fmt: skip
        assert engine.handle(parse_command(again)).event == "Extended"

    def test_parking_is_not_approved_by_its_requester(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H")
        refused(engine, "H", command("park", "H", at, approved_by="centre-li"), ApproverIsRequester)

    def test_an_extension_must_move_the_deadline_later(self, engine: HazardLoop) -> None:
        at = bring_to(engine, Status.ASSIGNED, "H")
        due = engine.get_hazard("H").due
        assert due is not None
        cmd = command("extend", "H", at, due=(due - timedelta(hours=1)).isoformat())
        refused(engine, "H", cmd, ExtensionNotLater)

    def test_a_hazard_id_is_discovered_once(self, engine: HazardLoop) -> None:
        bring_to(engine, Status.DISCOVERED, "H")
        refused(engine, "H", command("discover", "H", T0), HazardAlreadyExists)

    def test_an_unknown_hazard_id_is_named(self, engine: HazardLoop) -> None:
        error = refused(engine, "nope", command("report", "nope", T0), HazardNotFound)
        assert error.details["hazard_id"] == "nope"

    def test_business_time_cannot_run_backwards_on_a_case(self, engine: HazardLoop) -> None:
        bring_to(engine, Status.REPORTED, "H")
        refused(engine, "H", command("assign", "H", T0 - timedelta(days=1)), AtBeforePrevious)

    def test_business_time_cannot_lie_ahead_of_the_engine_clock(
        self, engine: HazardLoop, clock: FakeClock
    ) -> None:
        refused(engine, "H", command("discover", "H", clock.now + timedelta(hours=1)), AtInFuture)

    def test_a_major_hazard_needs_a_plan_deadline_to_be_assigned(self, engine: HazardLoop) -> None:
        engine.handle(parse_command(command("discover", "M", T0, grade="major")))
        engine.handle(parse_command(command("report", "M", T0 + timedelta(minutes=30))))
        error = refused(engine, "M", command("assign", "M", T0 + timedelta(hours=1)), DueRequired)
        assert error.details["step"] == "rectify"

    def test_a_given_deadline_must_lie_after_the_step_starts(self, engine: HazardLoop) -> None:
        bring_to(engine, Status.REPORTED, "H")
        at = T0 + timedelta(hours=3)
        cmd = command("assign", "H", at, due=(at - timedelta(minutes=1)).isoformat())
        refused(engine, "H", cmd, DueNotAfterStart)

    def test_a_duplicate_must_name_another_known_case(self, engine: HazardLoop) -> None:
        bring_to(engine, Status.DISCOVERED, "H")
        at = T0 + timedelta(hours=1)
        refused(engine, "H", command("reject", "H", at, duplicate_of="H"), InvalidDuplicate)
        refused(engine, "H", command("reject", "H", at, duplicate_of="ghost"), InvalidDuplicate)


class TestIdempotency:
    """The same idempotency key returns the first result and records nothing new."""

    def test_a_retried_submission_is_recorded_once(self, engine: HazardLoop) -> None:
        cmd = command("discover", "H", T0, idempotency_key="pda-7:upload-1")
        first = engine.handle(parse_command(cmd))
        for _ in range(3):
            again = engine.handle(parse_command(cmd))
            assert again.replayed
            assert (again.event, again.version, again.status, again.due) == (
                first.event,
                first.version,
                first.status,
                first.due,
            )
        assert len(engine.history("H")) == 1

    def test_a_retry_that_spells_out_a_default_is_the_same_submission(
        self, engine: HazardLoop
    ) -> None:
        cmd = command("discover", "H", T0, idempotency_key="k")
        engine.handle(parse_command(cmd))
        again = engine.handle(parse_command({**cmd, "fixed_on_spot": False, "source": "patrol"}))
        assert again.replayed

    def test_a_key_reused_for_a_different_command_is_refused(self, engine: HazardLoop) -> None:
        engine.handle(parse_command(command("discover", "H", T0, idempotency_key="k")))
        cmd = command("discover", "H2", T0, idempotency_key="k")
        refused(engine, "H2", cmd, IdempotencyKeyReused)

    def test_a_retry_inside_one_batch_is_recorded_once(self, engine: HazardLoop) -> None:
        cmd = parse_command(command("discover", "H", T0, idempotency_key="k"))
        results = list(engine.handle_many([cmd, cmd, cmd]))
        assert [r.replayed for r in results] == [False, True, True]
        assert len(engine.history("H")) == 1

    def test_the_key_survives_a_restart_of_the_engine(
        self, engine: HazardLoop, store: str, clock: FakeClock
    ) -> None:
        from adapters.bootstrap import Settings, build_engine

        cmd = command("discover", "H", T0, idempotency_key="k")
        engine.handle(parse_command(cmd))
        other = build_engine(Settings(db=store), clock=clock)
        try:
            assert other.handle(parse_command(cmd)).replayed
        finally:
            other.close()
        assert len(engine.history("H")) == 1


class TestMalformedCommands:
    """Found by schemathesis through the HTTP API: each once crashed or overflowed the engine."""

    def test_a_command_name_that_is_not_a_string_is_an_unknown_command(self) -> None:
        for name in ({}, {"nested": 1}, [], 7):
            with pytest.raises(UnknownCommand) as info:
                parse_command({"command": name, "hazard_id": "H"})
            assert info.value.code == "unknown_command"
            assert repr(name) in str(info.value.details["command"])

    @pytest.mark.parametrize(
        "moment",
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59+08:00",
            "1969-12-31T23:59:59Z",
            "2200-01-01T00:00:00+08:00",
        ],
    )
    def test_a_date_time_outside_the_years_a_case_can_be_in_is_refused_by_name(
        self, engine: HazardLoop, moment: str
    ) -> None:
        with pytest.raises(InvalidCommand) as info:
            parse_command(command("discover", "H", T0) | {"at": moment})
        assert [f["field"] for f in info.value.details["fields"]] == ["at"]
        assert "outside the years" in str(info.value)
        assert not engine.exists("H")

    def test_a_due_date_far_in_the_future_is_refused_not_overflowed(
        self, engine: HazardLoop
    ) -> None:
        at = bring_to(engine, Status.REPORTED, "H")
        cmd = command("assign", "H", at)
        with pytest.raises(InvalidCommand):
            parse_command(cmd | {"due": "9999-12-31T23:59:59Z"})
        before = len(engine.history("H"))
        engine.handle(parse_command(cmd | {"due": "2199-06-30T00:00:00+08:00"}))
        assert len(engine.history("H")) == before + 1
