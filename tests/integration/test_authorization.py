"""Every rule of who may do what, over HTTP with real tokens: a forbidden call gets 403 and
records nothing; the call the rule allows goes through. Reads, tipsters and the Python API too.

One district for the module: grid D01 (our side) and D02 (another), a case per command in the
state that command needs (`F-…` for the forbidden calls, `OK-…` for the allowed one).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from adapters.bootstrap import Settings
from adapters.embed import EmbeddedEngine
from adapters.http import create_app
from loop.authorization import Principal
from loop.errors import Forbidden
from tests.apiclient import ApiClient, issue
from tests.conftest import SHANGHAI, FakeClock, StoreFactory

#: Who holds which token: roles, grid scope, unit.
PEOPLE: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "wang": (("grid_member",), ("D01-*",), None),
    "chen": (("grid_member",), ("D01-*",), None),  # wang's colleague on the same grid
    "li": (("grid_member",), ("D02-*",), None),
    "centre": (("command_centre",), ("D01", "D01-*"), None),
    "centre2": (("command_centre",), ("D02", "D02-*"), None),
    "zhao": (("unit",), (), "fire-brigade"),
    "qian": (("unit",), (), "gas-co"),
    "boss": (("approver",), ("D01-*",), None),
    "boss2": (("approver",), ("D02-*",), None),
    "chief": (("approver",), ("D01", "D01-*"), None),  # the district's approver: one level up
    "top": (("approver",), ("*",), None),
    "auditor": (("auditor",), (), None),
    "officer": (("tipster_officer", "auditor"), (), None),
    "admin": (("admin",), ("D01", "D01-*"), None),
    "admin2": (("admin",), ("D02", "D02-*"), None),
    "feed": (("subscriber",), (), None),
}

#: Each hazard command: the status its case must be in, and its fields.
HAZARD_COMMANDS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "discover": (None, {"grid": "D01-S01", "category": "fire", "grade": "general", "title": "x"}),
    "report": ("discovered", {}),
    "assign": ("reported", {"unit": "fire-brigade", "person": "zhao"}),
    "rectify": ("assigned", {"note": "Cleared"}),
    "verify": ("rectified", {"passed": True}),
    "close": ("verified", {}),
    "reject": ("reported", {"reason": "not a hazard"}),
    "return": ("assigned", {"reason": "not ours"}),
    "reassign": ("assigned", {"unit": "gas-co", "person": "qian", "reason": "gas main"}),
    "extend": (
        "assigned",
        {"due": "2027-03-01T00:00:00+08:00", "reason": "parts", "approved_by": "boss"},
    ),
    "park": ("assigned", {"reason": "winter works", "approved_by": "boss"}),
    "resume": ("parked", {}),
    "reopen": ("closed", {"reason": "recurred"}),
    "regrade": ("assigned", {"grade": "major", "reason": "worse than thought"}),
    "escalate": ("assigned", {"level": "reminder"}),
}

ORG_COMMANDS: dict[str, dict[str, Any]] = {
    "establish_grid": {"grid": "D01-S09", "name": "Street 9", "level": "street", "parent": "D01"},
    "register_unit": {"unit": "new-unit", "name": "New unit", "grid": "D01"},
    "register_person": {"person": "p-new", "name": "New person", "grid": "D01"},
    "appoint": {"grid": "D01", "post": "grid_manager", "person": "p-one"},
    "relieve": {"grid": "D01", "post": "first_responsible", "person": "p-two"},
}

#: Who may give each command (the positive control of every rule).
ALLOWED = {
    "discover": "wang", "report": "wang", "assign": "centre", "rectify": "zhao",
    "verify": "chen", "close": "centre", "reject": "centre", "return": "zhao",
    "reassign": "centre", "extend": "zhao", "park": "centre", "resume": "centre",
    "reopen": "centre", "regrade": "centre", "escalate": "centre",
    "establish_grid": "admin", "register_unit": "admin", "register_person": "admin",
    "appoint": "admin", "relieve": "admin",
}  # fmt: skip

#: (command, who, the reason of the refusal, fields changed): every rule broken at least once.
FORBIDDEN: list[tuple[str, str, str, dict[str, Any]]] = [
    # a grid member discovers and reports in their grids
    ("discover", "zhao", "role", {}),
    ("discover", "li", "out_of_scope", {}),
    ("discover", "centre2", "out_of_scope", {}),
    ("report", "zhao", "role", {}),
    ("report", "li", "out_of_scope", {}),
    ("report", "centre2", "out_of_scope", {}),
    # the command centre assigns, reassigns, closes (and rejects, resumes, reopens, regrades…)
    ("assign", "wang", "role", {}),
    ("assign", "boss", "role", {}),
    ("assign", "centre2", "out_of_scope", {}),
    ("reassign", "zhao", "role", {}),
    ("reassign", "centre2", "out_of_scope", {}),
    ("close", "wang", "role", {}),
    ("close", "centre2", "out_of_scope", {}),
    ("reject", "wang", "role", {}),
    ("reject", "centre2", "out_of_scope", {}),
    ("resume", "zhao", "role", {}),
    ("resume", "centre2", "out_of_scope", {}),
    ("reopen", "wang", "role", {}),
    ("reopen", "centre2", "out_of_scope", {}),
    ("regrade", "zhao", "role", {}),
    ("regrade", "centre2", "out_of_scope", {}),
    ("escalate", "wang", "role", {}),
    ("escalate", "centre2", "out_of_scope", {}),
    # a unit rectifies (and returns) only what is assigned to it
    ("rectify", "qian", "out_of_scope", {}),
    ("rectify", "centre", "role", {}),
    ("return", "qian", "out_of_scope", {}),
    ("return", "centre", "role", {}),
    # verification belongs to the discovering side (谁发现谁督促)
    ("verify", "li", "out_of_scope", {}),
    ("verify", "zhao", "role", {}),
    ("verify", "centre", "out_of_scope", {}),
    # extensions and parking: asked by the centre or the unit, approved by an approver
    ("extend", "qian", "out_of_scope", {}),
    ("extend", "wang", "role", {}),
    ("extend", "centre2", "out_of_scope", {}),
    ("extend", "zhao", "approver", {"approved_by": "nobody"}),
    ("extend", "zhao", "approver", {"approved_by": "boss2"}),
    ("extend", "zhao", "approver", {"approved_by": "chen"}),
    ("park", "qian", "out_of_scope", {}),
    ("park", "wang", "role", {}),
    ("park", "centre", "approver", {"approved_by": "wang"}),
    ("park", "centre", "approver", {"approved_by": "boss2"}),
    # the organisation is the admin's, in their grids
    *((name, "centre", "role", {}) for name in ORG_COMMANDS),
    *((name, "admin2", "out_of_scope", {}) for name in ORG_COMMANDS),
    # an auditor (or a feed subscriber, or a tipster officer) writes nothing
    *((name, who, "role", {}) for name in ALLOWED for who in ("auditor", "feed", "officer")),
]

CLOCK = FakeClock(datetime(2026, 11, 20, 18, 0, tzinfo=SHANGHAI))
#: The module's master key (a module's store has no test folder's key file).
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


class World:
    """The module's engine, app, tokens and a client per person."""

    def __init__(self, db: str) -> None:
        self.app = create_app(Settings(db=db, cipher_key=MASTER_KEY), clock=CLOCK)
        self.engine: EmbeddedEngine = self.app.state.engine
        self.tokens = {
            name: issue(self.engine, name, *roles, grids=grids, unit=unit)
            for name, (roles, grids, unit) in PEOPLE.items()
        }

    def client(self, who: str) -> ApiClient:
        return ApiClient(self.app, self.tokens[who])

    def head(self) -> int:
        return int(self.engine.app.recorder.max_notification_id() or 0)

    def run(self, hazard_id: str, *steps: tuple[str, dict[str, Any]]) -> None:
        for name, fields in steps:
            self.engine.handle({"command": name, "hazard_id": hazard_id, **fields})

    def case_in(self, hazard_id: str, status: str) -> None:
        """Drive a case (discovered by wang in D01-S01) to `status`, as the people who may."""
        discover = {"actor": "wang", **HAZARD_COMMANDS["discover"][1]}
        path: list[tuple[str, dict[str, Any]]] = [("discover", discover)]
        after = {
            "reported": [("report", {"actor": "wang"})],
            "assigned": [("assign", {"actor": "centre", "unit": "fire-brigade", "person": "zhao"})],
            "rectified": [("rectify", {"actor": "zhao", "note": "Cleared"})],
            "verified": [("verify", {"actor": "wang", "passed": True})],
            "closed": [("close", {"actor": "centre"})],
        }
        order = ["discovered", "reported", "assigned", "rectified", "verified", "closed"]
        target = "assigned" if status == "parked" else status
        for step in order[1 : order.index(target) + 1]:
            path += after[step]
        if status == "parked":
            path.append(("park", {"actor": "centre", "reason": "winter", "approved_by": "boss"}))
        self.run(hazard_id, *path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_factory: StoreFactory) -> Iterator[World]:
    w = World(store_factory(tmp_path_factory.mktemp("authz"), "authz"))
    for name, (status, _) in HAZARD_COMMANDS.items():
        if status is not None:
            w.case_in(f"F-{name}", status)
            w.case_in(f"OK-{name}", status)
    org = [
        {"command": "establish_grid", "grid": "D01", "name": "District 1", "level": "district"},
        {"command": "establish_grid", "grid": "D02", "name": "District 2", "level": "district"},
        {"command": "register_person", "person": "p-one", "name": "One"},
        {"command": "register_person", "person": "p-two", "name": "Two"},
        {"command": "appoint", "grid": "D01", "post": "first_responsible", "person": "p-two"},
    ]
    for body in org:
        w.engine.handle({"actor": "registrar", **body})
    yield w
    w.engine.close()


def body(name: str, hazard_id: str, **overrides: Any) -> dict[str, Any]:
    if name in ORG_COMMANDS:
        return {"command": name, **ORG_COMMANDS[name], **overrides}
    return {"command": name, "hazard_id": hazard_id, **HAZARD_COMMANDS[name][1], **overrides}


class TestEveryRule:
    """Each rule: the forbidden call is 403 and records nothing; the allowed one goes through."""

    @pytest.mark.parametrize(
        ("name", "who", "reason", "overrides"),
        FORBIDDEN,
        ids=[f"{n}-by-{w}-{r}-{i}" for i, (n, w, r, _) in enumerate(FORBIDDEN)],
    )
    def test_a_forbidden_call_is_403_and_changes_nothing(
        self, world: World, name: str, who: str, reason: str, overrides: dict[str, Any]
    ) -> None:
        hazard_id = "F-new" if name == "discover" else f"F-{name}"
        before = world.head()
        response = world.client(who).post("/commands", json=body(name, hazard_id, **overrides))
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert error["details"]["reason"] == reason
        assert error["details"]["actor"] == who
        assert world.head() == before

    @pytest.mark.parametrize("name", sorted(ALLOWED))
    def test_the_allowed_call_goes_through(self, world: World, name: str) -> None:
        who = ALLOWED[name]
        before = world.head()
        response = world.client(who).post("/commands", json=body(name, f"OK-{name}"))
        assert response.status_code == 200, response.text
        assert world.head() == before + 1
        history = world.engine.app.history(f"OK-{name}") if name not in ORG_COMMANDS else []
        assert not history or history[-1].actor == who

    def test_the_centre_verifies_what_the_discoverer_fixed_on_the_spot(self, world: World) -> None:
        fixed = body("discover", "FIX-1", fixed_on_spot=True)
        assert world.client("wang").post("/commands", json=fixed).status_code == 200
        # The discoverer rectified it; 谁发现谁督促 cannot apply, so the centre holds the check.
        assert world.engine.hazard("FIX-1")["holder"] == "command_centre"
        verify = body("verify", "FIX-1")
        assert world.client("wang").post("/commands", json=verify).status_code == 409
        assert world.client("centre").post("/commands", json=verify).status_code == 200


class TestASecondExtension:
    """延期: a step's deadline extended once may be extended again only with the approval of
    someone higher — an approver for the parent grid (every grid, when it has none known)."""

    def extend(self, world: World, hazard_id: str, approver: str, due: str) -> Any:
        cmd = body("extend", hazard_id, approved_by=approver, due=due)
        return world.client("zhao").post("/commands", json=cmd)

    def test_the_parent_grids_approver_approves_the_second(self, world: World) -> None:
        world.engine.handle({"command": "establish_grid", "actor": "registrar", "grid": "D01-S07",
                             "name": "Street 7", "level": "street", "parent": "D01"})  # fmt: skip
        discover = {**HAZARD_COMMANDS["discover"][1], "grid": "D01-S07", "actor": "wang"}
        assign = {"actor": "centre", "unit": "fire-brigade", "person": "zhao"}
        world.run("X-1", ("discover", discover), ("report", {"actor": "wang"}), ("assign", assign))
        assert self.extend(world, "X-1", "boss", "2027-03-01T00:00:00+08:00").status_code == 200
        before = world.head()
        for approver in ("boss", "boss2", "top_not_a_token"):
            refused = self.extend(world, "X-1", approver, "2027-04-01T00:00:00+08:00")
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["details"]["reason"] == "approver"
        details = self.extend(world, "X-1", "boss", "2027-04-01T00:00:00+08:00").json()
        assert details["error"]["details"]["needs"] == "higher_approver"
        assert details["error"]["details"]["parent_grid"] == "D01"
        assert world.head() == before
        second = self.extend(world, "X-1", "chief", "2027-04-01T00:00:00+08:00")
        assert second.status_code == 200, second.text
        assert world.engine.hazard("X-1")["extension_count"] == 2

    def test_with_no_parent_known_only_an_approver_of_every_grid_is_higher(
        self, world: World
    ) -> None:
        world.case_in("X-2", "assigned")  # grid D01-S01: never established, so no parent known
        assert self.extend(world, "X-2", "boss", "2027-03-01T00:00:00+08:00").status_code == 200
        refused = self.extend(world, "X-2", "chief", "2027-04-01T00:00:00+08:00")
        assert refused.status_code == 403
        assert "every grid" in refused.json()["error"]["message"]
        assert self.extend(world, "X-2", "top", "2027-04-01T00:00:00+08:00").status_code == 200


class TestTheActor:
    """The actor on every event is the authenticated one."""

    def test_an_omitted_actor_is_the_tokens(self, world: World) -> None:
        world.case_in("A-1", "assigned")
        response = world.client("centre").post("/commands", json=body("escalate", "A-1"))
        assert response.status_code == 200, response.text
        assert world.engine.app.history("A-1")[-1].actor == "centre"

    def test_another_actor_is_refused_and_nothing_recorded(self, world: World) -> None:
        before = world.head()
        forged = body("escalate", "F-escalate", actor="centre2")
        response = world.client("centre").post("/commands", json=forged)
        assert response.status_code == 403
        assert response.json()["error"]["details"]["reason"] == "actor_mismatch"
        assert world.head() == before

    def test_a_forbidden_command_in_a_batch_is_refused_alone(self, world: World) -> None:
        world.case_in("B-1", "assigned")
        world.case_in("B-2", "verified")
        before = world.head()
        batch = [
            body("escalate", "B-1"),
            body("assign", "F-assign", actor="someone.else"),
            body("close", "B-2"),
        ]
        response = world.client("centre").post("/commands", json=batch)
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["ok"] for r in results] == [True, False, True]
        assert results[1]["error"]["code"] == "forbidden"
        assert world.head() == before + 2


class TestReads:
    """A case, the ledger, the reports, the feed and a tipster: each to whom it belongs."""

    @pytest.mark.parametrize("path", ["", "/history", "/dossier"])
    @pytest.mark.parametrize(
        ("who", "status"),
        [("li", 403), ("qian", 403), ("feed", 403), ("admin", 403), ("centre2", 403),
         ("wang", 200), ("centre", 200), ("zhao", 200), ("auditor", 200), ("boss", 200)],
    )  # fmt: skip
    def test_a_case_is_read_by_its_side(
        self, world: World, path: str, who: str, status: int
    ) -> None:
        response = world.client(who).get(f"/hazards/F-rectify{path}")
        assert response.status_code == status, response.text

    def test_the_ledger_lists_only_what_the_caller_may_read(self, world: World) -> None:
        def listed(who: str) -> set[str]:
            response = world.client(who).get("/hazards", params={"page_size": 500})
            assert response.status_code == 200, response.text
            return {item["hazard_id"] for item in response.json()["items"]}

        everything = listed("auditor")
        assert "F-rectify" in everything
        assert listed("centre") == everything
        assert listed("li") == set()
        fire = listed("zhao")
        assert "F-rectify" in fire
        assert "F-report" not in fire
        assert all(world.engine.hazard(h)["unit"] == "fire-brigade" for h in fire)

    @pytest.mark.parametrize(
        ("who", "status"),
        [("wang", 403), ("zhao", 403), ("feed", 403), ("centre", 200), ("boss", 200),
         ("auditor", 200)],
    )  # fmt: skip
    def test_reports_are_for_the_centre_approvers_and_auditors(
        self, world: World, who: str, status: int
    ) -> None:
        client = world.client(who)
        assert client.get("/reports/overdue").status_code == status
        params = {"period": "2026-Q4"}
        assert client.get("/reports/accountability", params=params).status_code == status

    @pytest.mark.parametrize(
        ("who", "status"), [("wang", 403), ("centre", 403), ("feed", 200), ("auditor", 200)]
    )
    def test_the_feed_is_for_subscribers_and_auditors(
        self, world: World, who: str, status: int
    ) -> None:
        assert world.client(who).get("/events").status_code == status

    def test_the_audit_head_is_for_everyone_with_a_token(self, world: World) -> None:
        for who in PEOPLE:
            assert world.client(who).get("/audit/head").status_code == 200
        assert ApiClient(world.app).get("/audit/head").status_code == 401

    def test_a_tipsters_identity_is_seen_only_by_a_tipster_officer(self, world: World) -> None:
        tip = body(
            "discover", "TIP-1", source="public_tip", reporter="Citizen Zhang", title="Gas smell"
        )
        assert world.client("centre").post("/commands", json=tip).status_code == 200
        for who in ("centre", "officer", "auditor"):
            state = world.client(who).get("/hazards/TIP-1").json()
            assert state["reporter"] == "(confidential)", who
        for who in ("centre", "auditor"):
            response = world.client(who).get("/hazards/TIP-1", params={"reveal_tipster": True})
            assert response.status_code == 403, who
            history = world.client(who).get(
                "/hazards/TIP-1/history", params={"reveal_tipster": True}
            )
            assert history.status_code == 403, who
        revealed = world.client("officer").get("/hazards/TIP-1", params={"reveal_tipster": True})
        assert revealed.json()["reporter"] == "Citizen Zhang"
        events = world.client("officer").get(
            "/hazards/TIP-1/history", params={"reveal_tipster": True}
        )
        assert events.json()["events"][0]["payload"]["reporter"] == "Citizen Zhang"
        plain = world.client("centre").get("/hazards/TIP-1/history").json()
        assert plain["events"][0]["payload"]["reporter"] == "(confidential)"
        dossier = world.client("officer").get("/hazards/TIP-1/dossier").text
        assert "Citizen Zhang" not in dossier


class TestThePythonAPI:
    """The same rules when the embedding system gives the engine a principal."""

    def test_a_forbidden_command_raises_and_records_nothing(self, world: World) -> None:
        wang = Principal("wang", frozenset({"grid_member"}), ("D01-*",))
        before = world.head()
        with pytest.raises(Forbidden) as refused:
            world.engine.handle(body("assign", "F-assign", actor="wang"), principal=wang)
        assert refused.value.details["reason"] == "role"
        assert world.head() == before

    def test_reads_are_scoped_as_over_http(self, world: World) -> None:
        li = Principal("li", frozenset({"grid_member"}), ("D02-*",))
        with pytest.raises(Forbidden):
            world.engine.hazard("F-assign", principal=li)
        assert world.engine.ledger(principal=li).total == 0
        with pytest.raises(Forbidden):
            world.engine.overdue(principal=li)
        with pytest.raises(Forbidden):
            world.engine.feed(principal=li)

    def test_without_a_principal_the_engine_trusts_its_caller(self, world: World) -> None:
        world.case_in("PY-1", "assigned")
        result = world.engine.handle(body("escalate", "PY-1", actor="anyone"))
        assert result.ok
