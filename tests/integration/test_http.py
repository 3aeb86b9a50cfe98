"""The HTTP API in-process: the contract and results of `apply`, idempotent retries, If-Match,
one error shape with its status, and the read endpoints (time travel, ledger, reports, feed)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import Settings, build_engine
from adapters.embed import EmbeddedEngine
from adapters.http import STATUS, create_app, status_of
from adapters.store import parse_db
from loop.commands import parse_command
from loop.errors import HazardLoopError, InvalidCommand, MalformedJSON, all_error_classes
from tests.apiclient import ApiClient, issue
from tests.conftest import FakeClock
from tests.stores import rows

ROOT = Path(__file__).resolve().parents[2]

#: A patrol day, as the README's example: business times given, so results are reproducible.
DAY = [
    {"command": "discover", "hazard_id": "JY-1", "actor": "wang.grid",
     "at": "2026-09-28T09:30:00+08:00", "grid": "D01-S02-C03", "category": "fire",
     "grade": "general", "title": "Fire exit blocked by goods"},
    {"command": "report", "hazard_id": "JY-1", "actor": "wang.grid",
     "at": "2026-09-28T09:40:00+08:00"},
    {"command": "assign", "hazard_id": "JY-1", "actor": "centre.li",
     "at": "2026-09-28T10:00:00+08:00", "unit": "fire-brigade", "person": "zhao"},
    {"command": "close", "hazard_id": "JY-1", "actor": "centre.li"},
]  # fmt: skip


class Api:
    """An app on a fresh store, with tokens for the grid member, the centre and an auditor."""

    def __init__(self, db: str, clock: FakeClock) -> None:
        self.app = create_app(Settings(db=db), clock=clock)
        self.engine: EmbeddedEngine = self.app.state.engine
        self.wang = ApiClient(
            self.app, issue(self.engine, "wang.grid", "grid_member", grids=("D01-*",))
        )
        self.centre = ApiClient(
            self.app, issue(self.engine, "centre.li", "command_centre", grids=("*",))
        )
        self.unit = ApiClient(self.app, issue(self.engine, "zhao", "unit", unit="fire-brigade"))
        self.auditor = ApiClient(self.app, issue(self.engine, "audit.zhou", "auditor"))
        self.admin = ApiClient(self.app, issue(self.engine, "registrar", "admin", grids=("*",)))

    def head(self) -> int:
        return int(self.engine.app.recorder.max_notification_id() or 0)

    def as_actor(self, command: dict[str, Any]) -> ApiClient:
        return {"wang.grid": self.wang, "centre.li": self.centre, "zhao": self.unit}[
            command["actor"]
        ]


@pytest.fixture
def api(store: str, clock: FakeClock) -> Iterator[Api]:
    found = Api(store, clock)
    yield found
    found.engine.close()


def discover(hazard_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "command": "discover",
        "hazard_id": hazard_id,
        "grid": "D01-S01",
        "category": "fire",
        "grade": "general",
        "title": "Blocked exit",
        **fields,
    }


class TestCommands:
    """POST /commands takes the contract and answers what `hazardloop apply` prints."""

    def test_results_are_those_apply_prints(self, api: Api, tmp_path: Path) -> None:
        lines = tmp_path / "day.jsonl"
        lines.write_text("\n".join(json.dumps(c) for c in DAY) + "\n", encoding="utf-8")
        applied = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "apply", str(lines), "--db",
             str(tmp_path / "cli.db")],
            capture_output=True, text=True, check=False, cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning"},
        )  # fmt: skip
        printed = [json.loads(line) for line in applied.stdout.splitlines()]
        answered = []
        for command in DAY:
            response = api.as_actor(command).post("/commands", json=command)
            answered.append(response.json())
            assert response.status_code == (200 if response.json()["ok"] else 409)
        for shown in printed:
            shown.pop("line")
            if "error" in shown:
                shown["error"].setdefault("details", {})
        assert answered == printed
        assert printed[-1]["error"]["code"] == "invalid_transition"

    def test_a_batch_answers_one_result_per_command_in_order(self, api: Api) -> None:
        batch = [discover("B-1"), {"command": "report", "hazard_id": "B-1"},
                 {"command": "close", "hazard_id": "B-1"}]  # fmt: skip
        response = api.wang.post("/commands", json=batch)
        assert response.status_code == 200
        body = response.json()
        assert [r["line"] for r in body["results"]] == [1, 2, 3]
        assert [r["ok"] for r in body["results"]] == [True, True, False]
        assert body["refused"] == 1
        assert body["results"][2]["error"]["code"] == "forbidden"

    def test_a_malformed_command_in_a_batch_refuses_the_whole_batch(self, api: Api) -> None:
        batch = [discover("M-1"), {"command": "report", "hazard_id": "M-1", "note": 3}]
        response = api.wang.post("/commands", json=batch)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_command"
        assert error["details"]["lines"][0]["line"] == 2
        assert error["details"]["lines"][0]["error"]["details"]["fields"][0]["field"] == "note"
        assert api.head() == 0

    def test_a_patrol_upload_retried_three_times_records_its_events_once(self, api: Api) -> None:
        upload = []
        for n in range(1, 4):
            upload += [discover(f"P-{n}"), {"command": "report", "hazard_id": f"P-{n}"}]
        headers = {"Idempotency-Key": "pda-17/2026-11-20/upload-1"}
        answers = [api.wang.post("/commands", json=upload, headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        first, *retries = (a.json()["results"] for a in answers)
        assert all(r["ok"] and "replayed" not in r for r in first)
        for retry in retries:
            assert all(r["replayed"] for r in retry)
            assert [r["version"] for r in retry] == [r["version"] for r in first]
        assert api.head() == 6
        assert [len(api.engine.app.history(f"P-{n}")) for n in (1, 2, 3)] == [2, 2, 2]

    def test_a_key_sent_again_with_another_command_is_refused(self, api: Api) -> None:
        headers = {"Idempotency-Key": "k-1"}
        assert api.wang.post("/commands", json=discover("K-1"), headers=headers).is_success
        again = api.wang.post("/commands", json=discover("K-2"), headers=headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "idempotency_key_reused"
        body_key = discover("K-3", idempotency_key="k-other")
        mismatch = api.wang.post("/commands", json=body_key, headers=headers)
        assert mismatch.status_code == 422
        assert api.head() == 1

    def test_keys_are_per_actor_and_a_single_key_never_equals_a_batch_line(
        self, api: Api, store: str
    ) -> None:
        key = {"Idempotency-Key": "2026-09-28/0001"}
        assert api.wang.post("/commands", json=discover("PDA17-1"), headers=key).is_success
        theirs = {"command": "discover", "hazard_id": "PDA18-1", "grid": "D01-S01",
                  "category": "fire", "grade": "general", "title": "Blocked exit"}  # fmt: skip
        other = api.centre.post("/commands", json=theirs, headers=key)
        assert other.status_code == 200
        assert "replayed" not in other.json()
        retry = api.wang.post("/commands", json=discover("PDA17-1"), headers=key)
        assert retry.json()["replayed"] is True
        assert api.wang.post("/commands", json=discover("X"), headers=key).status_code == 409
        single = api.wang.post(
            "/commands", json=discover("X-1"), headers={"Idempotency-Key": "up#1"}
        )
        assert single.status_code == 200
        batch = api.wang.post(
            "/commands", json=[discover("X-2")], headers={"Idempotency-Key": "up"}
        )
        assert batch.json()["results"][0]["ok"] is True
        assert "replayed" not in batch.json()["results"][0]
        assert api.head() == 4
        stored = {r[0] for r in rows(store, "SELECT key FROM idempotency_keys")}
        assert stored == {
            "wang.grid\x1f2026-09-28/0001", "centre.li\x1f2026-09-28/0001",
            "wang.grid\x1fup#1", "wang.grid\x1fup #1",
        }  # fmt: skip

    def test_a_store_keyed_before_keys_were_per_actor_still_recognises_its_retries(
        self, api: Api, store: str
    ) -> None:
        key = {"Idempotency-Key": "k-old"}
        assert api.wang.post("/commands", json=discover("L-1"), headers=key).is_success
        upload = [discover("L-2"), {"command": "report", "hazard_id": "L-2"}]
        batch_key = {"Idempotency-Key": "up-old"}
        assert api.wang.post("/commands", json=upload, headers=batch_key).is_success
        # As a store written before the change holds them: bare keys, a batch's as KEY#n.
        for old, new in [("k-old", "k-old"), ("up-old#1", "up-old #1"), ("up-old#2", "up-old #2")]:
            rows(store, "UPDATE idempotency_keys SET key = ? WHERE key = ?", old,
                 f"wang.grid\x1f{new}")  # fmt: skip
        head = api.head()
        retry = api.wang.post("/commands", json=discover("L-1"), headers=key)
        assert (retry.status_code, retry.json()["replayed"]) == (200, True)
        again = api.wang.post("/commands", json=upload, headers=batch_key)
        assert [r["replayed"] for r in again.json()["results"]] == [True, True]
        reused = api.wang.post("/commands", json=discover("L-3"), headers=key)
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        assert api.head() == head
        theirs = {**discover("L-4"), "grid": "D02-S01"}
        other = api.centre.post("/commands", json=theirs, headers=key)  # not the centre's key
        assert other.status_code == 200
        assert "replayed" not in other.json()
        assert api.head() == head + 1

    def test_a_key_that_loses_a_commit_race_to_another_command_answers_a_result(
        self, api: Api, store: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        other = build_engine(Settings(db=store), clock=clock)  # another worker on the store
        save = api.engine.app._save

        def racing(key: str, hazard_id: str) -> Callable[..., None]:
            def save_after_the_other(*args: Any) -> None:
                monkeypatch.setattr(api.engine.app, "_save", save)  # once
                theirs = discover(hazard_id, actor="wang.grid", idempotency_key=key)
                other.handle(parse_command(theirs))  # commits the key between decide and save
                save(*args)

            return save_after_the_other

        try:
            monkeypatch.setattr(api.engine.app, "_save", racing("K", "THEIRS-1"))
            response = api.wang.post(
                "/commands", json=discover("MINE-1"), headers={"Idempotency-Key": "K"}
            )
            assert response.status_code == 409
            body = response.json()
            assert (body["ok"], body["hazard_id"]) == (False, "MINE-1")
            assert body["error"]["code"] == "idempotency_key_reused"
            monkeypatch.setattr(api.engine.app, "_save", racing("K2", "THEIRS-2"))
            mine = discover("MINE-2", actor="wang.grid", idempotency_key="K2")
            (result,) = api.engine.handle_many([mine])
            assert result.error is not None
            assert (result.hazard_id, result.error.code) == ("MINE-2", "idempotency_key_reused")
            assert not api.engine.app.exists("MINE-1")
            assert not api.engine.app.exists("MINE-2")
            assert api.head() == 2
        finally:
            other.close()

    def test_if_match_guards_against_a_lost_update(self, api: Api) -> None:
        created = api.wang.post("/commands", json=discover("V-1"))
        assert created.headers["ETag"] == '"1"'
        report = {"command": "report", "hazard_id": "V-1"}
        stale = api.wang.post("/commands", json=report, headers={"If-Match": '"0"'})
        assert stale.status_code == 409
        assert stale.json()["error"]["details"] == {
            "hazard_ids": ["V-1"], "expected_version": 0, "version": 1,
        }  # fmt: skip
        assert api.head() == 1
        fresh = api.wang.post("/commands", json=report, headers={"If-Match": '"1"'})
        assert fresh.status_code == 200
        assert fresh.headers["ETag"] == '"2"'
        assert api.wang.get("/hazards/V-1").headers["ETag"] == '"2"'

    @pytest.mark.parametrize(
        ("payload", "headers"),
        [
            ([discover("V-2")], {"If-Match": "1"}),
            ({"command": "establish_grid", "grid": "G", "name": "G", "level": "district"},
             {"If-Match": "0"}),
            (discover("V-3"), {"If-Match": "three"}),
        ],
    )  # fmt: skip
    def test_if_match_is_for_one_hazard_command_with_a_version(
        self, api: Api, payload: Any, headers: dict[str, str]
    ) -> None:
        response = api.wang.post("/commands", json=payload, headers=headers)
        assert response.status_code == 422
        assert api.head() == 0

    def test_an_expected_version_on_an_organisation_command_is_refused_over_both_apis(
        self, api: Api
    ) -> None:
        setup = [
            {"command": "establish_grid", "grid": "D01", "name": "D", "level": "district"},
            {"command": "register_person", "person": "p1", "name": "P1"},
            {"command": "register_person", "person": "p2", "name": "P2"},
            {"command": "appoint", "grid": "D01", "post": "grid_manager", "person": "p1"},
        ]
        assert all(api.admin.post("/commands", json=cmd).is_success for cmd in setup)
        appoint = {"command": "appoint", "grid": "D01", "post": "grid_manager", "person": "p2"}
        over_http = api.admin.post("/commands", json=appoint, headers={"If-Match": '"1"'})
        assert over_http.status_code == 422
        refusal = "If-Match applies to hazard commands only"
        expected = {"code": "invalid_command", "message": refusal}
        assert {k: over_http.json()["error"][k] for k in ("code", "message")} == expected
        admin = api.engine.tokens.principal_of("registrar")
        assert admin is not None
        with pytest.raises(InvalidCommand) as raised:
            api.engine.handle({**appoint, "actor": "registrar"}, expected_version=1)
        assert (raised.value.code, raised.value.message) == tuple(expected.values())
        (result,) = api.engine.handle_many(
            [{**appoint, "actor": "registrar"}], principal=admin, expected_version=2
        )
        assert result.error is not None
        assert (result.error.code, result.error.message) == tuple(expected.values())
        assert api.engine.app.get_grid("D01").version == 2
        assert api.head() == 4


class TestPythonApi:
    """The Python API answers what HTTP answers, one Result per item, whatever the item."""

    def test_an_item_that_is_no_mapping_is_refused_as_malformed_and_the_others_apply(
        self, api: Api
    ) -> None:
        # 500 commands fill the first transaction: the bad items come after it was committed.
        good = [discover(f"N-{n}", actor="wang.grid") for n in range(501)]
        items: list[Any] = [*good[:500], None, "discover", good[500]]
        results = api.engine.handle_many(items)
        assert len(results) == 503
        assert all(r.ok for r in results[:500])
        assert results[502].ok
        for refused, kind in ((results[500], "NoneType"), (results[501], "str")):
            assert refused.error is not None
            assert refused.error.code == "malformed_json"
            assert refused.error.message == f"a command is a JSON object, not {kind}"
            assert refused.to_dict()["hazard_id"] is None
        assert api.head() == 501
        for item in (None, "discover", 3):
            with pytest.raises(MalformedJSON):
                api.engine.handle(item)
        over_http = api.wang.post("/commands", json=None)
        assert over_http.json()["error"]["code"] == "malformed_json"
        assert api.head() == 501


class TestErrors:
    """One error shape, one status per branch of the error tree, never a 500 for bad input."""

    def test_a_store_that_went_away_is_503_on_every_endpoint(
        self, api: Api, store: str, store_kind: str, request: pytest.FixtureRequest
    ) -> None:
        if store_kind != "postgres":
            pytest.skip("an open SQLite file cannot go away under its readers")
        assert api.auditor.get("/healthz").status_code == 200
        location = parse_db(store)
        assert location.pg is not None
        request.getfixturevalue("pg_cluster").drop(location.pg.dbname)  # sessions cut too
        for client, method, path in [
            (api.auditor, "GET", "/healthz"),
            (api.auditor, "GET", "/events"),
            (api.auditor, "GET", "/hazards"),
            (api.auditor, "GET", "/audit/head"),
            (api.wang, "POST", "/commands"),
        ]:
            body = discover("GONE-1") if method == "POST" else None
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "store_error"
            assert "does not exist" in error["message"]
            assert "[SQL:" not in error["message"]  # the driver's words, not our statements
            assert "sqlalche.me" not in error["message"]

    def test_every_error_code_has_a_status(self) -> None:
        for cls in all_error_classes():
            status = status_of(cls("x"))
            assert status in (401, 403, 404, 409, 422, 500, 503), cls
        assert STATUS[HazardLoopError] == 500

    @pytest.mark.parametrize(
        ("payload", "status", "code"),
        [
            (b"{not json", 422, "malformed_json"),
            (b"42", 422, "malformed_json"),
            (b"[]", 422, "invalid_command"),
            (b'{"command": "demolish", "hazard_id": "X"}', 422, "unknown_command"),
            (b'{"command": {"nested": 1}}', 422, "unknown_command"),
            (b'{"hazard_id": "X"}', 422, "invalid_command"),
            (b'{"command": "resume", "hazard_id": "nope"}', 404, "hazard_not_found"),
            (b'{"command": "register_unit", "unit": "u", "name": "U", "grid": "D01"}',
             404, "unknown_grid"),
        ],
    )  # fmt: skip
    def test_a_bad_command_gets_its_status_and_code(
        self, api: Api, payload: bytes, status: int, code: str
    ) -> None:
        response = api.admin.post(
            "/commands", content=payload, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert set(response.json()["error"]) == {"code", "message", "details"}

    def test_a_malformed_field_names_itself(self, api: Api) -> None:
        response = api.wang.post("/commands", json=discover("F-1", grade="minor"))
        assert response.status_code == 422
        fields = response.json()["error"]["details"]["fields"]
        assert [f["field"] for f in fields] == ["grade"]

    def test_a_refused_transition_is_409(self, api: Api) -> None:
        api.wang.post("/commands", json=discover("T-1"))
        response = api.centre.post("/commands", json={"command": "close", "hazard_id": "T-1"})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "invalid_transition"

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer hl_not-a-token"}, {"Authorization": "Basic d2FuZzpwdw=="}],
    )
    def test_no_or_a_bad_token_is_401(self, api: Api, headers: dict[str, str]) -> None:
        anonymous = ApiClient(api.app)
        response = anonymous.post("/commands", json=discover("U-1"), headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
        assert anonymous.get("/hazards", headers=headers).status_code == 401
        assert api.head() == 0

    def test_a_revoked_token_is_401_at_once(self, api: Api) -> None:
        info, token = api.engine.tokens.create("temp", ["auditor"])
        client = ApiClient(api.app, token)
        assert client.get("/audit/head").status_code == 200
        assert api.engine.tokens.revoke(info.id)
        assert client.get("/audit/head").status_code == 401

    @pytest.mark.parametrize(
        ("path", "status", "code"),
        [
            ("/hazards/nope", 404, "hazard_not_found"),
            ("/hazards?overdeu=true", 422, "invalid_command"),
            ("/hazards?page=0", 422, "invalid_command"),
            ("/hazards?status=open", 422, "invalid_command"),
            ("/hazards/X?as_of=yesterday", 422, "invalid_command"),
            ("/hazards/X?as_of=9999-12-31", 422, "invalid_command"),
            # Read as every command reads a moment (adapters.nightly.parse_moment), as the CLI:
            ("/hazards/X?as_of=20261120", 422, "invalid_command"),
            ("/hazards/X/history?known_at=2100-06-01", 422, "invalid_command"),
            ("/hazards/X/history?known_at=1990-06-01", 404, "hazard_not_found"),
            ("/reports/overdue?as_of=2026-11-20T18", 422, "invalid_command"),
            ("/reports/accountability?period=0000", 422, "invalid_command"),
            ("/reports/accountability", 422, "invalid_command"),
            ("/reports/overdue?format=pdf", 422, "invalid_command"),
            ("/events?after=-1", 422, "invalid_command"),
            ("/no/such/thing", 404, "not_found"),
        ],
    )
    def test_a_bad_read_gets_its_status_and_code(
        self, api: Api, path: str, status: int, code: str
    ) -> None:
        response = api.auditor.get(path)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code

    def test_a_wrong_method_is_405_in_the_same_shape(self, api: Api) -> None:
        response = api.auditor.request("DELETE", "/hazards")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert "GET" in response.headers["Allow"]


class TestReads:
    """The read endpoints answer what the CLI shows, as of a moment or as known then."""

    def test_a_hazard_now_and_as_of_a_past_moment(self, api: Api, clock: FakeClock) -> None:
        api.wang.post("/commands", json=discover("R-1"))
        clock.advance(hours=2)
        api.wang.post("/commands", json={"command": "report", "hazard_id": "R-1"})
        now = api.wang.get("/hazards/R-1").json()
        assert (now["status"], now["version"], now["holder"]) == ("reported", 2, "command_centre")
        before = clock.now.replace(hour=clock.now.hour - 1).isoformat()
        then = api.wang.get("/hazards/R-1", params={"as_of": before}).json()
        assert then["status"] == "discovered"
        known = api.wang.get("/hazards/R-1", params={"known_at": before}).json()
        assert known["version"] == 1
        history = api.wang.get("/hazards/R-1/history", params={"known_at": before}).json()
        assert [e["event"] for e in history["events"]] == ["Discovered"]
        full = api.wang.get("/hazards/R-1/history").json()["events"]
        assert [(e["event"], e["actor"]) for e in full] == [
            ("Discovered", "wang.grid"), ("Reported", "wang.grid"),
        ]  # fmt: skip
        assert all(len(e["log_hash"]) == 64 for e in full)
        gone = api.wang.get("/hazards/R-1", params={"as_of": "2020-01-01"})
        assert gone.status_code == 404

    def test_the_ledger_filters_and_pages(self, api: Api, clock: FakeClock) -> None:
        for n in range(5):
            api.wang.post("/commands", json=discover(f"L-{n}", grade="major" if n else "general"))
        api.wang.post("/commands", json={"command": "report", "hazard_id": "L-0"})
        page = api.auditor.get("/hazards", params={"page_size": 2}).json()
        assert (page["total"], len(page["items"]), page["next_page"]) == (5, 2, 2)
        last = api.auditor.get("/hazards", params={"page_size": 2, "page": 3}).json()
        assert (len(last["items"]), last["next_page"]) == (1, None)
        reported = api.auditor.get("/hazards", params={"status": "reported"}).json()
        assert [i["hazard_id"] for i in reported["items"]] == ["L-0"]
        major = api.auditor.get("/hazards", params={"grade": "major", "step": "report"}).json()
        assert major["total"] == 4
        assert api.auditor.get("/hazards", params={"overdue": True}).json()["total"] == 0
        clock.advance(days=3)  # a major hazard is reported within 2 hours
        overdue = api.auditor.get("/hazards", params={"overdue": "true"}).json()
        assert {i["hazard_id"] for i in overdue["items"]} == {"L-1", "L-2", "L-3", "L-4"}
        assert all(i["overdue"] for i in overdue["items"])

    def test_the_ledger_shows_a_grid_scope_exactly_what_its_rules_let_it_read(
        self, api: Api
    ) -> None:
        # Grid codes are compared as the rules compare them: case and all (SQLite's LIKE
        # ignores ASCII case, so a prefix test there would let `D01-*` see `d01-…`).
        for hazard_id, grid in [("S-1", "D01-S01"), ("S-2", "d01-s01"), ("S-3", "D01_S01"),
                                ("S-4", "D02-S01")]:  # fmt: skip
            sent = api.centre.post("/commands", json=discover(hazard_id, grid=grid))
            assert sent.status_code == 200, sent.text
        listed = api.wang.get("/hazards").json()
        assert [i["hazard_id"] for i in listed["items"]] == ["S-1"]
        for hazard_id in ("S-2", "S-3", "S-4"):
            assert api.wang.get(f"/hazards/{hazard_id}").status_code == 403
        assert api.wang.get("/hazards/S-1").status_code == 200

    def test_reports_in_every_format(self, api: Api, clock: FakeClock) -> None:
        api.wang.post("/commands", json=discover("O-1", grade="major"))
        clock.advance(days=1)
        overdue = api.auditor.get("/reports/overdue").json()
        assert [r["hazard_id"] for r in overdue["rows"]] == ["O-1"]
        csv = api.auditor.get("/reports/overdue", params={"format": "csv", "lang": "en"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert "O-1" in csv.content.decode("utf-8-sig")
        xlsx = api.auditor.get("/reports/overdue", params={"format": "xlsx"})
        assert xlsx.content[:2] == b"PK"
        period = {"period": clock.now.strftime("%Y-%m")}
        accountability = api.auditor.get("/reports/accountability", params=period)
        assert accountability.status_code == 200
        assert "rows" in accountability.json()
        html = api.auditor.get("/reports/accountability", params={**period, "format": "html"})
        assert html.headers["content-type"].startswith("text/html")
        then = api.auditor.get("/reports/overdue", params={"known_at": "2020-01-01"}).json()
        assert then["rows"] == []

    def test_dossier_audit_head_and_feed(self, api: Api) -> None:
        api.wang.post("/commands", json=discover("D-1"))
        api.wang.post("/commands", json={"command": "report", "hazard_id": "D-1"})
        dossier = api.auditor.get("/hazards/D-1/dossier").json()
        assert dossier["proof"]["intact"] is True
        html = api.auditor.get("/hazards/D-1/dossier", params={"format": "html"})
        assert html.headers["content-type"].startswith("text/html")
        head = api.auditor.get("/audit/head").json()
        assert head["count"] == 2
        assert head["head"] == dossier["proof"]["log_head"]
        feed = api.auditor.get("/events", params={"after": 0, "limit": 1}).json()
        assert [e["type"] for e in feed["events"]] == ["Hazard.Discovered"]
        assert (feed["next_after"], feed["head"]) == (1, 2)
        rest = api.auditor.get("/events", params={"after": feed["next_after"]}).json()
        assert [e["type"] for e in rest["events"]] == ["Hazard.Reported"]

    @pytest.mark.parametrize(
        "hazard_id",
        ["JY/2026/0001", "A/history", "B/dossier", "50%2F off", "隐患/巡查-12", "trailing/"],
    )
    def test_any_id_the_contract_allows_is_readable_by_its_path(
        self, api: Api, hazard_id: str
    ) -> None:
        """Ids are the client's own: one with `/` is sent as `%2F` (as URL builders encode a
        path segment) and names that case, never a sub-resource of another."""
        from urllib.parse import quote

        other = hazard_id.split("/")[0]  # the case the path would name if `/` split the id
        if other != hazard_id:
            api.wang.post("/commands", json=discover(other))
        assert api.wang.post("/commands", json=discover(hazard_id)).json()["ok"]
        api.wang.post("/commands", json={"command": "report", "hazard_id": hazard_id})
        path = "/hazards/" + quote(hazard_id, safe="")
        case = api.wang.get(path)
        assert case.status_code == 200, case.json()
        assert (case.json()["hazard_id"], case.json()["version"]) == (hazard_id, 2)
        history = api.wang.get(path + "/history").json()
        assert history["hazard_id"] == hazard_id
        assert [e["event"] for e in history["events"]] == ["Discovered", "Reported"]
        dossier = api.auditor.get(path + "/dossier").json()
        assert (dossier["hazard_id"], dossier["state"]["version"]) == (hazard_id, 2)
        assert (dossier["proof"]["intact"], len(dossier["proof"]["links"])) == (True, 2)

    def test_an_id_too_long_or_not_utf8_in_the_path_is_named(self, api: Api) -> None:
        too_long = api.wang.get("/hazards/" + "%E9%9A%90" * 65)  # 65 characters, once decoded
        assert too_long.status_code == 422
        assert too_long.json()["error"]["details"] == {"field": "hazard_id"}
        assert "65" in too_long.json()["error"]["message"]
        fits = api.wang.get("/hazards/" + "%E9%9A%90" * 64)  # 64: valid, and not there
        assert fits.json()["error"]["code"] == "hazard_not_found"
        broken = api.wang.get("/hazards/%FF")
        assert (broken.status_code, broken.json()["error"]["code"]) == (422, "invalid_command")

    def test_health_and_the_openapi_document_need_no_token(self, api: Api) -> None:
        anonymous = ApiClient(api.app)
        assert anonymous.get("/healthz").json() == {"ok": True}
        document = anonymous.get("/openapi.json").json()
        assert {"/commands", "/hazards", "/hazards/{hazard_id}", "/hazards/{hazard_id}/history",
                "/hazards/{hazard_id}/dossier", "/reports/overdue", "/reports/accountability",
                "/audit/head", "/events"} <= set(document["paths"])  # fmt: skip
        assert "Discover" in document["components"]["schemas"]


def _overdue_cases(engine: EmbeddedEngine) -> None:
    """Three cases assigned in September and never rectified: overdue since."""
    for i in range(3):
        hid = f"K-{i}"
        for command in (
            discover(hid, actor="wang.grid", at="2026-09-01T09:00:00+08:00"),
            {"command": "report", "hazard_id": hid, "actor": "wang.grid",
             "at": "2026-09-01T11:00:00+08:00"},
            {"command": "assign", "hazard_id": hid, "actor": "centre.li", "unit": "U1",
             "person": "li", "at": "2026-09-01T12:00:00+08:00"},
        ):  # fmt: skip
            assert engine.handle(command).ok


#: K-1's rectification of 25 September, recorded after the report was run (back-dated).
LATE = {"command": "rectify", "hazard_id": "K-1", "actor": "li", "note": "done on site",
        "at": "2026-09-25T16:00:00+08:00"}  # fmt: skip


class TestKnownAtHeads:
    """`known_at` takes a printed chain head `COUNT:HASH` over both APIs, as the CLI does: a
    report is reproduced from the head it prints, whatever was recorded since; a head that is
    not the store's is refused (422) naming why."""

    def test_a_live_report_is_reproduced_over_http_from_its_printed_head(
        self, api: Api, clock: FakeClock
    ) -> None:
        _overdue_cases(api.engine)
        clock.advance(seconds=17.25)  # the live report is as of the minute it prints
        first = api.auditor.get("/reports/overdue")
        assert first.status_code == 200, first.text
        printed = first.json()
        as_of, head = printed["as_of"], printed["chain_head"]
        assert head.startswith("9:")
        period = {"period": "2026-09", "as_of": as_of}
        accountability = api.auditor.get("/reports/accountability", params=period)
        assert accountability.json()["chain_head"] == head
        csv = api.auditor.get("/reports/overdue", params={"as_of": as_of, "format": "csv"})
        assert api.engine.handle(LATE).ok  # a back-dated event, recorded in the same second
        for params, original in (
            ({"as_of": as_of}, first),
            ({"as_of": as_of, "format": "csv"}, csv),
        ):
            again = api.auditor.get("/reports/overdue", params={**params, "known_at": head})
            assert again.status_code == 200, again.text
            assert again.content == original.content, params
        replayed = api.auditor.get("/reports/accountability", params={**period, "known_at": head})
        assert replayed.content == accountability.content
        now = api.auditor.get("/reports/overdue", params={"as_of": as_of}).json()
        assert now["chain_head"].startswith("10:")
        assert now != printed
        # The case, its history and its dossier as known at that head: before the rectification.
        case = api.auditor.get("/hazards/K-1", params={"known_at": head})
        assert (case.status_code, case.json()["status"]) == (200, "assigned"), case.text
        history = api.auditor.get("/hazards/K-1/history", params={"known_at": head}).json()
        assert [e["event"] for e in history["events"]] == ["Discovered", "Reported", "Assigned"]
        dossier = api.auditor.get("/hazards/K-1/dossier", params={"known_at": head}).json()
        assert (dossier["proof"]["log_head"], dossier["state"]["status"]) == (head, "assigned")
        html = api.auditor.get("/hazards/K-1/dossier", params={"known_at": head, "format": "html"})
        assert html.status_code == 200
        assert head in html.text

    def test_a_live_report_is_reproduced_over_the_python_api_from_its_printed_head(
        self, api: Api, clock: FakeClock
    ) -> None:
        from adapters.reports import render_accountability, render_overdue

        hl = api.engine
        _overdue_cases(hl)
        clock.advance(seconds=17.25)
        first = hl.overdue()
        assert first.as_of == clock.now.replace(second=0, microsecond=0)
        head = first.chain_head
        assert head is not None
        assert head.startswith("9:")
        accountability = hl.accountability("2026-09", as_of=first.as_of)
        assert hl.handle(LATE).ok
        again = hl.overdue(as_of=first.as_of, known_at=head)
        assert render_overdue(again, "json", "zh") == render_overdue(first, "json", "zh")
        replayed = hl.accountability("2026-09", as_of=first.as_of, known_at=head)
        assert render_accountability(replayed, "json", "zh") == render_accountability(
            accountability, "json", "zh"
        )
        assert hl.overdue(as_of=first.as_of).chain_head != head
        assert hl.hazard("K-1", known_at=head)["status"] == "assigned"
        assert [e["event"] for e in hl.history("K-1", known_at=head)] == [
            "Discovered", "Reported", "Assigned"
        ]  # fmt: skip
        assert hl.dossier("K-1", known_at=head)["proof"]["log_head"] == head
        # A head alone dates the report: as of the record time of its last event.
        assert hl.overdue(known_at=head).chain_head == head

    def test_a_head_that_is_not_the_stores_is_refused_with_its_reason(self, api: Api) -> None:
        _overdue_cases(api.engine)
        count, digest = api.auditor.get("/audit/head").json()["head"].split(":")
        other = "0" * 63 + "1"
        for path, params, known_at, reason in (
            ("/reports/overdue", {}, f"{count}:{other}", "rewritten"),
            ("/reports/accountability", {"period": "2026-09"}, f"5:{other}", "rewritten"),
            ("/hazards/K-1", {}, f"99:{digest}", "beyond_log"),
            ("/hazards/K-1/history", {}, f"0:{other}", "rewritten"),
            ("/hazards/K-1/dossier", {}, f"10:{digest}", "beyond_log"),
            ("/hazards/K-1/dossier", {"format": "html"}, f"1:{other}", "rewritten"),
        ):
            refused = api.auditor.get(path, params={**params, "known_at": known_at})
            assert refused.status_code == 422, (path, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "invalid_command", error
            assert error["details"].get("reason") == reason, error
        short = api.auditor.get("/reports/overdue", params={"known_at": "9:abc"})
        assert short.status_code == 422
        assert "64 hex digits" in short.json()["error"]["message"]
        with pytest.raises(InvalidCommand) as refused_here:
            api.engine.overdue(known_at=f"{count}:{other}")
        assert refused_here.value.details["reason"] == "rewritten"
        with pytest.raises(InvalidCommand) as beyond:
            api.engine.hazard("K-1", known_at=f"99:{digest}")
        assert beyond.value.details["reason"] == "beyond_log"
