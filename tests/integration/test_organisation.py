"""The organisation, event-sourced: grids, units, people and who held each post, when.

On a real SQLite store: every command accepted, every refusal with its code and nothing written,
state rebuilt from the stored events, the projection's grids and tenures, and accountability for
a late step charged to whoever held the post at its deadline, not to today's holder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.bootstrap import Settings, build_engine, build_runner
from loop.application import HazardLoop, Result
from loop.commands import POSTS, CommandBase, Subject, parse_command
from loop.errors import (
    AlreadyPostHolder,
    AtBeforePrevious,
    AtInFuture,
    BadParent,
    GridExists,
    HazardLoopError,
    IdempotencyKeyReused,
    InvalidCommand,
    NotPostHolder,
    PersonExists,
    UnitExists,
    UnknownGrid,
    UnknownPerson,
    UnknownUnit,
)
from loop.organisation import Grid, grid_uuid
from projections.model import POSTS as REPORT_POSTS
from projections.reports import accountability_report, overdue_report, parse_period
from projections.runner import ProjectionRunner
from projections.tables import grids, post_tenures
from tests.conftest import SHANGHAI, FakeClock, store_env

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=SHANGHAI)
#: B takes A's post (directly_responsible of the community grid) at this moment.
HANDOVER = datetime(2026, 9, 8, 9, 0, tzinfo=SHANGHAI)
GRID = "D01-S01-C01"


def org(command: str, at: datetime = T0, /, **fields: Any) -> dict[str, Any]:
    return {"command": command, "actor": "registrar", "at": at.isoformat(), **fields}


def setup_commands() -> list[dict[str, Any]]:
    """A district, a street and a community grid, a unit, four people, a chain in the community."""
    return [
        org("establish_grid", grid="D01", name="江滨区直管网格", level="district"),
        org("establish_grid", grid="D01-S01", name="滨江街道", level="street", parent="D01"),
        org("establish_grid", grid=GRID, name="望江社区", level="community", parent="D01-S01"),
        org("register_unit", unit="U-FIRE", name="区消防救援大队", grid="D01", kind="department"),
        org("register_person", person="A", name="王建国", grid=GRID, role="网格员",
            phone="+86 138 0000 0001"),
        org("register_person", person="B", name="李秀英", grid=GRID, role="网格员"),
        org("register_person", person="M", name="张志强", grid=GRID),
        org("register_person", person="Z", name="赵伟", unit="U-FIRE"),
        org("appoint", grid=GRID, post="directly_responsible", person="A"),
        org("appoint", grid=GRID, post="grid_manager", person="M", note="社区书记"),
    ]  # fmt: skip


def apply(engine: HazardLoop, commands: list[dict[str, Any]]) -> list[Result]:
    results = list(engine.handle_many(parse_command(c) for c in commands))
    assert all(r.ok for r in results), [r.to_dict() for r in results if not r.ok]
    return results


def event_count(engine: HazardLoop) -> int:
    return int(engine.recorder.max_notification_id() or 0)


@pytest.fixture
def organised(engine: HazardLoop) -> HazardLoop:
    apply(engine, setup_commands())
    return engine


@pytest.fixture
def runner(engine: HazardLoop) -> ProjectionRunner:
    return build_runner(engine)


class TestCommands:
    """Each organisation command is accepted, names its subject, and records one event."""

    def test_the_setup_is_accepted_with_subjects_events_and_versions(
        self, engine: HazardLoop
    ) -> None:
        results = apply(engine, setup_commands())
        got = [(r.subject, r.event, r.version) for r in results]
        assert got == [
            (Subject("grid", "D01"), "Established", 1),
            (Subject("grid", "D01-S01"), "Established", 1),
            (Subject("grid", GRID), "Established", 1),
            (Subject("unit", "U-FIRE"), "Registered", 1),
            (Subject("person", "A"), "Registered", 1),
            (Subject("person", "B"), "Registered", 1),
            (Subject("person", "M"), "Registered", 1),
            (Subject("person", "Z"), "Registered", 1),
            (Subject("grid", GRID), "Appointed", 2),
            (Subject("grid", GRID), "Appointed", 3),
        ]
        assert event_count(engine) == len(results)
        assert all(r.hazard_id is None for r in results)

    def test_an_organisation_result_has_a_subject_and_no_hazard_fields(
        self, organised: HazardLoop
    ) -> None:
        result = organised.handle(
            parse_command(org("appoint", HANDOVER, grid=GRID, post="in_charge", person="B"))
        )
        assert result.to_dict(line=3) == {
            "ok": True,
            "line": 3,
            "subject": {"kind": "grid", "id": GRID},
            "event": "Appointed",
            "version": 4,
        }

    def test_a_hazard_result_keeps_its_shape(self, organised: HazardLoop) -> None:
        result = organised.handle(parse_command(discover("H1", T0)))
        assert result.subject == Subject("hazard", "H1")
        assert list(result.to_dict()) == ["ok", "hazard_id", "event", "version", "status", "due"]

    def test_the_grid_unit_and_person_hold_what_was_registered(self, organised: HazardLoop) -> None:
        grid = organised.get_grid(GRID)
        assert (grid.code, grid.name, grid.level, grid.parent) == (
            GRID, "望江社区", "community", "D01-S01"
        )  # fmt: skip
        assert grid.holders_at(T0) == {"directly_responsible": "A", "grid_manager": "M"}
        assert grid.holder("in_charge") is None
        unit = organised.get_unit("U-FIRE")
        assert (unit.name, unit.grid, unit.kind) == ("区消防救援大队", "D01", "department")
        person = organised.get_person("A")
        assert person.to_state()["person"] == "A"
        assert (person.name, person.grid, person.unit, person.phone, person.role) == (
            "王建国", GRID, None, "+86 138 0000 0001", "网格员"
        )  # fmt: skip
        assert organised.get_person("Z").unit == "U-FIRE"

    def test_appointing_over_a_holder_ends_their_tenure_and_records_whom_it_replaces(
        self, organised: HazardLoop
    ) -> None:
        organised.handle(
            parse_command(org("appoint", HANDOVER, grid=GRID, post="directly_responsible",
                              person="B"))
        )  # fmt: skip
        grid = organised.get_grid(GRID)
        assert grid.version == 4
        appointed = list(organised.events.get(grid_uuid(GRID)))[-1]
        assert isinstance(appointed, Grid.Appointed)
        assert (appointed.post, appointed.person, appointed.replaces) == (
            "directly_responsible", "B", "A"
        )  # fmt: skip
        assert appointed.at == HANDOVER
        assert appointed.actor == "registrar"
        assert grid.holder("directly_responsible") == "B"
        assert grid.holders_at(HANDOVER - timedelta(seconds=1))["directly_responsible"] == "A"
        assert grid.holders_at(HANDOVER)["directly_responsible"] == "B"
        assert [
            (t["person"], t["from_at"], t["to_at"])
            for t in grid.tenures
            if t["post"] == "directly_responsible"
        ] == [("A", T0, HANDOVER), ("B", HANDOVER, None)]

    def test_relieving_the_holder_leaves_the_post_vacant(self, organised: HazardLoop) -> None:
        result = organised.handle(
            parse_command(org("relieve", HANDOVER, grid=GRID, post="grid_manager", person="M",
                              note="调任"))
        )  # fmt: skip
        assert (result.event, result.version) == ("Relieved", 4)
        grid = organised.get_grid(GRID)
        assert grid.holder("grid_manager") is None
        assert "grid_manager" not in grid.holders_at(HANDOVER)
        assert grid.holders_at(T0)["grid_manager"] == "M"

    def test_one_person_may_hold_posts_in_several_grids(self, organised: HazardLoop) -> None:
        apply(organised, [
            org("appoint", grid="D01-S01", post="in_charge", person="M"),
            org("appoint", grid=GRID, post="in_charge", person="M"),
        ])  # fmt: skip
        assert organised.get_grid("D01-S01").holder("in_charge") == "M"
        assert organised.get_grid(GRID).holders_at(T0) == {
            "directly_responsible": "A", "grid_manager": "M", "in_charge": "M"
        }  # fmt: skip

    def test_a_street_grid_may_stand_without_a_district(self, engine: HazardLoop) -> None:
        apply(engine, [org("establish_grid", grid="S9", name="独立街道", level="street")])
        assert engine.get_grid("S9").parent is None

    def test_a_grid_and_a_hazard_may_share_a_code(self, organised: HazardLoop) -> None:
        organised.handle(parse_command(discover(GRID, T0)))
        assert organised.get_hazard(GRID).grid == GRID
        assert organised.get_grid(GRID).level == "community"

    def test_discover_stays_lenient_about_grids_never_established(self, engine: HazardLoop) -> None:
        result = engine.handle(parse_command(discover("H1", T0, grid="NOWHERE")))
        assert result.ok

    def test_the_posts_are_the_domains_and_the_reports_use_them(self) -> None:
        assert POSTS == REPORT_POSTS == (
            "grid_manager", "first_responsible", "in_charge", "directly_responsible",
            "leader_in_liaison",
        )  # fmt: skip


REFUSALS: list[tuple[str, dict[str, Any], type[HazardLoopError]]] = [
    ("grid established twice",
     org("establish_grid", grid="D01", name="x", level="district"), GridExists),
    ("parent never established",
     org("establish_grid", grid="C9", name="x", level="community", parent="S9"), UnknownGrid),
    ("community under a district",
     org("establish_grid", grid="C9", name="x", level="community", parent="D01"), BadParent),
    ("street under a street",
     org("establish_grid", grid="S9", name="x", level="street", parent="D01-S01"), BadParent),
    ("community without a parent",
     org("establish_grid", grid="C9", name="x", level="community"), BadParent),
    ("district with a parent",
     org("establish_grid", grid="D9", name="x", level="district", parent="D01"), BadParent),
    ("its own parent",
     org("establish_grid", grid="S9", name="x", level="street", parent="S9"), BadParent),
    ("unit registered twice",
     org("register_unit", unit="U-FIRE", name="x", grid="D01"), UnitExists),
    ("unit in an unknown grid",
     org("register_unit", unit="U9", name="x", grid="NOWHERE"), UnknownGrid),
    ("person registered twice",
     org("register_person", person="A", name="x"), PersonExists),
    ("person of an unknown unit",
     org("register_person", person="P9", name="x", unit="U9"), UnknownUnit),
    ("person of an unknown grid",
     org("register_person", person="P9", name="x", grid="NOWHERE"), UnknownGrid),
    ("appoint in an unknown grid",
     org("appoint", grid="NOWHERE", post="in_charge", person="A"), UnknownGrid),
    ("appoint an unknown person",
     org("appoint", grid=GRID, post="in_charge", person="P9"), UnknownPerson),
    ("appoint the holder again",
     org("appoint", grid=GRID, post="directly_responsible", person="A"), AlreadyPostHolder),
    ("appoint before the grid's last change",
     org("appoint", T0 - timedelta(days=1), grid=GRID, post="in_charge", person="B"),
     AtBeforePrevious),
    ("appoint in the future",
     org("appoint", datetime(2027, 1, 1, tzinfo=SHANGHAI), grid=GRID, post="in_charge",
         person="B"), AtInFuture),
    ("relieve someone else",
     org("relieve", grid=GRID, post="directly_responsible", person="B"), NotPostHolder),
    ("relieve from a vacant post",
     org("relieve", grid=GRID, post="in_charge", person="A"), NotPostHolder),
    ("relieve in an unknown grid",
     org("relieve", grid="NOWHERE", post="in_charge", person="A"), UnknownGrid),
    ("register in the future",
     org("register_person", datetime(2027, 1, 1, tzinfo=SHANGHAI), person="P9", name="x"),
     AtInFuture),
]  # fmt: skip


class TestRefusals:
    """Each refusal has its own code, names the subject, and records nothing."""

    @pytest.mark.parametrize(("case", "cmd", "error"), REFUSALS, ids=[r[0] for r in REFUSALS])
    def test_refused_with_its_code_and_nothing_written(
        self,
        organised: HazardLoop,
        case: str,
        cmd: dict[str, Any],
        error: type[HazardLoopError],
    ) -> None:
        before = event_count(organised)
        states = {code: organised.get_grid(code).to_state() for code in ("D01", GRID)}
        command = parse_command(cmd)
        with pytest.raises(error) as info:
            organised.handle(command)
        assert info.value.code == error.code
        assert event_count(organised) == before
        assert {code: organised.get_grid(code).to_state() for code in states} == states
        [result] = organised.handle_many([command])
        assert result.subject == command.subject
        assert result.to_dict()["error"]["code"] == error.code
        assert "hazard_id" not in result.to_dict()

    @pytest.mark.parametrize(
        "cmd",
        [
            org("appoint", grid=GRID, post="secretary", person="A"),
            org("establish_grid", grid="X", name="x", level="province"),
            org("appoint", grid=GRID, post="in_charge", person="A", hazard_id="H1"),
            org("relieve", grid=GRID, post="in_charge"),
            org("register_person", person=" A", name="x"),
            org("register_person", person="P9", name="x", phone="call me"),
            {**org("establish_grid", grid="X", name="x", level="district"),
             "at": "2026-09-01 08:00"},
        ],
        ids=["unknown post", "unknown level", "hazard_id on appoint", "missing person",
             "id with a leading space", "bad phone", "time without offset"],
    )  # fmt: skip
    def test_a_malformed_organisation_command_is_invalid(self, cmd: dict[str, Any]) -> None:
        with pytest.raises(InvalidCommand) as info:
            parse_command(cmd)
        assert info.value.code == "invalid_command"

    def test_a_refusal_in_a_batch_leaves_the_rest_applied(self, engine: HazardLoop) -> None:
        commands = setup_commands()
        commands.insert(3, org("appoint", grid=GRID, post="in_charge", person="A"))  # too early
        results = list(engine.handle_many(parse_command(c) for c in commands))
        assert [r.ok for r in results] == [True] * 3 + [False] + [True] * 7
        assert results[3].to_dict()["error"]["code"] == "unknown_person"
        assert event_count(engine) == 10


class TestStoredEvents:
    """State is rebuilt from the stored events alone."""

    def test_a_fresh_engine_rebuilds_the_same_state(
        self, organised: HazardLoop, store: str, clock: FakeClock
    ) -> None:
        apply(organised, [
            org("appoint", HANDOVER, grid=GRID, post="directly_responsible", person="B"),
            org("relieve", HANDOVER + timedelta(days=1), grid=GRID, post="grid_manager",
                person="M"),
        ])  # fmt: skip
        fresh = build_engine(Settings(db=store), clock=clock)
        try:
            for code in ("D01", "D01-S01", GRID):
                assert fresh.get_grid(code).to_state() == organised.get_grid(code).to_state()
            assert fresh.get_unit("U-FIRE").to_state() == organised.get_unit("U-FIRE").to_state()
            for person in ("A", "B", "M", "Z"):
                got = fresh.get_person(person).to_state()
                assert got == organised.get_person(person).to_state()
            assert fresh.get_grid(GRID, version=3).holder("grid_manager") == "M"
            with pytest.raises(UnknownGrid):
                fresh.get_grid("NOWHERE")
            with pytest.raises(UnknownUnit):
                fresh.get_unit("NOWHERE")
            with pytest.raises(UnknownPerson):
                fresh.get_person("NOWHERE")
        finally:
            fresh.close()


class TestIdempotency:
    """A retried appointment or relief returns its first result and records nothing new."""

    @pytest.mark.parametrize(
        "cmd",
        [
            org("appoint", HANDOVER, grid=GRID, post="directly_responsible", person="B",
                idempotency_key="appoint-1"),
            org("relieve", HANDOVER, grid=GRID, post="grid_manager", person="M",
                idempotency_key="relieve-1"),
        ],
        ids=["appoint", "relieve"],
    )  # fmt: skip
    def test_the_same_key_replays_and_a_different_command_is_refused(
        self, organised: HazardLoop, store: str, clock: FakeClock, cmd: dict[str, Any]
    ) -> None:
        first = organised.handle(parse_command(cmd))
        count = event_count(organised)
        again = organised.handle(parse_command(cmd))
        assert again.replayed
        assert (again.subject, again.event, again.version) == (
            first.subject, first.event, first.version
        )  # fmt: skip
        assert again.to_dict() == {**first.to_dict(), "replayed": True}
        fresh = build_engine(Settings(db=store), clock=clock)
        try:
            assert fresh.handle(parse_command(cmd)).replayed
        finally:
            fresh.close()
        assert event_count(organised) == count
        with pytest.raises(IdempotencyKeyReused):
            organised.handle(parse_command({**cmd, "note": "something else"}))
        assert event_count(organised) == count

    def test_a_batch_retried_on_a_stale_grid_applies_each_command_on_fresh_state(
        self, organised: HazardLoop, store: str, clock: FakeClock
    ) -> None:
        """Another writer changes the grid between two batches: the cached copy is stale."""
        other = build_engine(Settings(db=store), clock=clock)

        def commands() -> Iterator[CommandBase]:
            yield parse_command(org("appoint", HANDOVER, grid=GRID, post="in_charge",
                                    person="B"))  # fmt: skip
            other.handle(parse_command(org("appoint", HANDOVER, grid=GRID,
                                           post="leader_in_liaison", person="Z")))  # fmt: skip
            yield parse_command(org("appoint", HANDOVER, grid=GRID, post="first_responsible",
                                    person="M"))  # fmt: skip

        try:
            results = list(organised.handle_many(commands(), batch_size=1))
        finally:
            other.close()
        assert [(r.ok, r.version) for r in results] == [(True, 4), (True, 6)]
        assert organised.get_grid(GRID).holders_at(HANDOVER) == {
            "directly_responsible": "A", "grid_manager": "M", "in_charge": "B",
            "leader_in_liaison": "Z", "first_responsible": "M",
        }  # fmt: skip


# ------------------------------------------------------------------ accountability


def discover(hazard_id: str, at: datetime, grid: str = GRID) -> dict[str, Any]:
    return {"command": "discover", "hazard_id": hazard_id, "actor": "A", "at": at.isoformat(),
            "grid": grid, "category": "fire", "grade": "general",
            "title": "blocked exit"}  # fmt: skip


def hazard(name: str, hazard_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    actor = {"report": "centre", "assign": "centre", "rectify": "Z", "verify": "A",
             "close": "centre"}[name]  # fmt: skip
    return {"command": name, "hazard_id": hazard_id, "actor": actor, "at": at.isoformat(),
            **fields}  # fmt: skip


def assigned(hazard_id: str, start: datetime, due: datetime) -> list[dict[str, Any]]:
    """Discovered, reported and assigned with a given rectification deadline."""
    return [
        discover(hazard_id, start),
        hazard("report", hazard_id, start + timedelta(hours=1)),
        hazard("assign", hazard_id, start + timedelta(hours=2), unit="U-FIRE", person="Z",
               due=due.isoformat()),
    ]  # fmt: skip


class TestAccountabilityGoesToWhoHeldThePostThen:
    """The done-when of issue #3: A held the post when the step went overdue; B took it later."""

    @pytest.fixture
    def history(self, organised: HazardLoop) -> HazardLoop:
        # LATE: rectify due 4 Sep while A holds the post, done 10 Sep (after the handover).
        # STUCK: rectify due 3 Sep, never done. AFTER: rectify due 15 Sep, under B, never done.
        late_due = datetime(2026, 9, 4, 18, 0, tzinfo=SHANGHAI)
        stuck_due = datetime(2026, 9, 3, 18, 0, tzinfo=SHANGHAI)
        after_due = datetime(2026, 9, 15, 18, 0, tzinfo=SHANGHAI)
        commands = [
            *assigned("LATE", T0 + timedelta(hours=1), late_due),
            *assigned("STUCK", T0 + timedelta(hours=1), stuck_due),
            org("appoint", HANDOVER, grid=GRID, post="directly_responsible", person="B"),
            *assigned("AFTER", HANDOVER + timedelta(hours=1), after_due),
            hazard("rectify", "LATE", datetime(2026, 9, 10, 10, 0, tzinfo=SHANGHAI), note="done"),
        ]
        commands.sort(key=lambda c: c["at"])
        apply(organised, commands)
        return organised

    def rectify_charges(self, engine: HazardLoop, runner: ProjectionRunner) -> dict[str, Any]:
        runner.catch_up()
        with runner.engine.connect() as conn:
            report = accountability_report(
                conn, parse_period("2026-09"), engine.clock(), engine.policy, engine.calendar
            )
        return {r.key: r for r in report.rows if r.dimension == "person"}

    def test_the_late_step_is_charged_to_a_not_b(
        self, history: HazardLoop, runner: ProjectionRunner
    ) -> None:
        rows = self.rectify_charges(history, runner)
        a, b = rows["A"], rows["B"]
        # A: the report and assign steps of LATE and STUCK (on time), their rectify steps
        # (LATE handled late, STUCK still overdue). B: AFTER's three steps, and the verify step
        # LATE started under B (due 15 Sep, still overdue).
        assert (a.late, a.still_overdue) == (1, 1)
        assert (b.late, b.still_overdue) == (0, 2)
        assert a.due == 6
        assert b.due == 4
        # M is grid manager throughout: charged with every step.
        assert rows["M"].due == a.due + b.due

    def test_the_overdue_chain_is_who_held_the_post_at_each_deadline(
        self, history: HazardLoop, runner: ProjectionRunner
    ) -> None:
        runner.catch_up()
        before = datetime(2026, 9, 7, 18, 0, tzinfo=SHANGHAI)
        after = datetime(2026, 9, 20, 18, 0, tzinfo=SHANGHAI)
        with runner.engine.connect() as conn:
            early = overdue_report(conn, before, history.policy, history.calendar)
            late = overdue_report(conn, after, history.policy, history.calendar)
        chains = {r.hazard_id: r.chain["directly_responsible"] for r in early.rows}
        assert chains == {"LATE": "A", "STUCK": "A"}
        chains = {r.hazard_id: r.chain["directly_responsible"] for r in late.rows}
        assert chains["STUCK"] == "A"  # overdue since 3 Sep, when A held the post
        assert chains["AFTER"] == "B"  # overdue since 15 Sep, under B
        assert chains["LATE"] == "B"  # its verify step fell due under B
        assert all(r.chain["grid_manager"] == "M" for r in late.rows)


class TestProjection:
    """The organisation projection fills `grids` and `post_tenures` from the grid events."""

    def test_grids_and_tenures(self, organised: HazardLoop, runner: ProjectionRunner) -> None:
        apply(organised, [
            org("appoint", HANDOVER, grid=GRID, post="directly_responsible", person="B"),
            org("relieve", HANDOVER, grid=GRID, post="grid_manager", person="M"),
            org("appoint", HANDOVER + timedelta(days=7), grid=GRID, post="grid_manager",
                person="M"),
        ])  # fmt: skip
        runner.catch_up()
        with runner.engine.connect() as conn:
            got_grids = conn.execute(
                select(grids.c.code, grids.c.name, grids.c.level, grids.c.parent)
                .order_by(grids.c.code)
            ).all()  # fmt: skip
            tenures = conn.execute(
                select(post_tenures).order_by(post_tenures.c.post, post_tenures.c.from_at)
            ).all()
        assert [tuple(r) for r in got_grids] == [
            ("D01", "江滨区直管网格", "district", None),
            ("D01-S01", "滨江街道", "street", "D01"),
            (GRID, "望江社区", "community", "D01-S01"),
        ]
        week = HANDOVER + timedelta(days=7)
        assert [(r.post, r.person, r.from_at, r.to_at) for r in tenures] == [
            ("directly_responsible", "A", T0, HANDOVER),
            ("directly_responsible", "B", HANDOVER, None),
            ("grid_manager", "M", T0, HANDOVER),
            ("grid_manager", "M", week, None),
        ]
        fresh = ProjectionRunner(organised, runner.engine, build_runner(organised).projections)
        fresh.rebuild()
        with runner.engine.connect() as conn:
            again = conn.execute(
                select(post_tenures).order_by(post_tenures.c.post, post_tenures.c.from_at)
            ).all()
        assert again == tenures


class TestDemoDistrict:
    """The demo's August changes of post holders shift the charges from the old holder."""

    def test_a_post_changes_hands_and_the_charges_follow_the_deadlines(self, store: str) -> None:
        from adapters.demo import AS_OF, build_district

        db = store
        summary = build_district(db, hazards=150)
        rotations = [
            c for c in summary["organisation"]["changes"]
            if c["post"] == "directly_responsible"
        ]  # fmt: skip
        assert len(rotations) == 4
        engine = build_engine(Settings(db=str(db)), clock=lambda: AS_OF)
        try:
            runner = build_runner(engine)
            runner.catch_up()
            with runner.engine.connect() as conn:
                july, september = (
                    {
                        r.key: r
                        for r in accountability_report(
                            conn, parse_period(p), AS_OF, engine.policy, engine.calendar
                        ).rows
                        if r.dimension == "person"
                    }
                    for p in ("2026-07", "2026-09")
                )
        finally:
            engine.close()
        charged_late = 0
        for change in rotations:
            old, new = change["from"], change["to"]
            assert new not in july
            assert old not in september
            if old in july:
                charged_late += july[old].late + july[old].still_overdue
        assert charged_late > 0


class TestApplyCommand:
    """`hazardloop apply` takes the organisation's commands as JSON lines, like any other."""

    def test_organisation_lines_apply_and_report_their_subjects(
        self, tmp_path: Path, store: str
    ) -> None:
        lines = [*setup_commands()[:3], org("appoint", grid=GRID, post="in_charge", person="X")]
        src = tmp_path / "org.jsonl"
        src.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
        run = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "apply", str(src), "--db", store],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning", **store_env()},
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        out = [json.loads(line) for line in run.stdout.splitlines()]
        assert [(o["ok"], o["subject"], o.get("event")) for o in out] == [
            (True, {"kind": "grid", "id": "D01"}, "Established"),
            (True, {"kind": "grid", "id": "D01-S01"}, "Established"),
            (True, {"kind": "grid", "id": GRID}, "Established"),
            (False, {"kind": "grid", "id": GRID}, None),
        ]
        assert out[3]["error"]["code"] == "unknown_person"
        assert [o["line"] for o in out] == [1, 2, 3, 4]
