"""Confidential tipsters, and events stored by yesterday's code loading into today's model."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.audit import verify
from adapters.bootstrap import Settings, build_engine
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.hazard import Hazard
from tests.conftest import FakeClock

NAME = "举报人张秀英"  # the tipster: must never be readable from the file or the logs
TIP = {
    "command": "discover", "hazard_id": "TIP-1", "actor": "grid-wang", "grid": "G1",
    "category": "fire", "grade": "general", "title": "locked fire exit",
    "source": "public_tip", "reporter": NAME, "at": "2026-11-20T09:00:00+08:00",
}  # fmt: skip
DATA = Path(__file__).parent.parent / "data"


def _file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        input=stdin, capture_output=True, text=True, check=False,
        env={**os.environ, "HAZARDLOOP_LOG_LEVEL": "debug"},
    )  # fmt: skip


def test_name_is_nowhere_in_the_file_or_the_logs_and_shows_only_when_revealed(
    db_path: Path,
) -> None:
    applied = _cli("apply", "-", "--db", str(db_path), stdin=json.dumps(TIP) + "\n")
    assert applied.returncode == 0, applied.stderr
    assert applied.stderr  # the per-command log line was written…
    assert NAME not in applied.stderr + applied.stdout  # …without the name
    app = build_engine(Settings(db=str(db_path)))
    try:
        hazard = app.get_hazard("TIP-1")
        assert hazard.reporter_sealed
        assert NAME not in hazard.reporter
        assert app.vault is not None
        assert app.vault.open("TIP-1", hazard.reporter) == NAME
    finally:
        app.close()
    for encoded in (NAME.encode(), NAME.encode("utf-16-le"), NAME.encode("gb18030")):
        assert encoded not in _file_bytes(db_path)
    shown = _cli("show", "TIP-1", "--db", str(db_path))
    assert json.loads(shown.stdout)["reporter"] == "(confidential)"
    assert NAME not in shown.stderr
    revealed = _cli("show", "TIP-1", "--db", str(db_path), "--reveal-tipster")
    assert json.loads(revealed.stdout)["reporter"] == NAME
    history = _cli("history", "TIP-1", "--db", str(db_path))
    assert history.returncode == 0
    assert NAME not in history.stdout + history.stderr


def test_erasure_is_for_good_and_breaks_no_chain(engine: HazardLoop, db_path: Path) -> None:
    assert engine.handle(parse_command(TIP)).ok
    token = engine.get_hazard("TIP-1").reporter
    conn = sqlite3.connect(db_path)
    (wrapped,) = conn.execute("SELECT wrapped FROM tipster_keys WHERE hazard_id='TIP-1'").fetchone()
    conn.close()
    head_before = verify(db_path).head
    assert engine.vault is not None
    assert engine.vault.erase("TIP-1")
    assert engine.vault.open("TIP-1", token) is None
    assert not engine.vault.erase("TIP-1")
    after = verify(db_path)
    assert after.ok
    assert after.head == head_before  # the events and their chains are untouched
    assert bytes(wrapped) not in _file_bytes(db_path)  # the key's bytes are gone from the file
    shown = _cli("show", "TIP-1", "--db", str(db_path), "--reveal-tipster")
    assert json.loads(shown.stdout)["reporter"] == "(erased)"
    # The case still loads, in this process and in a fresh one, and its dossier proof holds.
    assert engine.get_hazard("TIP-1").reporter == token
    from adapters.dossier import build_dossier

    assert build_dossier(engine, "TIP-1")["proof"]["intact"]


def test_other_reporters_are_not_sealed(engine: HazardLoop) -> None:
    patrol = TIP | {"hazard_id": "PAT-1", "source": "patrol", "reporter": "inspector li"}
    assert engine.handle(parse_command(patrol)).ok
    hazard = engine.get_hazard("PAT-1")
    assert (hazard.reporter, hazard.reporter_sealed) == ("inspector li", False)


def test_a_retried_tip_reuses_its_key(engine: HazardLoop) -> None:
    cmd = parse_command(TIP | {"idempotency_key": "tip-upload-1"})
    first = engine.handle(cmd)
    again = engine.handle(cmd)
    assert first.ok
    assert again.ok
    assert again.replayed
    assert engine.vault is not None
    assert engine.vault.open("TIP-1", engine.get_hazard("TIP-1").reporter) == NAME


def test_stored_v1_events_load_into_todays_model(db_path: Path, clock: FakeClock) -> None:
    """Events captured from the store before Discovered v2, inserted as stored bytes."""
    captured = json.loads((DATA / "stored_v1_case.json").read_text(encoding="utf-8"))["events"]
    app = build_engine(Settings(db=str(db_path)), clock=clock)
    try:
        conn = sqlite3.connect(db_path)
        with conn:
            conn.executemany(
                "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                "VALUES (?,?,?,?)",
                [(e["originator_id"], e["originator_version"], e["topic"],
                  e["state"].encode()) for e in captured],
            )  # fmt: skip
        conn.close()
        first = json.loads(captured[0]["state"])
        assert "class_version" not in first
        assert "reporter_sealed" not in first
        hazard = app.get_hazard(first["hazard_id"])
        assert isinstance(hazard, Hazard)
        assert hazard.version == len(captured)
        assert hazard.status.value == "closed"
        assert hazard.reporter_sealed is False
        assert hazard.reporter == first["reporter"]
        assert hazard.extension_count == 1
        # And today's code writes v2, which loads back the same way.
        assert app.handle(parse_command(TIP)).ok
        conn = sqlite3.connect(db_path)
        (state,) = conn.execute(
            "SELECT state FROM stored_events WHERE topic LIKE '%Discovered' "
            "ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        conn.close()
        assert json.loads(state)["class_version"] == 2
    finally:
        app.close()


@pytest.mark.parametrize("bad", ["not-base64!", "c2hvcnQ="])
def test_a_bad_master_key_is_a_clear_error(db_path: Path, bad: str) -> None:
    from loop.errors import StoreError

    with pytest.raises(StoreError, match="HAZARDLOOP_CIPHER_KEY"):
        build_engine(Settings(db=str(db_path), cipher_key=bad))
