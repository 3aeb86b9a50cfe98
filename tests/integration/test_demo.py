"""The demo district is realistic, deterministic and goes through every path of the loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from adapters.bootstrap import Settings, build_engine
from adapters.demo import AS_OF, build_district
from loop.lifecycle import Status

ROOT = Path(__file__).resolve().parents[2]


class TestDemo:
    """`hazardloop demo` builds a district through the contract, the same way every time."""

    def test_the_district_covers_every_status_and_every_side_path(self, tmp_path: Path) -> None:
        summary = build_district(str(tmp_path / "d.db"), hazards=400)
        assert summary["hazards"] == 400
        assert set(summary["status"]) == {s.value for s in Status}
        assert all(n > 0 for n in summary["side_paths"].values()), summary["side_paths"]
        assert summary["overdue_now"] > 0
        engine = build_engine(Settings(db=str(tmp_path / "d.db")), clock=lambda: AS_OF)
        try:
            events = {
                type(e).__name__ for i in range(1, 401) for e in engine.history(f"D01-2026-{i:05d}")
            }
        finally:
            engine.close()
        assert events >= {
            "Discovered", "Reported", "Assigned", "Rectified", "Verified", "Closed", "Rejected",
            "Returned", "Reassigned", "Extended", "Parked", "Resumed", "VerificationFailed",
            "Reopened", "Regraded", "Escalated",
        }  # fmt: skip

    def test_the_same_seed_builds_the_same_district(self, tmp_path: Path) -> None:
        first = build_district(str(tmp_path / "a.db"), hazards=120, seed=7)
        second = build_district(str(tmp_path / "b.db"), hazards=120, seed=7)
        other = build_district(str(tmp_path / "c.db"), hazards=120, seed=8)
        first.pop("db"), second.pop("db"), other.pop("db")
        assert first == second
        assert first != other
        a = (tmp_path / "a.db").read_bytes()
        assert len(a) > 0

    def test_the_cli_builds_it_and_refuses_to_overwrite_without_fresh(self, tmp_path: Path) -> None:
        db = tmp_path / "demo.db"
        run = [sys.executable, "-m", "adapters.cli", "demo", "--db", str(db)]
        built = subprocess.run([*run, "--hazards", "60"], capture_output=True, text=True, cwd=ROOT)
        assert built.returncode == 0, built.stderr
        assert "Demo district D01" in built.stdout
        again = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
        assert again.returncode == 2
        assert "--fresh" in again.stderr
