"""Who may do what, as a pure function: every command against every role, in and out of scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from loop.authorization import (
    RULES,
    Allowed,
    Principal,
    decide,
    decide_case_read,
    decide_feed,
    decide_reports,
    decide_tipster,
    grid_in_scope,
)
from loop.commands import COMMAND_CLASSES, CommandBase, parse_command
from loop.errors import Forbidden

#: Who may give each command (the table of docs/integration.md, written out again by hand).
EXPECTED: dict[str, set[str]] = {
    "discover": {"grid_member", "command_centre"},
    "report": {"grid_member", "command_centre"},
    "assign": {"command_centre"},
    "rectify": {"unit"},
    "verify": {"grid_member"},  # and the centre when it holds the step (below)
    "close": {"command_centre"},
    "reject": {"command_centre"},
    "return": {"unit"},
    "reassign": {"command_centre"},
    "extend": {"command_centre", "unit"},
    "park": {"command_centre", "unit"},
    "resume": {"command_centre"},
    "reopen": {"command_centre"},
    "regrade": {"command_centre"},
    "escalate": {"command_centre"},
    "establish_grid": {"admin"},
    "register_unit": {"admin"},
    "register_person": {"admin"},
    "appoint": {"admin"},
    "relieve": {"admin"},
}

FIELDS: dict[str, dict[str, Any]] = {
    "discover": {"grid": "D01-S01", "category": "fire", "grade": "general", "title": "Exit"},
    "report": {},
    "assign": {"unit": "fire-brigade", "person": "zhao"},
    "rectify": {"note": "Cleared"},
    "verify": {"passed": True},
    "close": {},
    "reject": {"reason": "not a hazard"},
    "return": {"reason": "not ours"},
    "reassign": {"unit": "gas-co", "person": "qian", "reason": "gas"},
    "extend": {"due": "2027-03-01T00:00:00+08:00", "reason": "parts", "approved_by": "boss"},
    "park": {"reason": "winter", "approved_by": "boss"},
    "resume": {},
    "reopen": {"reason": "recurred"},
    "regrade": {"grade": "major", "reason": "worse"},
    "escalate": {"level": "reminder"},
    "establish_grid": {"grid": "D01-S09", "name": "Street 9", "level": "street", "parent": "D01"},
    "register_unit": {"unit": "u9", "name": "Unit 9", "grid": "D01-S01"},
    "register_person": {"person": "p9", "name": "Person 9", "grid": "D01-S01"},
    "appoint": {"grid": "D01-S01", "post": "grid_manager", "person": "p9"},
    "relieve": {"grid": "D01-S01", "post": "grid_manager", "person": "p9"},
}


@dataclass
class Case:
    grid: str = "D01-S01"
    unit: str | None = "fire-brigade"
    discovered_by: str = "wang"
    holder: str | None = "fire-brigade"
    extension_approvers: tuple[str, ...] = ()


BOSS = Principal("boss", frozenset({"approver"}), ("D01-*",))


def directory(actor: str) -> Principal | None:
    return BOSS if actor == "boss" else None


def command(name: str, actor: str = "x", **overrides: Any) -> CommandBase:
    body: dict[str, Any] = {"command": name, "actor": actor, **FIELDS[name], **overrides}
    if name not in ("establish_grid", "register_unit", "register_person", "appoint", "relieve"):
        body["hazard_id"] = "H-1"
    return parse_command(body)


def one_role(role: str, grids: tuple[str, ...] = ("*",)) -> Principal:
    return Principal("x", frozenset({role}), grids, "fire-brigade" if role == "unit" else None)


class TestTheTable:
    """The rules name every command of the contract, and each command exactly its roles."""

    def test_every_command_has_a_rule(self) -> None:
        assert set(RULES) == set(COMMAND_CLASSES) == set(EXPECTED)

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    @pytest.mark.parametrize(
        "role",
        ["grid_member", "command_centre", "unit", "approver", "auditor", "tipster_officer",
         "admin", "subscriber"],
    )  # fmt: skip
    def test_a_command_is_allowed_to_its_roles_and_to_no_other(self, name: str, role: str) -> None:
        verdict = decide(one_role(role), command(name), Case(), directory)
        assert isinstance(verdict, Allowed) == (role in EXPECTED[name]), verdict

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_no_role_acts_outside_its_grids(self, name: str) -> None:
        for role in EXPECTED[name] - {"unit"}:
            verdict = decide(one_role(role, ("D02-*",)), command(name), Case(), directory)
            assert isinstance(verdict, Forbidden), (role, verdict)
            assert verdict.details["reason"] == "out_of_scope"


class TestConditions:
    """Each condition of the table: scope, own unit, discovering side, approver, actor."""

    def test_the_actor_named_must_be_the_authenticated_one(self) -> None:
        verdict = decide(one_role("command_centre"), command("assign", actor="y"), Case())
        assert isinstance(verdict, Forbidden)
        assert verdict.details["reason"] == "actor_mismatch"

    def test_a_unit_rectifies_only_what_is_assigned_to_it(self) -> None:
        assert isinstance(decide(one_role("unit"), command("rectify"), Case()), Allowed)
        other = Case(unit="gas-co", holder="gas-co")
        verdict = decide(one_role("unit"), command("rectify"), other)
        assert isinstance(verdict, Forbidden)
        assert verdict.details["reason"] == "out_of_scope"

    def test_the_discoverer_verifies_even_outside_their_grids(self) -> None:
        wang = Principal("wang", frozenset({"grid_member"}), ("D09-*",))
        assert isinstance(decide(wang, command("verify", actor="wang"), Case()), Allowed)

    def test_the_centre_verifies_only_when_it_holds_the_step(self) -> None:
        centre = one_role("command_centre")
        fixed_on_spot = Case(unit=None, holder="command_centre")
        assert isinstance(decide(centre, command("verify"), fixed_on_spot), Allowed)
        assert isinstance(decide(centre, command("verify"), Case()), Forbidden)

    @pytest.mark.parametrize("name", ["extend", "park"])
    def test_the_approver_must_hold_the_approver_role_for_the_grid(self, name: str) -> None:
        centre = one_role("command_centre")
        assert isinstance(decide(centre, command(name), Case(), directory), Allowed)
        for approver, found in (("nobody", None), ("boss", None), ("boss", BOSS)):
            case = Case(grid="D02-S01") if found else Case()
            verdict = decide(
                centre, command(name, approved_by=approver), case, lambda _, f=found: f
            )
            assert isinstance(verdict, Forbidden), approver
            assert verdict.details["reason"] == "approver"

    def test_a_second_extension_needs_an_approver_for_the_parent_grid(self) -> None:
        centre = one_role("command_centre")
        chief = Principal("chief", frozenset({"approver"}), ("D01", "D01-*"))
        top = Principal("top", frozenset({"approver"}), ("*",))
        people = {"boss": BOSS, "chief": chief, "top": top}
        extended = Case(grid="D01-S01", extension_approvers=("boss",))
        parents = {"D01-S01": "D01"}.get

        def verdict(approver: str, case: Case, parent_of: Any) -> Allowed | Forbidden:
            cmd = command("extend", approved_by=approver)
            return decide(centre, cmd, case, people.get, parent_of)

        # A first extension: any approver of the grid.
        assert isinstance(verdict("boss", Case(grid="D01-S01"), parents), Allowed)
        # A further one: an approver of the parent grid, D01 (BOSS holds D01-* only).
        refused = verdict("boss", extended, parents)
        assert isinstance(refused, Forbidden)
        assert refused.details["reason"] == "approver"
        assert (refused.details["needs"], refused.details["parent_grid"]) == (
            "higher_approver", "D01"
        )  # fmt: skip
        assert isinstance(verdict("chief", extended, parents), Allowed)
        assert isinstance(verdict("top", extended, parents), Allowed)
        # A grid with no parent known: only an approver of every grid is higher.
        no_parent = verdict("chief", extended, None)
        assert isinstance(no_parent, Forbidden)
        assert "parent_grid" not in no_parent.details
        assert isinstance(verdict("top", extended, lambda grid: None), Allowed)
        # Parking is not an extension.
        park = command("park", approved_by="boss")
        assert isinstance(decide(centre, park, extended, people.get, parents), Allowed)

    def test_a_command_on_no_case_is_refused(self) -> None:
        verdict = decide(one_role("command_centre"), command("assign"), None)
        assert isinstance(verdict, Forbidden)
        assert verdict.details["reason"] == "no_case"

    def test_grid_scope_patterns(self) -> None:
        assert grid_in_scope("D01-S01", ["*"])
        assert grid_in_scope("D01-S01", ["D01-*"])
        assert grid_in_scope("D01-S01", ["D02", "D01-S01"])
        assert not grid_in_scope("D01", ["D01-*"])
        assert not grid_in_scope("D011-S01", ["D01-*"])
        assert not grid_in_scope("D01-S01", [])

    def test_unknown_roles_are_refused_when_a_principal_is_made(self) -> None:
        with pytest.raises(ValueError, match="unknown roles"):
            Principal("x", frozenset({"superuser"}))


class TestReads:
    """Who reads cases, reports, the feed and a tipster's identity."""

    @pytest.mark.parametrize(
        ("principal", "allowed"),
        [
            (Principal("a", frozenset({"auditor"})), True),
            (Principal("w", frozenset({"grid_member"}), ("D01-*",)), True),
            (Principal("w", frozenset({"grid_member"}), ("D02-*",)), False),
            (Principal("c", frozenset({"command_centre"}), ("D01-S01",)), True),
            (Principal("z", frozenset({"unit"}), (), "fire-brigade"), True),
            (Principal("q", frozenset({"unit"}), (), "gas-co"), False),
            (Principal("wang", frozenset({"unit"}), (), "gas-co"), True),  # the discoverer
            (Principal("s", frozenset({"subscriber"})), False),
            (Principal("t", frozenset({"tipster_officer"})), False),
            (Principal("m", frozenset({"admin"}), ("*",)), False),
        ],
    )
    def test_who_reads_a_case(self, principal: Principal, allowed: bool) -> None:
        assert isinstance(decide_case_read(principal, Case()), Allowed) == allowed

    def test_reports_feed_and_tipsters_have_their_readers(self) -> None:
        for role in ("auditor", "command_centre", "approver"):
            assert isinstance(decide_reports(one_role(role)), Allowed)
        for role in ("grid_member", "unit", "subscriber", "tipster_officer", "admin"):
            assert isinstance(decide_reports(one_role(role)), Forbidden)
        assert isinstance(decide_feed(one_role("subscriber")), Allowed)
        assert isinstance(decide_feed(one_role("auditor")), Allowed)
        assert isinstance(decide_feed(one_role("command_centre")), Forbidden)
        assert isinstance(decide_tipster(one_role("tipster_officer")), Allowed)
        assert isinstance(decide_tipster(one_role("auditor")), Forbidden)


@pytest.mark.parametrize(
    "module",
    ["loop.authorization", "adapters.tokens", "adapters.embed", "adapters.http",
     "adapters.http_cli"],
)  # fmt: skip
def test_the_public_names_of_the_integration_modules_exist(module: str) -> None:
    import importlib

    found = importlib.import_module(module)
    assert [name for name in found.__all__ if not hasattr(found, name)] == []
