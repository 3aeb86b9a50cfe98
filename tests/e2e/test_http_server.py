"""The whole six-step loop over HTTP, against `hazardloop serve` in its own process, with tokens
issued by `hazardloop tokens create` — as a command centre's system and a patrol app would."""

from __future__ import annotations

import json

import httpx

from tests.apiclient import hazardloop, running_server

HAZARD = "JY-2026-0042"


def issue(db: str, actor: str, *args: str) -> str:
    made = hazardloop("tokens", "create", "--db", db, "--actor", actor, *args, "--token-only")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


class TestTheLoopOverHTTP:
    """Discover, report, assign, rectify, verify, close: each by whoever's step it is."""

    def test_six_steps_by_six_tokens_against_a_real_server(self, store: str) -> None:
        db = store
        wang = issue(db, "wang.grid", "--role", "grid_member", "--grid", "D01-*")
        centre = issue(db, "centre.li", "--role", "command_centre", "--grid", "*")
        zhao = issue(db, "zhao", "--role", "unit", "--unit", "fire-brigade")
        auditor = issue(db, "audit.zhou", "--role", "auditor", "--label", "district audit")
        listed = hazardloop("tokens", "list", "--db", db)
        assert [json.loads(line)["actor"] for line in listed.stdout.splitlines()] == [
            "wang.grid", "centre.li", "zhao", "audit.zhou",
        ]  # fmt: skip
        assert wang not in listed.stdout  # tokens are never shown again

        with running_server(db) as url:

            def send(token: str, command: str, **fields: object) -> dict[str, object]:
                body = {"command": command, "hazard_id": HAZARD, **fields}
                response = httpx.post(
                    f"{url}/commands", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 200, response.text
                answer: dict[str, object] = response.json()
                return answer

            steps = [
                send(wang, "discover", grid="D01-S02-C03", category="fire", grade="general",
                     title="Fire exit blocked by goods", location="No. 8 Market Street"),
                send(wang, "report", note="Shop owner informed"),
                send(centre, "assign", unit="fire-brigade", person="zhao"),
                send(zhao, "rectify", note="Goods moved; exit marked and kept clear"),
                send(wang, "verify", passed=True, note="Checked on site"),
                send(centre, "close"),
            ]  # fmt: skip
            assert [s["status"] for s in steps] == [
                "discovered", "reported", "assigned", "rectified", "verified", "closed",
            ]  # fmt: skip

            read = {"Authorization": f"Bearer {auditor}"}
            state = httpx.get(f"{url}/hazards/{HAZARD}", headers=read).json()
            assert (state["status"], state["version"]) == ("closed", 6)
            history = httpx.get(f"{url}/hazards/{HAZARD}/history", headers=read).json()
            assert [(e["event"], e["actor"]) for e in history["events"]] == [
                ("Discovered", "wang.grid"), ("Reported", "wang.grid"),
                ("Assigned", "centre.li"), ("Rectified", "zhao"),
                ("Verified", "wang.grid"), ("Closed", "centre.li"),
            ]  # fmt: skip
            closed = httpx.get(f"{url}/hazards", params={"status": "closed"}, headers=read)
            assert [i["hazard_id"] for i in closed.json()["items"]] == [HAZARD]
            head = httpx.get(f"{url}/audit/head", headers=read).json()
            assert head["count"] == 6

            # A unit cannot close what it rectified; a revoked token is refused at once.
            refused = httpx.post(
                f"{url}/commands",
                json={"command": "reopen", "hazard_id": HAZARD, "reason": "try"},
                headers={"Authorization": f"Bearer {zhao}"},
            )
            assert refused.status_code == 403
            token_id = json.loads(hazardloop("tokens", "list", "--db", db).stdout.splitlines()[2])[
                "id"
            ]
            revoked = hazardloop("tokens", "revoke", token_id, "--db", db)
            assert revoked.returncode == 0, revoked.stderr
            after = httpx.get(
                f"{url}/hazards/{HAZARD}", headers={"Authorization": f"Bearer {zhao}"}
            )
            assert after.status_code == 401

        # The server is stopped: the store verifies, as an auditor would check it.
        verified = hazardloop("audit", "verify", "--db", db, "--json")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["head"] == head["head"]

    def test_revoking_an_unknown_token_fails_loudly(self, store: str) -> None:
        gone = hazardloop("tokens", "revoke", "tok_nope", "--db", store)
        assert gone.returncode == 1
        assert "tok_nope" in gone.stderr

    def test_a_token_needs_a_known_role_and_a_scope(self, store: str) -> None:
        db = store
        bad = hazardloop("tokens", "create", "--db", db, "--actor", "x", "--role", "root")
        assert bad.returncode == 2
        assert "unknown role 'root'" in bad.stderr
        unscoped = hazardloop("tokens", "create", "--db", db, "--actor", "x", "--role", "admin")
        assert unscoped.returncode == 2
        assert "grids" in unscoped.stderr


class TestIdsInPaths:
    def test_an_id_holding_a_slash_is_one_path_segment_on_a_real_server(self, store: str) -> None:
        """uvicorn hands the app the raw path; an id sent with %2F names that case (not a
        sub-resource of another), and the rest of the path is decoded as usual."""
        from urllib.parse import quote

        wang = issue(store, "wang.grid", "--role", "grid_member", "--grid", "D01-*")
        auth = {"Authorization": f"Bearer {wang}"}
        ids = ["JY/2026/0007", "A/history", "隐患/巡查 12%"]
        with running_server(store) as url:
            for hazard_id in ids:
                body = {"command": "discover", "hazard_id": hazard_id, "grid": "D01-S02",
                        "category": "fire", "grade": "general", "title": "Exit"}  # fmt: skip
                sent = httpx.post(f"{url}/commands", json=body, headers=auth)
                assert sent.status_code == 200, sent.text
            for hazard_id in ids:
                path = f"{url}/hazards/{quote(hazard_id, safe='')}"
                state = httpx.get(path, headers=auth)
                assert state.status_code == 200, state.text
                assert state.json()["hazard_id"] == hazard_id
                history = httpx.get(path + "/history", headers=auth).json()
                assert (history["hazard_id"], len(history["events"])) == (hazard_id, 1)
            missing = httpx.get(f"{url}/hazards/A", headers=auth)  # "A" itself was never found
            assert missing.json()["error"]["code"] == "hazard_not_found"
