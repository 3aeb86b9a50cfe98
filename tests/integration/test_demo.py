"""The demo district: built through the contract, deterministic, and covering the whole loop."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import Settings, build_engine
from adapters.demo import AS_OF, build_district
from loop.application import HazardLoop
from loop.hazard import Hazard
from loop.lifecycle import Status
from tests.conftest import PgCluster, StoreFactory

ROOT = Path(__file__).resolve().parents[2]
HAZARDS = 400

SIDE_PATH_EVENTS = {
    "Rejected",
    "Returned",
    "Reassigned",
    "Extended",
    "Parked",
    "Resumed",
    "VerificationFailed",
    "Reopened",
    "Regraded",
    "Escalated",
}


@pytest.fixture(scope="module")
def district(
    tmp_path_factory: pytest.TempPathFactory, store_factory: StoreFactory
) -> dict[str, Any]:
    db = store_factory(tmp_path_factory.mktemp("demo"), "district")
    return build_district(db, hazards=HAZARDS)


@pytest.fixture(scope="module")
def demo(district: dict[str, Any]) -> Iterator[HazardLoop]:
    engine = build_engine(Settings(db=district["db"]), clock=lambda: AS_OF)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def histories(demo: HazardLoop) -> dict[str, list[Hazard.Event]]:
    ids = [f"D01-2026-{i:05d}" for i in range(1, HAZARDS + 1)]
    return {hazard_id: demo.history(hazard_id) for hazard_id in ids}


class TestDemoDistrict:
    """`build_district` plays a quarter of hazard work through the engine, identically each time."""

    def test_it_builds_with_every_command_accepted(self, district: dict[str, Any]) -> None:
        # build_district raises if the engine refused a single command.
        assert district["hazards"] == HAZARDS
        assert district["events"] == district["commands"] > 5 * HAZARDS
        assert sum(district["by_status"].values()) == HAZARDS

    def test_the_same_seed_builds_the_same_district(
        self, tmp_path: Path, store_factory: StoreFactory
    ) -> None:
        first = build_district(store_factory(tmp_path, "a"), hazards=150, seed=7)
        second = build_district(store_factory(tmp_path, "b"), hazards=150, seed=7)
        other = build_district(store_factory(tmp_path, "c"), hazards=150, seed=8)
        for summary in (first, second, other):
            summary.pop("db")
        assert first == second
        assert first != other

    def test_every_status_of_the_lifecycle_appears(self, district: dict[str, Any]) -> None:
        assert {s for s, n in district["by_status"].items() if n > 0} == {s.value for s in Status}
        assert set(district["samples"]) == {s.value for s in Status}

    def test_every_side_path_event_is_in_the_store(
        self, histories: dict[str, list[Hazard.Event]]
    ) -> None:
        kinds = Counter(type(e).__name__ for events in histories.values() for e in events)
        assert {k for k in SIDE_PATH_EVENTS if kinds[k] >= 2} == SIDE_PATH_EVENTS, kinds

    def test_the_sample_ids_show_their_status(
        self, district: dict[str, Any], demo: HazardLoop
    ) -> None:
        for status, hazard_id in district["samples"].items():
            assert demo.get_hazard(hazard_id).status.value == status

    def test_some_hazards_were_fixed_on_the_spot_and_verified_by_someone_else(
        self, demo: HazardLoop, histories: dict[str, list[Hazard.Event]]
    ) -> None:
        fixed = [h for h in histories if demo.get_hazard(h).fixed_on_spot]
        assert len(fixed) >= 2
        for hazard_id in fixed:
            events = histories[hazard_id]
            verified = [e for e in events if isinstance(e, Hazard.Verified)]
            assert all(e.actor != events[0].actor for e in verified)

    def test_rejections_include_duplicates_of_known_hazards(
        self, district: dict[str, Any], demo: HazardLoop
    ) -> None:
        assert district["duplicates"] >= 2
        duplicate = demo.get_hazard(district["side_path_samples"]["duplicate"])
        assert duplicate.duplicate_of is not None
        assert demo.exists(duplicate.duplicate_of)

    def test_business_times_lie_in_the_past_and_never_go_backwards(
        self, histories: dict[str, list[Hazard.Event]]
    ) -> None:
        for events in histories.values():
            ats = [e.at for e in events]
            assert ats == sorted(ats)
            assert ats[-1] <= AS_OF
            assert ats[0].date().isoformat() < "2026-10-01"

    def test_some_open_cases_are_overdue_and_some_steps_were_late(
        self, district: dict[str, Any]
    ) -> None:
        assert 0 < district["overdue"] < district["open"]
        assert all(n > 0 for n in district["late_steps"].values())
        assert district["escalations_by_level"].keys() >= {"reminder", "supervision_letter"}

    def test_major_hazards_are_about_one_in_ten(self, district: dict[str, Any]) -> None:
        assert 0.05 * HAZARDS < district["by_grade"]["major"] < 0.2 * HAZARDS


class TestDemoCommand:
    """`hazardloop demo` builds the district from the command line and prints what it holds."""

    def test_the_cli_builds_a_fresh_district_and_exits_zero(self, tmp_path: Path) -> None:
        db = tmp_path / "d.db"
        db.write_bytes(b"an old file that --fresh replaces")
        run = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "demo", "--db", str(db), "--fresh"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "Demo district D01" in run.stdout
        assert "hazardloop show D01-2026-" in run.stdout
        assert "已销号" in run.stdout

    def test_on_postgresql_it_builds_in_an_empty_database_and_never_deletes_one(
        self, pg_cluster: PgCluster, tmp_path: Path
    ) -> None:
        name = pg_cluster.create("demo_cli", empty=True)
        url = pg_cluster.url(name)
        env = {**os.environ, "HAZARDLOOP_CIPHER_KEY_FILE": str(tmp_path / "master.key")}

        def demo(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "adapters.cli", "demo", "--db", url, "--hazards", "10",
                 *args],
                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
            )  # fmt: skip

        try:
            refused = demo("--fresh")
            assert refused.returncode == 2
            assert "--fresh deletes a SQLite file" in refused.stderr
            built = demo()
            assert built.returncode == 0, built.stderr
            assert "Demo district D01" in built.stdout
            assert (tmp_path / "demo-reports" / "overdue-2026-11-20.html").stat().st_size > 1000
            assert not any("@" in p.name for p in tmp_path.iterdir())  # no file named by the URL
            again = demo()
            assert again.returncode == 2
            assert "already holds events" in again.stderr
        finally:
            pg_cluster.drop(name)

    def test_a_postgresql_store_is_printed_without_its_password(
        self, district: dict[str, Any]
    ) -> None:
        from rich.console import Console

        from adapters.demo import print_summary

        console = Console(record=True, width=200)
        print_summary({**district, "db": "postgresql://demo:s3cret@db.example:5432/demo"}, console)
        shown = console.export_text()
        assert "s3cret" not in shown
        assert "hazardloop show D01-2026-" in shown
        assert "--db postgresql://demo@db.example:5432/demo" in shown
