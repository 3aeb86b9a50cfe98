"""`hazardloop db init|upgrade` on an empty store, an initialised one and an older one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from adapters.bootstrap import Settings, build_engine
from adapters.http import create_app
from adapters.store import parse_db
from loop.commands import parse_command
from tests.apiclient import ApiClient, issue
from tests.conftest import StoreFactory
from tests.stores import rows

ROOT = Path(__file__).resolve().parents[2]
EVENT_TABLES = {"stored_events", "idempotency_keys", "event_chain", "chain_head", "tipster_keys"}
VIEW_TABLES = {"ledger", "step_segments", "grids", "post_tenures", "projection_tracking"}
#: Created by `db init` too, so a runtime user without CREATE rights finds them.
API_TABLES = {"api_tokens", "webhook_subscribers"}


def hazardloop(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, input=stdin,
        env={**os.environ, "HAZARDLOOP_LOG_LEVEL": "warning"},
    )  # fmt: skip


def _names(store: str, postgres_sql: str, sqlite_sql: str) -> set[str]:
    """The names the store's catalogue query gives (the first column), on either store."""
    return {str(r[0]) for r in rows(store, postgres_sql if "://" in store else sqlite_sql)}


def tables(store: str) -> set[str]:
    return _names(
        store,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        "SELECT name FROM sqlite_master WHERE type = 'table'",
    ) - {"sqlite_sequence"}


def views(store: str) -> set[str]:
    return _names(
        store,
        "SELECT viewname FROM pg_views WHERE schemaname = 'public'",
        "SELECT name FROM sqlite_master WHERE type = 'view'",
    )


def test_init_creates_every_table_of_an_empty_store_and_may_run_again(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    db = store_factory(tmp_path, "empty", empty=True)
    assert tables(db) == set() if "://" in db else not Path(db).exists()
    first = hazardloop("db", "init", "--db", db)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert set(out["tables"]) == EVENT_TABLES | VIEW_TABLES | API_TABLES == tables(db)
    assert out["views"] == ["steps"] == sorted(views(db))
    assert out["events"] == 0
    assert out["backend"] == ("postgres" if "://" in db else "sqlite")
    again = hazardloop("db", "init", "--db", db)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["tables"] == out["tables"]


def test_upgrade_rebuilds_a_read_model_whose_columns_changed(store: str) -> None:
    app = build_engine(Settings(db=store))
    try:
        app.handle(parse_command({
            "command": "discover", "hazard_id": "U-1", "actor": "wang", "grid": "G1",
            "category": "fire", "grade": "general", "title": "old store",
            "at": "2026-11-20T09:00:00+08:00"}))  # fmt: skip
    finally:
        app.close()
    caught = hazardloop("projections", "catch-up", "--db", store)
    assert caught.returncode == 0, caught.stderr
    # An older version's ledger: one column more than today's.
    rows(store, "ALTER TABLE ledger ADD COLUMN state TEXT")
    upgraded = hazardloop("db", "upgrade", "--db", store)
    assert upgraded.returncode == 0, upgraded.stderr
    out = json.loads(upgraded.stdout)
    assert out["to_rebuild"] == ["cases"]
    assert out["events"] == 1
    assert "state" not in {
        str(r[0])
        for r in (
            rows(store, "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'ledger'")
            if "://" in store
            else rows(store, "SELECT name FROM pragma_table_info('ledger')")
        )
    }  # fmt: skip
    again = hazardloop("projections", "catch-up", "--db", store)
    assert again.returncode == 0, again.stderr
    assert rows(store, "SELECT hazard_id FROM ledger") == [("U-1",)]


def test_upgrade_turns_an_older_steps_table_into_the_view(store: str) -> None:
    """Before the `steps` view, step occurrences were a table of their own: `db upgrade` drops
    it, the cases projection (whose segments gained columns) is rebuilt, and `steps` reads the
    same occurrences from the segments."""
    app = build_engine(Settings(db=store))
    try:
        for command in ({"command": "discover", "grid": "G1", "category": "fire",
                         "grade": "general", "title": "old store"},
                        {"command": "report"}):  # fmt: skip
            app.handle(parse_command({**command, "hazard_id": "U-1", "actor": "wang",
                                      "at": "2026-11-20T09:00:00+08:00"}))  # fmt: skip
    finally:
        app.close()
    assert hazardloop("projections", "catch-up", "--db", store).returncode == 0
    # The older version's schema: a `steps` table, and segments without today's last columns.
    rows(store, "DROP VIEW steps")
    rows(store, "CREATE TABLE steps (hazard_id VARCHAR(64), occurrence INTEGER, "
                "PRIMARY KEY (hazard_id, occurrence))")  # fmt: skip
    rows(store, "INSERT INTO steps VALUES ('U-1', 1)")
    rows(store, "DROP INDEX ix_segments_latest_due")  # over `latest`: SQLite drops no index
    rows(store, "ALTER TABLE step_segments DROP COLUMN latest")
    upgraded = hazardloop("db", "upgrade", "--db", store)
    assert upgraded.returncode == 0, upgraded.stderr
    out = json.loads(upgraded.stdout)
    assert out["to_rebuild"] == ["cases"]
    assert "steps" not in out["tables"]
    assert out["views"] == ["steps"]
    assert hazardloop("projections", "catch-up", "--db", store).returncode == 0
    got = rows(store, "SELECT hazard_id, occurrence, step, outcome FROM steps ORDER BY occurrence")
    assert got == [("U-1", 1, "report", "Reported"), ("U-1", 2, "assign", None)]


def test_a_bad_store_url_is_a_store_error() -> None:
    bad = hazardloop("db", "init", "--db", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert bad.returncode == 2
    assert "store_error" in bad.stderr
    assert "127.0.0.1" in bad.stderr
    scheme = hazardloop("db", "upgrade", "--db", "mysql://x@y/z")
    assert scheme.returncode == 2
    assert "'mysql'" in scheme.stderr


def _commands(name: str, hazards: int, hour: int) -> str:
    at = f"2026-11-{2 + hour // 24:02d}T{hour % 24:02d}:00:00+08:00"
    extra = {
        "discover": {"grid": "G1", "category": "fire", "grade": "general", "title": "闸门"},
        "assign": {"unit": "U1", "person": "li"},
    }.get(name, {})
    return "".join(
        json.dumps({"command": name, "hazard_id": f"L-{i:04d}", "actor": "wang", "at": at}
                   | extra) + "\n"
        for i in range(hazards)
    )  # fmt: skip


def test_a_role_that_may_not_create_tables_runs_the_engine_after_init(
    store_factory: StoreFactory, store_kind: str, tmp_path: Path
) -> None:
    """PostgreSQL, locked down: the owner runs `db init`; the runtime role may read and write
    rows but create no table (and no temporary table). Commands, catch-ups (enough changed
    rows for the views' writer to want a temporary table), a report, the nightly job with its
    escalations, a new API token, the HTTP API (a command, the ledger), a webhook subscriber
    and the push worker, and `audit verify` work."""
    if store_kind != "postgres":
        pytest.skip("database roles and their privileges are PostgreSQL's")
    db = store_factory(tmp_path, "locked", empty=True)
    init = hazardloop("db", "init", "--db", db)
    assert init.returncode == 0, init.stderr
    role = f"runtime_{uuid.uuid4().hex[:8]}"
    dbname = parse_db(db).psycopg_kwargs()["dbname"]
    for sql in (
        f'CREATE ROLE "{role}" LOGIN',
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f'REVOKE TEMPORARY ON DATABASE "{dbname}" FROM PUBLIC',
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
    ):
        rows(db, sql)
    runtime = db.replace(f"{parse_db(db).psycopg_kwargs()['user']}@", f"{role}@", 1)
    assert runtime != db
    try:
        hazards = 250  # over the writer's COPY_FROM: the second catch-up changes 500 rows
        for hour, name in ((9, "discover"), (10, "report")):
            applied = hazardloop(
                "apply", "-", "--db", runtime, stdin=_commands(name, hazards, hour)
            )
            assert applied.returncode == 0, applied.stderr
        first = hazardloop("projections", "catch-up", "--db", runtime)
        assert first.returncode == 0, first.stderr
        applied = hazardloop("apply", "-", "--db", runtime, stdin=_commands("assign", hazards, 11))
        assert applied.returncode == 0, applied.stderr
        second = hazardloop("projections", "catch-up", "--db", runtime)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["events"] == hazards
        assert rows(db, "SELECT status, COUNT(*) FROM ledger GROUP BY status") == [
            ("assigned", hazards)
        ]
        report = hazardloop("report", "overdue", "--db", runtime, "--format", "json",
                            "--as-of", "2026-12-30T09:00:00+08:00")  # fmt: skip
        assert report.returncode == 0, report.stderr
        assert len(json.loads(report.stdout)["rows"]) == hazards
        nightly = hazardloop("nightly", "--db", runtime, "--out", str(tmp_path / "nightly"),
                             "--as-of", "2026-12-30", "--escalate")  # fmt: skip
        assert nightly.returncode == 0, nightly.stderr
        assert len(list((tmp_path / "nightly").glob("overdue-2026-12-30.*"))) == 4
        token = hazardloop("tokens", "create", "--db", runtime, "--actor", "centre",
                           "--role", "command_centre", "--grid", "*")  # fmt: skip
        assert token.returncode == 0, token.stderr
        # The push worker: a subscriber whose receiver is down (a closed port) is tried once,
        # its failure recorded, and the worker says events are pending (exit 1, not 2).
        head = rows(db, "SELECT MAX(notification_id) FROM stored_events")[0][0]
        added = hazardloop("webhooks", "add", "http://127.0.0.1:9/hook", "--after",
                           str(head - 1), "--db", runtime)  # fmt: skip
        assert added.returncode == 0, added.stderr
        pushed = hazardloop("webhooks", "run", "--once", "--attempts", "1", "--timeout", "0.5",
                            "--backoff", "0.01", "--db", runtime)  # fmt: skip
        assert pushed.returncode == 1, pushed.stderr
        assert "pending" in pushed.stderr
        assert rows(db, "SELECT failures, last_error IS NOT NULL FROM webhook_subscribers") == [
            (1, True)
        ]
        escalated = rows(db, "SELECT COUNT(*) FROM stored_events")[0][0] - 3 * hazards
        assert escalated >= hazards  # at least one escalation step per overdue case
        # The HTTP API in-process, as the runtime role: a token, a command, the ledger.
        api = create_app(Settings(db=runtime))
        try:
            engine = api.state.engine
            client = ApiClient(api, issue(engine, "li", "unit", unit="U1"))
            rectify = {"command": "rectify", "hazard_id": "L-0000", "actor": "li",
                       "note": "fixed"}  # fmt: skip
            posted = client.post("/commands", json=rectify)
            assert posted.status_code == 200, posted.text
            listed = client.get("/hazards", params={"status": "rectified"})
            assert listed.status_code == 200, listed.text
            assert [h["hazard_id"] for h in listed.json()["items"]] == ["L-0000"]
        finally:
            api.state.engine.close()
        escalated += 1  # the rectification
        verified = hazardloop("audit", "verify", "--db", runtime)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith(f"{3 * hazards + escalated}:")  # COUNT:HASH
        # The owner upgrades a store whose read models an older version made (the ledger with
        # a column more): they are dropped and made again, and the runtime role keeps its
        # rights on them (and on the `steps` view) to rebuild and read them.
        rows(db, "ALTER TABLE ledger ADD COLUMN state TEXT")
        upgraded = hazardloop("db", "upgrade", "--db", db)
        assert upgraded.returncode == 0, upgraded.stderr
        assert json.loads(upgraded.stdout)["to_rebuild"] == ["cases"]
        rebuilt = hazardloop("projections", "catch-up", "--db", runtime)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert rows(runtime, "SELECT COUNT(*) FROM steps WHERE step = 'rectify'") == [(hazards,)]
        # A right the role lacks all the same is a store error in one line, not a traceback.
        rows(db, f'REVOKE ALL ON step_segments FROM "{role}"')
        refused = hazardloop("report", "overdue", "--db", runtime, "--format", "json")
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert refused.stderr.startswith("StoreError: store_error: InsufficientPrivilege: ")
        assert "permission denied for table step_segments" in refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
    finally:
        for sql in (
            f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"',
            f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}"',
            f'REVOKE ALL ON SCHEMA public FROM "{role}"',
            f'DROP ROLE "{role}"',
        ):
            rows(db, sql)


def _discover_and_report(db: str, hazard_id: str, *, report: bool) -> None:
    """One engine (one process's chain cache) per call."""
    app = build_engine(Settings(db=db))
    try:
        common = {"hazard_id": hazard_id, "actor": "wang", "at": "2026-11-20T09:00:00+08:00"}
        if report:
            app.handle(parse_command({**common, "command": "report"}))
        else:
            app.handle(parse_command({**common, "command": "discover", "grid": "G1",
                                      "category": "fire", "grade": "general",
                                      "title": "chain index"}))  # fmt: skip
    finally:
        app.close()


def _indexes(db: str) -> set[str]:
    return _names(
        db,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'event_chain'",
        "SELECT name FROM sqlite_master WHERE type = 'index'",
    )


def test_upgrade_drops_the_chain_index_an_older_sqlite_store_has(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """SQLite: the chain's index on the case is no longer made (a case's earlier link is found
    through the events' primary key); an older store's is dropped by `db upgrade`. PostgreSQL
    keeps it (its recorder looks links up by it). Either way a step written by a new engine,
    which must look its case's last link up in the store, chains so that `audit verify` finds
    the log intact."""
    new, old = store_factory(tmp_path, "new"), store_factory(tmp_path, "old")
    sqlite = "://" not in new
    for db in (new, old):
        _discover_and_report(db, "IX-1", report=False)
    assert ("event_chain_case" in _indexes(new)) is not sqlite
    if sqlite:  # as an older version made it
        rows(old, "CREATE UNIQUE INDEX event_chain_case ON event_chain "
                  "(originator_id, originator_version)")  # fmt: skip
    upgraded = hazardloop("db", "upgrade", "--db", old)
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["dropped_indexes"] == (
        ["event_chain_case"] if sqlite else []
    )
    assert ("event_chain_case" in _indexes(old)) is not sqlite
    assert "event_chain_recorded" in _indexes(old)
    again = hazardloop("db", "upgrade", "--db", old)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["dropped_indexes"] == []
    for db in (new, old):
        _discover_and_report(db, "IX-1", report=True)  # a fresh engine: the lookup path
        verified = hazardloop("audit", "verify", "--json", "--db", db)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["ok"] is True
        assert [
            r[0] for r in rows(db, "SELECT originator_version FROM event_chain ORDER BY position")
        ] == [1, 2]
