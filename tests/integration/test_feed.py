"""The pull feed: contiguous, in commit order, resumable, every field as recorded, tips sealed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
from sqlalchemy import text

from adapters.bootstrap import Settings, build_engine, views_engine
from adapters.feed import MAX_LIMIT, feed_head, feed_page, read_feed
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.errors import InvalidCommand
from tests.conftest import FakeClock
from tests.e2e.receiver import TIPSTER, case_commands


def _load(engine: HazardLoop, commands: list[dict[str, Any]]) -> None:
    for cmd in commands:
        engine.handle(parse_command(cmd))


@pytest.fixture
def loaded(engine: HazardLoop) -> HazardLoop:
    _load(engine, [
        {"command": "establish_grid", "grid": "D01", "name": "District", "level": "district",
         "actor": "centre", "at": "2026-11-01T08:00:00+08:00"},
        {"command": "register_unit", "unit": "fire-brigade", "name": "Fire brigade",
         "grid": "D01", "actor": "centre", "at": "2026-11-01T08:00:00+08:00"},
    ])  # fmt: skip
    _load(engine, case_commands("FD", 12))
    return engine


def _stored(app: HazardLoop) -> list[Any]:
    """Position, topic, log hash and version of every stored event, read straight from the
    store's tables (the position is SQLite's rowid, PostgreSQL's notification_id)."""
    tables = views_engine(app)
    position = "e.rowid" if tables.dialect.name == "sqlite" else "e.notification_id"
    try:
        with tables.connect() as conn:
            return list(
                conn.execute(
                    text(
                        f"SELECT {position}, e.topic, c.log_hash, e.originator_version "
                        f"FROM stored_events e JOIN event_chain c ON c.position = {position} "
                        f"ORDER BY {position}"
                    )
                ).all()
            )
    finally:
        tables.dispose()


def test_positions_are_contiguous_in_commit_order_and_paging_resumes(
    loaded: HazardLoop, store: str
) -> None:
    head = feed_head(loaded)
    everything = read_feed(loaded, 0, MAX_LIMIT)
    assert [e["position"] for e in everything] == list(range(1, head + 1))
    stored = _stored(loaded)
    assert [(e["position"], e["type"], e["log_hash"], e["version"]) for e in everything] == [
        (rowid, topic.split(":")[1], bytes(h).hex(), version) for rowid, topic, h, version in stored
    ]
    # Page by 7 from anywhere (a fresh reader each time, as after a restart): the same items.
    for start in (0, 5, 23):
        paged: list[dict[str, Any]] = []
        after = start
        while True:
            fresh = build_engine(Settings(db=store))
            try:
                page = read_feed(fresh, after, 7)
            finally:
                fresh.close()
            if not page:
                break
            paged += page
            after = page[-1]["position"]
        assert paged == everything[start:]
    page = feed_page(loaded, head - 2, 10)
    assert [e["position"] for e in page.events] == [head - 1, head]
    assert (page.next_after, page.head) == (head, head)
    empty = feed_page(loaded, head, 10).to_dict()
    assert empty == {"events": [], "next_after": head, "head": head}


def test_items_carry_every_field_as_recorded(loaded: HazardLoop, store: str) -> None:
    items = read_feed(loaded, 0, MAX_LIMIT)
    grid, unit = items[0], items[1]
    assert grid["type"] == "Grid.Established"
    assert grid["subject"] == {"kind": "grid", "id": "D01"}
    assert grid["data"]["level"] == "district"
    assert unit["subject"] == {"kind": "unit", "id": "fire-brigade"}
    by_case: dict[str, list[dict[str, Any]]] = {}
    for item in items[2:]:
        assert item["subject"]["kind"] == "hazard"
        by_case.setdefault(item["subject"]["id"], []).append(item)
    assert len(by_case) == 12
    for hazard_id, feed_events in by_case.items():
        history = loaded.history(hazard_id)
        assert [e["version"] for e in feed_events] == [e.originator_version for e in history]
        hazard = loaded.get_hazard(hazard_id)
        for item, event in zip(feed_events, history, strict=True):
            assert item["type"] == "Hazard." + type(event).__name__
            assert item["at"] == event.at.isoformat()
            assert item["timestamp"] == event.timestamp.isoformat()
            assert item["actor"] == event.actor
            assert item["recorded_at"].endswith("+00:00")
            assert item["subject"]["grid"] == hazard.grid
            fields = {
                k: v for k, v in vars(event).items()
                if k not in {"originator_id", "originator_version", "originator_topic",
                             "timestamp", "at", "actor"}
            }  # fmt: skip
            assert item["data"].keys() == fields.keys()
            for key, value in fields.items():
                if isinstance(value, dict) and "due" in value:
                    assert item["data"][key]["due"] == value["due"].isoformat()
                else:
                    assert item["data"][key] == value, (hazard_id, key)
    # The grade is the one as of each event: FD-002 was general until regraded major.
    regraded = by_case["FD-002"]
    assert [(e["type"], e["subject"]["grade"]) for e in regraded] == [
        ("Hazard.Discovered", "general"), ("Hazard.Reported", "general"),
        ("Hazard.Assigned", "general"), ("Hazard.Regraded", "major"),
    ]  # fmt: skip
    assert regraded[-1]["data"]["previous_grade"] == "general"
    # Read from the middle of a case (a fresh reader folds the case's earlier events).
    fresh = build_engine(Settings(db=store))
    try:
        assert read_feed(fresh, regraded[-1]["position"] - 1, 1) == [regraded[-1]]
    finally:
        fresh.close()


def test_a_public_tips_reporter_stays_sealed(loaded: HazardLoop) -> None:
    items = read_feed(loaded, 0, MAX_LIMIT)
    tip = next(e for e in items if e["subject"]["id"] == "FD-000")
    assert tip["data"]["reporter_sealed"] is True
    assert tip["data"]["reporter"].startswith("sealed:v1:")
    assert tip["data"]["reporter"] == loaded.history("FD-000")[0].reporter  # as stored
    assert TIPSTER not in json.dumps(items, ensure_ascii=False)


@pytest.mark.parametrize(
    ("after", "limit"), [(-1, 10), (0, 0), (0, MAX_LIMIT + 1), (True, 10), ("3", 10)]
)
def test_bad_after_or_limit_is_refused(engine: HazardLoop, after: Any, limit: int) -> None:
    with pytest.raises(InvalidCommand) as refused:
        read_feed(engine, after, limit)
    assert refused.value.details["field"] in ("after", "limit")


def test_an_empty_log_has_an_empty_feed(engine: HazardLoop) -> None:
    assert feed_head(engine) == 0
    assert read_feed(engine, 0, 10) == []
    assert read_feed(engine, 99, 10) == []


def test_the_feed_command_prints_the_same_items(loaded: HazardLoop, store: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "feed", "--db", store,
         "--after", "3", "--limit", "1500"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "HAZARDLOOP_LOG_LEVEL": "warning"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert [json.loads(line) for line in ran.stdout.splitlines()] == read_feed(loaded, 3, MAX_LIMIT)


def test_an_event_whose_transaction_commits_late_is_never_skipped(
    loaded: HazardLoop, store: str, clock: FakeClock
) -> None:
    """Positions are handed out under the writers' lock, held until commit: a reader never sees
    a later position before an earlier one has committed, so resuming never skips one."""
    slow = loaded
    quick = build_engine(Settings(db=store), clock=clock)
    reader = build_engine(Settings(db=store))
    head = feed_head(reader)
    inside, release = threading.Event(), threading.Event()
    chain = slow.recorder._chain  # type: ignore[attr-defined]

    def chain_then_wait(*args: Any, **kwargs: Any) -> None:
        chain(*args, **kwargs)  # positions taken and chained, not yet committed
        inside.set()
        release.wait(30)

    slow.recorder._chain = chain_then_wait  # type: ignore[attr-defined]
    done: list[str] = []

    def write(app: HazardLoop, hazard_id: str) -> None:
        app.handle(parse_command(_discover(hazard_id)))
        done.append(hazard_id)

    first = threading.Thread(target=write, args=(slow, "LATE-1"))
    second = threading.Thread(target=write, args=(quick, "LATE-2"))
    try:
        first.start()
        assert inside.wait(30), "the first writer never reached its commit"
        second.start()
        second.join(1.0)  # it waits for the first writer's lock
        assert second.is_alive()
        assert done == []
        assert read_feed(reader, head, 10) == []  # nothing visible while the first is open
        assert feed_head(reader) == head
        release.set()
        first.join(30)
        second.join(30)
    finally:
        release.set()
        slow.recorder._chain = chain  # type: ignore[attr-defined]
        quick.close()
    # Both went through; which thread returned first after the commits is theirs to race (the
    # order that matters is the positions', below).
    assert sorted(done) == ["LATE-1", "LATE-2"]
    after = read_feed(reader, head, 10)
    reader.close()
    assert [(e["position"], e["subject"]["id"]) for e in after] == [
        (head + 1, "LATE-1"),
        (head + 2, "LATE-2"),
    ]


def _discover(hazard_id: str) -> dict[str, Any]:
    return {
        "command": "discover", "hazard_id": hazard_id, "actor": "wang.grid",
        "at": "2026-11-03T09:00:00+08:00", "grid": "D01-S01-C01", "category": "fire",
        "grade": "general", "title": "Late commit",
    }  # fmt: skip
