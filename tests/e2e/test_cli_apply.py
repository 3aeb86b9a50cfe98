"""`hazardloop apply` as an operator runs it: a real process, a real file, a real store."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHANGHAI, store_env
from tests.stores import event_count

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)


def hazardloop(
    *args: str, stdin: str | None = None, log_level: str = "warning"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": log_level, **store_env()},
        timeout=600,
    )


def loop_of(hazard_id: str, start: datetime) -> list[dict[str, Any]]:
    """The straight six-step loop for one general hazard, an hour between steps."""
    steps: list[dict[str, Any]] = [
        {"command": "discover", "actor": "wang", "grid": "D01-S01-C01", "category": "fire",
         "grade": "general", "title": "blocked exit"},
        {"command": "report", "actor": "wang"},
        {"command": "assign", "actor": "li", "unit": "fire-brigade", "person": "zhao"},
        {"command": "rectify", "actor": "zhao", "note": "cleared"},
        {"command": "verify", "actor": "wang", "passed": True},
        {"command": "close", "actor": "li"},
    ]  # fmt: skip
    return [
        {**s, "hazard_id": hazard_id, "at": (start + timedelta(hours=i)).isoformat()}
        for i, s in enumerate(steps)
    ]


class TestMixedFile:
    """A file mixing valid lines with each kind of bad line applies exactly the valid ones."""

    def test_every_bad_line_is_reported_by_number_and_the_good_ones_apply(
        self, tmp_path: Path, store: str
    ) -> None:
        good = loop_of("H1", T0)
        lines: list[str] = [
            json.dumps(good[0]),  # 1 ok
            "{not json",  # 2 malformed_json
            json.dumps({"command": "teleport", "hazard_id": "H1", "actor": "x"}),  # 3
            json.dumps({"command": "report", "hazard_id": "H1"}),  # 4 missing actor
            json.dumps({**good[4], "passed": "yes"}),  # 5 wrongly typed
            json.dumps({**good[1], "at": "2026-09-01 10:00"}),  # 6 bad timestamp
            json.dumps(good[3]),  # 7 refused transition (rectify before report)
            "",  # 8 blank: skipped
            json.dumps(good[1]),  # 9 ok
            json.dumps({**good[1], "hazard_id": "ghost"}),  # 10 unknown id
            json.dumps(["a", "list"]),  # 11 not an object
            json.dumps(good[2]),  # 12 ok
        ]
        src = tmp_path / "mixed.jsonl"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        db = store
        proc = hazardloop("apply", str(src), "--db", db)
        assert proc.returncode == 1, proc.stderr
        results = [json.loads(x) for x in proc.stdout.splitlines()]
        verdicts = {r["line"]: (r["ok"], r.get("error", {}).get("code")) for r in results}
        assert verdicts == {
            1: (True, None),
            2: (False, "malformed_json"),
            3: (False, "unknown_command"),
            4: (False, "invalid_command"),
            5: (False, "invalid_command"),
            6: (False, "invalid_command"),
            7: (False, "invalid_transition"),
            9: (True, None),
            10: (False, "hazard_not_found"),
            11: (False, "malformed_json"),
            12: (True, None),
        }
        assert results[3]["error"]["details"]["fields"][0]["field"] == "actor"
        assert results[4]["error"]["details"]["fields"][0]["field"] == "passed"
        assert results[5]["error"]["details"]["fields"][0]["field"] == "at"
        assert event_count(db) == 3
        ok = [r for r in results if r["ok"]]
        assert [(r["event"], r["version"], r["status"]) for r in ok] == [
            ("Discovered", 1, "discovered"),
            ("Reported", 2, "reported"),
            ("Assigned", 3, "assigned"),
        ]

    def test_a_clean_file_exits_zero_and_reads_from_stdin(self, store: str) -> None:
        text = "\n".join(json.dumps(c) for c in loop_of("H1", T0)) + "\n"
        proc = hazardloop("apply", "-", "--db", store, stdin=text)
        assert proc.returncode == 0, proc.stderr
        assert [json.loads(x)["status"] for x in proc.stdout.splitlines()][-1] == "closed"

    def test_each_command_logs_one_json_line_on_stderr(self, store: str) -> None:
        cmds = [*loop_of("H1", T0)[:2], loop_of("H1", T0)[5]]
        text = "\n".join(json.dumps(c) for c in cmds) + "\n"
        proc = hazardloop("apply", "-", "--db", store, stdin=text, log_level="info")
        logs = [json.loads(x) for x in proc.stderr.splitlines()]
        assert [
            (x["hazard_id"], x["command"], x["actor"], x["outcome"], x["line"]) for x in logs
        ] == [
            ("H1", "discover", "wang", "Discovered", 1),
            ("H1", "report", "wang", "Reported", 2),
            ("H1", "close", "li", "invalid_transition", 3),
        ]
        assert all(isinstance(x["duration_ms"], float) for x in logs)
        assert [x["level"] for x in logs] == ["info", "info", "warning"]

    def test_an_unreadable_input_file_is_a_usage_error(self, tmp_path: Path) -> None:
        proc = hazardloop("apply", str(tmp_path / "missing.jsonl"), "--db", str(tmp_path / "h.db"))
        assert proc.returncode == 2
        assert "missing.jsonl" in proc.stderr

    def test_an_unusable_store_is_a_store_error(self, tmp_path: Path) -> None:
        src = tmp_path / "one.jsonl"
        src.write_text(json.dumps(loop_of("H1", T0)[0]) + "\n")
        not_a_db = tmp_path / "junk.db"
        not_a_db.write_bytes(b"this is not a database" * 100)
        proc = hazardloop("apply", str(src), "--db", str(not_a_db))
        assert proc.returncode == 2
        assert "store_error" in proc.stderr

    def test_show_and_history_print_json_when_piped(self, store: str) -> None:
        db = store
        text = "\n".join(json.dumps(c) for c in loop_of("H1", T0)[:3]) + "\n"
        assert hazardloop("apply", "-", "--db", db, stdin=text).returncode == 0
        shown = json.loads(hazardloop("show", "H1", "--db", db).stdout)
        assert (shown["status"], shown["step"], shown["holder"]) == (
            "assigned",
            "rectify",
            "fire-brigade",
        )
        assert shown["due"] == "2026-09-15T23:59:59+08:00"  # 10 working days after 1 September
        history = [
            json.loads(x) for x in hazardloop("history", "H1", "--db", db).stdout.splitlines()
        ]
        assert [h["event"] for h in history] == ["Discovered", "Reported", "Assigned"]
        assert all(h["recorded_at"] and h["at"] and h["actor"] for h in history)
        missing = hazardloop("show", "ghost", "--db", db)
        assert missing.returncode == 1
        assert "hazard_not_found" in missing.stderr


class TestWriterProcess:
    """`apply` stores batches in a writer process on SQLite (`--no-writer`: in its own): the
    printed results and the stored log are the same either way."""

    def test_the_same_results_with_and_without_the_writer(
        self, tmp_path: Path, store_factory: Any
    ) -> None:
        src = tmp_path / "loops.jsonl"
        loops = 3000  # enough work for the writer to start and take most batches
        with src.open("w", encoding="utf-8") as f:
            for i in range(loops):
                for cmd in loop_of(f"W{i:04d}", T0 + timedelta(minutes=i)):
                    f.write(json.dumps(cmd) + "\n")
            f.write(json.dumps(loop_of("W0000", T0)[0]) + "\n")  # taken id: refused
        outputs = []
        for flag in ("--writer", "--no-writer"):
            db = store_factory(tmp_path, flag.strip("-"))
            proc = hazardloop(
                "apply", str(src), "--db", db, "--batch-size", "50", flag, log_level="info"
            )
            assert proc.returncode == 1, proc.stderr[-2000:]  # one refused line
            printed = [json.loads(line) for line in proc.stdout.splitlines()]
            for result in printed:
                result.pop("duration_ms", None)
            outputs.append(printed)
            assert event_count(db) == 6 * loops
            verified = hazardloop("audit", "verify", "--db", db)
            assert verified.returncode == 0, verified.stderr
            logs = proc.stderr.splitlines()
            logged = [json.loads(line) for line in logs if "bulk writer" in line]
            if flag == "--writer" and "://" not in db:  # SQLite: the writer stored batches
                assert len(logged) == 1, proc.stderr[-2000:]
                assert logged[0]["batches"] > 0
            else:
                assert logged == []
        assert outputs[0] == outputs[1]
        assert len(outputs[0]) == 6 * loops + 1
        assert outputs[0][-1]["error"]["code"] == "hazard_already_exists"


@pytest.mark.slow
class TestLargeFile:
    """A 100,000-line file goes through in one streaming pass."""

    def test_one_hundred_thousand_lines_apply_in_one_pass_with_bounded_memory(
        self, tmp_path: Path, store: str
    ) -> None:
        src = tmp_path / "big.jsonl"
        hazards = 100_000 // 5
        with src.open("w", encoding="utf-8") as f:
            for i in range(hazards):
                for cmd in loop_of(f"H{i:06d}", T0 + timedelta(minutes=i % 600))[:5]:
                    f.write(json.dumps(cmd) + "\n")
        db = store
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = hazardloop("apply", str(src), "--db", db)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.count("\n") == 100_000
        assert event_count(db) == 100_000
        # Streaming: the process never held the file (~25 MB) or its results in memory at once;
        # the bound leaves room for the interpreter, libraries and the recent-cases cache.
        assert max(before, peak_kib) < 400 * 1024
