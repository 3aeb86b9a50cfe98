"""Real processes racing on one hazard in one store: one wins, the other is told so.

The race is made certain, not likely: the test holds the store's write lock while both
processes load the case, so both decide on the same version before either can write.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from adapters.bootstrap import Settings, build_engine
from loop.commands import parse_command
from tests.integration.test_transitions import T0, command
from tests.stores import write_lock

WORKER = r"""
import json, sys
from adapters.bootstrap import Settings, build_engine
from loop.commands import parse_command
from loop.errors import HazardLoopError
db, payload, rounds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
engine = build_engine(Settings(db=db))
print("ready", flush=True)
outcomes = []
for i in range(rounds):
    cmd = dict(payload)
    cmd["note"] = f"{payload['note']}-{i}"
    try:
        result = engine.handle(parse_command(cmd))
        outcomes.append({"ok": True, "version": result.version})
    except HazardLoopError as exc:
        outcomes.append({"ok": False, "code": exc.code})
print(json.dumps(outcomes), flush=True)
"""


def start_worker(db: str, payload: dict[str, object], rounds: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, db, json.dumps(payload), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def seed(db: str) -> int:
    engine = build_engine(Settings(db=db))
    try:
        engine.handle(parse_command(command("discover", "H", T0)))
        return engine.get_hazard("H").version
    finally:
        engine.close()


def escalation(note: str) -> dict[str, object]:
    return {"command": "escalate", "hazard_id": "H", "actor": "centre", "level": "reminder",
            "note": note}  # fmt: skip


class TestTwoProcesses:
    """Two writers on one case: exactly one wins, and the history stays whole."""

    def test_one_wins_and_the_other_gets_concurrency_conflict(self, store: str) -> None:
        db = store
        version = seed(db)
        with write_lock(db):  # hold the write lock: both will load version 1
            workers = [start_worker(db, escalation(name)) for name in ("a", "b")]
            for w in workers:
                assert w.stdout is not None
                assert w.stdout.readline().strip() == "ready"
            time.sleep(1.5)  # both now wait on the lock, each holding the case at `version`
        outcomes = []
        for w in workers:
            out, err = w.communicate(timeout=60)
            assert w.returncode == 0, err
            outcomes.extend(json.loads(out.strip().splitlines()[-1]))
        assert sorted(o.get("code", "ok") for o in outcomes) == ["concurrency_conflict", "ok"]
        engine = build_engine(Settings(db=db))
        try:
            history = engine.history("H")
            assert [e.originator_version for e in history] == [1, 2]
            assert engine.get_hazard("H").version == version + 1
        finally:
            engine.close()

    def test_hammering_writers_lose_and_duplicate_nothing(self, store: str) -> None:
        db = store
        seed(db)
        workers = [start_worker(db, escalation(name), rounds=60) for name in ("a", "b", "c")]
        outcomes = []
        for w in workers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            outcomes.extend(json.loads(out.strip().splitlines()[-1]))
        accepted = [o for o in outcomes if o["ok"]]
        assert {o.get("code") for o in outcomes if not o["ok"]} <= {"concurrency_conflict"}
        engine = build_engine(Settings(db=db))
        try:
            history = engine.history("H")
            versions = [e.originator_version for e in history]
            assert versions == list(range(1, len(accepted) + 2))  # gapless, nothing lost
            notes = [getattr(e, "note", None) for e in history[1:]]
            assert len(notes) == len(set(notes))  # nothing recorded twice
            assert sorted(o["version"] for o in accepted) == versions[1:]
        finally:
            engine.close()
