"""Every example of docs/subscriptions.md runs as written: shell, curl and Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from adapters.webhooks import sign
from tests.e2e.receiver import doc_blocks, doc_verify, free_port


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HAZARDLOOP_LOG_LEVEL": "warning",
        "HOME": str(tmp_path),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def test_subscribe_deliver_verify_and_curl_run_as_written(tmp_path: Path) -> None:
    bash = doc_blocks("bash")
    python = doc_blocks("python")
    assert len(bash) == 3
    assert len(python) == 2
    receiver = next(b for b in python if "def verify(" in b)
    reader = next(b for b in python if "read_feed" in b)
    port = str(free_port())
    (tmp_path / "receiver.py").write_text(receiver.replace("8765", port), encoding="utf-8")
    script = "\n".join(b.replace("8765", port) for b in bash)
    # The receiver started in the background by the first block goes when the script ends.
    wrapped = "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script
    ran = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", wrapped],
        capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), check=False,
        timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, f"{ran.stdout}\n---\n{ran.stderr}"
    lines = ran.stdout.splitlines()
    # `webhooks add` printed the subscriber with its secret; `list` shows both, never a secret.
    subscribers = [json.loads(x) for x in lines if x.startswith('{"id"') and '"url"' in x]
    assert [s["id"] for s in subscribers] == [1, 1, 2]
    assert '{"id":2,"paused":true}' in lines
    assert "secret" in subscribers[0]
    assert all("secret" not in s for s in subscribers[1:])
    assert subscribers[2]["active"] is False
    gateway = json.loads((tmp_path / "sms-subscriber.json").read_text())
    assert gateway["filters"] == {
        "events": ["Hazard.Assigned", "Hazard.Extended"], "grids": ["D01-S02*"], "grades": [],
    }  # fmt: skip
    assert gateway["position"] == 4  # from now on
    # The receiver kept the major hazard's three events, in order; the curl ping came after.
    # (`apply` saved its batch in one transaction, case by case: JY-2026-0101 first.)
    kept = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["position"], e["type"]) for e in kept] == [
        (1, "Hazard.Discovered"), (2, "Hazard.Reported"), (3, "Hazard.Assigned"), (0, "Test.Ping"),
    ]  # fmt: skip
    assert all(e["subject"]["id"] == "JY-2026-0101" for e in kept[:3])
    assert lines[-2:] == ["204", "401"]  # the signed curl is accepted, the forged one refused
    # The Python feed reader prints the four events and saves where it stopped.
    read = subprocess.run(
        [sys.executable, "-c", reader],
        capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), check=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert [x.split()[:3] for x in read.stdout.splitlines()] == [
        ["1", "Hazard.Discovered", "JY-2026-0101"],
        ["2", "Hazard.Reported", "JY-2026-0101"],
        ["3", "Hazard.Assigned", "JY-2026-0101"],  # one batch commits case by case
        ["4", "Hazard.Discovered", "JY-2026-0102"],
    ]
    assert (tmp_path / "feed.position").read_text() == "4"
    again = subprocess.run(
        [sys.executable, "-c", reader],
        capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), check=False,
    )  # fmt: skip
    assert again.returncode == 0
    assert again.stdout == ""  # resumed after 4: nothing new


def test_the_documented_verify_accepts_the_workers_signature_and_nothing_else() -> None:
    verify = doc_verify()
    body = b'{"position":7,"type":"Hazard.Assigned"}'
    now = str(int(time.time()))
    secret = "s3cret-s3cret-s3cret"
    good = sign(secret, now, body)
    assert verify(secret, now, body, good)
    assert not verify("another-secret-0000", now, body, good)
    assert not verify(secret, now, body + b" ", good)
    assert not verify(secret, str(int(now) + 1), body, good)  # the timestamp is signed
    stale = str(int(time.time()) - 3600)
    assert not verify(secret, stale, body, sign(secret, stale, body))  # a replay, an hour later
    assert not verify(secret, "yesterday", body, good)
