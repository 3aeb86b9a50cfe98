"""The case dossier: steps judged on time or late, extensions with approvers, evidence, proof."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import text

from adapters.audit import verify
from adapters.bootstrap import views_engine
from adapters.dossier import build_dossier, render_dossier
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.errors import HazardNotFound, InvalidCommand
from tests.conftest import SHANGHAI, FakeClock

D = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)
PHOTO = {"name": "exit.jpg", "sha256": "ab" * 32}
AFTER = {"name": "after.jpg", "sha256": "cd" * 32}


def _do(app: HazardLoop, clock: FakeClock, at: datetime, **cmd: object) -> None:
    clock.now = at + timedelta(minutes=5)
    result = app.handle(parse_command({"hazard_id": "DS-1", "at": at.isoformat(), **cmd}))
    assert result.ok, result.to_dict()


@pytest.fixture
def case(engine: HazardLoop, clock: FakeClock) -> HazardLoop:
    """Reported late, assigned on time, extended once, rectified after even the extension."""
    _do(engine, clock, D, command="discover", actor="wang", grid="G1", category="fire",
        grade="general", title="blocked exit", source="public_tip", reporter="Ms Tip",
        evidence=[PHOTO])  # fmt: skip
    _do(engine, clock, D + timedelta(days=2), command="report", actor="wang")  # 24 h limit: late
    _do(engine, clock, D + timedelta(days=2, hours=1), command="assign", actor="centre",
        unit="U1", person="li")  # fmt: skip
    _do(engine, clock, D + timedelta(days=3), command="extend", actor="li",
        due=(D + timedelta(days=20)).isoformat(), reason="parts", approved_by="chief")  # fmt: skip
    _do(engine, clock, D + timedelta(days=25), command="rectify", actor="li", note="cleared",
        evidence=[AFTER])  # fmt: skip
    return engine


def test_steps_extensions_evidence_and_proof(case: HazardLoop, store: str) -> None:
    d = build_dossier(case, "DS-1")
    outcomes = [(s["step"], s["outcome"]) for s in d["steps"]]
    assert outcomes == [("report", "late"), ("assign", "on_time"), ("rectify", "late"),
                        ("verify", "open")]  # fmt: skip
    rectify = d["steps"][2]
    assert rectify["extensions"] == 1
    assert rectify["due"] == D + timedelta(days=20)
    assert rectify["original_due"] < rectify["due"]
    assert (rectify["unit"], rectify["person"]) == ("U1", "li")
    (ext,) = d["extensions"]
    assert (ext["requested_by"], ext["approved_by"], ext["reason"]) == ("li", "chief", "parts")
    assert ext["new_due"] == D + timedelta(days=20)
    assert [(e["name"], e["sha256"]) for e in d["evidence"]] == [
        (PHOTO["name"], PHOTO["sha256"]), (AFTER["name"], AFTER["sha256"])
    ]  # fmt: skip
    assert [t["event"] for t in d["timeline"]] == [
        "Discovered", "Reported", "Assigned", "Extended", "Rectified"
    ]  # fmt: skip
    assert d["proof"]["intact"]
    assert [p["version"] for p in d["proof"]["links"]] == [1, 2, 3, 4, 5]
    assert d["proof"]["log_head"] == str(verify(store).head)


def test_the_proof_is_recomputed_by_hand_from_the_dossier_alone(case: HazardLoop) -> None:
    """Every input of every hash is printed: docs/audit.md's formula, with hashlib only."""
    links = build_dossier(case, "DS-1")["proof"]["links"]
    case_previous = bytes(32)
    for link in links:
        framed = base64.b64decode(link["frame_base64"])
        assert hashlib.sha256(framed).hexdigest() == link["event_sha256"]
        assert link["previous_case_hash"] == case_previous.hex()
        by_hand = hashlib.sha256(
            bytes.fromhex(link["previous_log_hash"]) + case_previous
            + link["position"].to_bytes(8, "big")
            + link["recorded_at_micros"].to_bytes(8, "big", signed=True) + framed
        ).digest()  # fmt: skip
        assert by_hand.hex() == link["log_hash"]
        case_previous = by_hand
    assert framed.split(b"\x1f")[1] == b"5"  # the frame: id, version, topic, state


def test_tipster_identity_is_not_in_the_dossier(case: HazardLoop) -> None:
    d = build_dossier(case, "DS-1")
    for fmt in ("json", "html"):
        assert b"Ms Tip" not in render_dossier(d, fmt)


def test_known_at_shows_only_what_was_recorded_then(case: HazardLoop) -> None:
    then = D + timedelta(days=4)
    d = build_dossier(case, "DS-1", known_at=then)
    assert [t["event"] for t in d["timeline"]] == ["Discovered", "Reported", "Assigned", "Extended"]
    assert d["steps"][-1]["step"] == "rectify"
    assert d["steps"][-1]["outcome"] == "open"  # not yet due on day 4, as known then
    assert d["proof"]["log_head"].startswith("4:")
    with pytest.raises(HazardNotFound):
        build_dossier(case, "DS-1", known_at=D - timedelta(days=1))


def test_json_is_deterministic_and_html_is_a_document(case: HazardLoop) -> None:
    d = build_dossier(case, "DS-1")
    first = render_dossier(d, "json")
    assert first == render_dossier(build_dossier(case, "DS-1"), "json")
    assert json.loads(first)["hazard_id"] == "DS-1"
    page = render_dossier(d, "html").decode()
    tags: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)

    Collect().feed(page)
    assert tags.count("table") == 6
    assert d["proof"]["log_head"] in page
    assert "DS-1" in page
    assert "chief" in page
    with pytest.raises(InvalidCommand):
        render_dossier(d, "pdf")


def test_a_tampered_case_fails_its_proof(case: HazardLoop) -> None:
    # Changed behind the engine's back, straight in the store's table (rowid / notification_id).
    tables = views_engine(case)
    position = "rowid" if tables.dialect.name == "sqlite" else "notification_id"
    try:
        with tables.begin() as conn:
            state = conn.execute(
                text(f"SELECT state FROM stored_events WHERE {position}=4")
            ).scalar_one()
            conn.execute(
                text(f"UPDATE stored_events SET state=:state WHERE {position}=4"),
                {"state": bytes(state).replace(b"chief", b"chef!")},
            )
    finally:
        tables.dispose()
    d = build_dossier(case, "DS-1")
    assert not d["proof"]["intact"]
    assert [p["ok"] for p in d["proof"]["links"]] == [True, True, True, False, True]
