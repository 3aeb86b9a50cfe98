"""Projections over generated histories: rebuilt equals incremental, overdue equals brute force.

Histories come from hypothesis: random commands on a few cases, at increasing business times,
against a real SQLite store; the projections are caught up in random slices along the way.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import Engine, select, update

from adapters.bootstrap import Settings, build_engine, build_runner
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.hazard import Hazard
from loop.lifecycle import HOLDING_STEP, Status, allowed_commands
from projections import cases
from projections.reports import overdue_report
from projections.runner import ProjectionRunner
from projections.tables import ledger, step_segments, steps, tracking
from tests.conftest import SHANGHAI, FakeClock, StoreFactory

IDS = ("A", "B", "C", "D")
NAMES = ("discover", "report", "assign", "rectify", "verify", "close", "reject", "return",
         "reassign", "extend", "park", "resume", "reopen", "regrade", "escalate")  # fmt: skip
START = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)
KEY = "A" * 43 + "="  # the tipsters' master key (no key file beside a PostgreSQL store)

step_strategy = st.tuples(
    st.sampled_from(IDS),
    st.sampled_from(NAMES),
    st.booleans(),  # passed / fixed on the spot
    st.integers(min_value=1, max_value=120),  # hours since the previous command
    st.booleans(),  # catch up after this command
    st.integers(min_value=0, max_value=20),  # >= 6: pick a command the case accepts now
)


def make_command(i: int, hazard_id: str, name: str, flag: bool, at: datetime) -> dict[str, Any]:
    actor = ("wang", "zhao")[i % 2]
    cmd: dict[str, Any] = {"command": name, "hazard_id": hazard_id, "actor": actor,
                           "at": at.isoformat()}  # fmt: skip
    cmd.update({
        "discover": {"grid": f"G{i % 3}", "category": "fire", "grade": "general", "title": "t",
                     "fixed_on_spot": flag and i % 5 == 0},
        "assign": {"unit": f"U{i % 3}", "person": "p"},
        "rectify": {"note": "done"},
        "verify": {"passed": flag},
        "reject": {"reason": "r"}, "return": {"reason": "r"},
        "reassign": {"unit": f"V{i % 2}", "person": "q", "reason": "r"},
        "extend": {"due": (at + timedelta(days=20)).isoformat(), "reason": "r",
                   "approved_by": "lead"},
        "park": {"reason": "r", "approved_by": "lead"},
        "reopen": {"reason": "r"},
        "regrade": {"grade": "major" if flag else "general", "reason": "r"},
        "escalate": {"level": "reminder"},
    }.get(name, {}))  # fmt: skip
    return cmd


def table_rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as conn:
        for table in (ledger, steps, step_segments):
            keys = list(table.primary_key.columns)
            rows = conn.execute(select(table).order_by(*keys)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def brute_force_overdue(app: HazardLoop, as_of: datetime) -> set[tuple[str, str, datetime]]:
    """Fold each case's events up to `as_of` (business time) and ask the case itself."""
    found = set()
    for hazard_id in IDS:
        if not app.exists(hazard_id):
            continue
        hazard: Hazard | None = None
        for event in app.history(hazard_id):
            if event.at > as_of:
                break
            hazard = event.mutate(hazard)  # type: ignore[assignment]
        if hazard is None or hazard.status not in HOLDING_STEP:
            continue
        assert hazard.status != Status.PARKED
        if hazard.due is not None and hazard.due < as_of:
            assert hazard.step is not None
            found.add((hazard_id, hazard.step, hazard.due))
    return found


def open_segments(conn: Any, as_of: datetime) -> dict[str, tuple[Any, ...]]:
    """What the segments say held the ball at `as_of`: step, deadline, unit, person, grade."""
    s = step_segments.c
    rows = conn.execute(
        select(s.hazard_id, s.step, s.due, s.unit, s.person, s.grade).where(
            s.started_at <= as_of, (s.ended_at.is_(None)) | (s.ended_at > as_of)
        )
    ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def brute_force_open_steps(app: HazardLoop, as_of: datetime) -> dict[str, tuple[Any, ...]]:
    """The same, from each case folded up to `as_of`."""
    out = {}
    for hazard_id in IDS:
        if not app.exists(hazard_id):
            continue
        hazard: Hazard | None = None
        for event in app.history(hazard_id):
            if event.at > as_of:
                break
            hazard = event.mutate(hazard)  # type: ignore[assignment]
        if hazard is not None and hazard.step is not None:
            out[hazard_id] = (hazard.step, hazard.due, hazard.unit, hazard.person, hazard.grade)
    return out


def brute_force_steps(app: HazardLoop) -> list[tuple[Any, ...]]:
    """Step occurrences from each case's events, folded one by one: a step from when it starts
    until the ball moves on (parking pauses it), with what it showed when it last held the ball,
    how it ended, whether it was ever parked, and a rectification's failed verifications."""
    out = []
    for hazard_id in IDS:
        if not app.exists(hazard_id):
            continue
        hazard: Hazard | None = None
        occurrences: list[dict[str, Any]] = []
        occ: dict[str, Any] | None = None
        rectify: dict[str, Any] | None = None
        for event in app.history(hazard_id):
            hazard = event.mutate(hazard)  # type: ignore[assignment]
            assert hazard is not None
            name = type(event).__name__
            parked = hazard.status is Status.PARKED
            if occ is not None and not parked and hazard.step != occ["step"]:
                occ.update(ended_at=event.at, outcome=name,
                           handled=name in cases.HANDLING_EVENTS[occ["step"]])  # fmt: skip
                if occ["step"] == "rectify":
                    rectify = occ
                occ = None
            if name == "VerificationFailed" and rectify is not None:
                rectify["reworked"] += 1
            if occ is None and hazard.step is not None:
                occ = {"occurrence": len(occurrences) + 1, "step": hazard.step,
                       "started_at": event.at, "ended_at": None, "outcome": None,
                       "handled": False, "parked": False, "reworked": 0}  # fmt: skip
                occurrences.append(occ)
            if occ is not None:
                occ["parked"] = occ["parked"] or parked
                if not parked:
                    assert hazard.deadline is not None
                    occ.update(grade=hazard.grade, holder=hazard.holder, unit=hazard.unit,
                               person=hazard.person, due=hazard.deadline["due"],
                               extensions=hazard.deadline.get("extensions", 0))  # fmt: skip
        out.extend(
            (hazard_id, o["occurrence"], o["step"], o["grade"], o["holder"], o["unit"],
             o["person"], o["started_at"], o["due"], o["extensions"], o["ended_at"],
             o["outcome"], o["handled"], o["parked"], o["reworked"])
            for o in occurrences
        )  # fmt: skip
    return out


def view_steps(conn: Any) -> list[tuple[Any, ...]]:
    """The `steps` view, in the columns and order of `brute_force_steps`."""
    c = steps.c
    return [
        tuple(r)
        for r in conn.execute(
            select(c.hazard_id, c.occurrence, c.step, c.grade, c.holder, c.unit, c.person,
                   c.started_at, c.due, c.extensions, c.ended_at, c.outcome, c.handled,
                   c.parked, c.reworked).order_by(c.hazard_id, c.occurrence)
        )
    ]  # fmt: skip


class TestGeneratedHistories:
    """Whatever the history, the read models agree with a rebuild and with the events: the
    overdue report, the segments in force and the step occurrences (the `steps` view)."""

    # One `self` per store parameter: nothing is kept on it, so the executors may differ.
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    )
    @given(history=st.lists(step_strategy, min_size=1, max_size=60), probes=st.lists(
        st.floats(min_value=0, max_value=1.05), min_size=1, max_size=6),
        copy_from=st.sampled_from([1, 3]), fold_from=st.sampled_from([0, 0, 1, 8]))  # fmt: skip
    def test_rebuild_equals_incremental_and_overdue_equals_brute_force(
        self,
        store_factory: StoreFactory,
        history: list[tuple[str, str, bool, int, bool, int]],
        probes: list[float],
        copy_from: int,
        fold_from: int,
    ) -> None:
        # On PostgreSQL, from `copy_from` rows a table's writes go through COPY (new rows
        # straight in, changed ones through a temporary table): 1 and 3 put these small
        # histories through COPY and, with 3, executemany too. From `fold_from` events behind
        # (0: never), the incremental catch-ups fold the cases in two helper processes, five
        # events a slice (where the platform can fork them).
        shipped = cases.COPY_FROM
        cases.COPY_FROM = copy_from
        try:
            self._check_history(store_factory, history, probes, fold_from)
        finally:
            cases.COPY_FROM = shipped

    @staticmethod
    def _check_history(
        store_factory: StoreFactory,
        history: list[tuple[str, str, bool, int, bool, int]],
        probes: list[float],
        fold_from: int,
    ) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            clock = FakeClock(START + timedelta(days=400))
            db = store_factory(Path(tmp), "h")
            app = build_engine(Settings(db=db, cipher_key=KEY), clock=clock)
            runner = build_runner(app)
            runner.fold_helper_from, runner.fold_helpers, runner.fold_slice = fold_from, 2, 5
            at = START
            for i, (hazard_id, name, flag, hours, catch_up, pick) in enumerate(history):
                at += timedelta(hours=hours)
                if pick >= 6:  # steer towards deep histories: extensions, parking, rework…
                    status = app.get_hazard(hazard_id).status if app.exists(hazard_id) else None
                    allowed = allowed_commands(status)
                    name = allowed[pick % len(allowed)]
                cmd = parse_command(make_command(i, hazard_id, name, flag, at))
                list(app.handle_many([cmd]))  # refusals are part of life
                if catch_up:
                    runner.catch_up()
            runner.catch_up()
            incremental = table_rows(runner.engine)
            fresh = ProjectionRunner(app, runner.engine, build_runner(app).projections)
            fresh.rebuild()
            assert table_rows(runner.engine) == incremental
            with runner.engine.connect() as conn:
                assert view_steps(conn) == brute_force_steps(app)
            for fraction in probes:
                as_of = START + (at - START) * fraction
                with runner.engine.connect() as conn:
                    report = overdue_report(conn, as_of, app.policy, app.calendar)
                    in_force = open_segments(conn, as_of)
                got = {(r.hazard_id, r.step, r.due) for r in report.rows}
                assert got == brute_force_overdue(app, as_of)
                assert in_force == brute_force_open_steps(app, as_of)
            runner.engine.dispose()
            app.close()
            store_factory.drop(db)


def test_the_steps_view_of_a_case_reworked_extended_and_reassigned_while_parked(
    store: str,
) -> None:
    """One case down the side paths, caught up after every command: the `steps` view equals the
    occurrences folded from the events, and says what each did — the failed verification counted
    on its rectification, the extension, and the pause (the occurrence goes on after it, with
    the unit it was reassigned to while parked)."""
    clock = FakeClock(START + timedelta(days=400))
    app = build_engine(Settings(db=store, cipher_key=KEY), clock=clock)
    try:
        runner = build_runner(app)
        at = START
        for i, (name, flag) in enumerate((
            ("discover", False), ("report", False), ("assign", False), ("rectify", False),
            ("verify", False), ("extend", False), ("rectify", False), ("verify", True),
            ("close", False), ("reopen", False), ("assign", False), ("park", False),
            ("reassign", False),
            ("resume", False), ("rectify", False), ("verify", True), ("close", False),
        )):  # fmt: skip
            at += timedelta(hours=3)
            (result,) = app.handle_many([parse_command(make_command(i, "A", name, flag, at))])
            assert result.ok, (name, result.error)
            runner.catch_up()
        with runner.engine.connect() as conn:
            got = view_steps(conn)
        assert got == brute_force_steps(app)
        summary = [(r[2], r[11], r[9], r[13], r[14]) for r in got]  # outcome, ext., parked, rework
        assert summary == [
            ("report", "Reported", 0, False, 0),
            ("assign", "Assigned", 0, False, 0),
            ("rectify", "Rectified", 0, False, 1),
            ("verify", "VerificationFailed", 0, False, 0),
            ("rectify", "Rectified", 1, False, 0),
            ("verify", "Verified", 0, False, 0),
            ("close", "Closed", 0, False, 0),
            ("assign", "Assigned", 0, False, 0),
            ("rectify", "Rectified", 0, True, 0),
            ("verify", "Verified", 0, False, 0),
            ("close", "Closed", 0, False, 0),
        ]
        assert got[8][5] == "V0"  # reassigned while parked: the unit after the resume
    finally:
        app.close()


def test_the_reports_read_segments_through_the_indexes_meant_for_them(tmp_path: Path) -> None:
    """SQLite's plans of the reports' queries over `step_segments` (no statistics, as a store
    has them): the overdue report's segments open at T through `ix_segments_open_due` and its
    parked cases through `ix_segments_parked`, never through the accountability report's index
    on due (a full index on due took the overdue report at 1M hazards from 1.6 s to 7.5 s),
    and the accountability report's steps through it."""
    from sqlalchemy import event

    from projections.reports import accountability_report, parse_period

    app = build_engine(Settings(db=str(tmp_path / "plans.db"), cipher_key=KEY))
    try:
        runner = build_runner(app)
        statements: list[tuple[str, Any]] = []

        def seen(conn: Any, cursor: Any, sql: str, params: Any, *_: Any) -> None:
            if "step_segments" in sql or "FROM steps" in sql:
                statements.append((sql, params))

        event.listen(runner.engine, "before_cursor_execute", seen)
        as_of = START + timedelta(days=30)
        with runner.engine.connect() as conn:
            overdue_report(conn, as_of, app.policy, app.calendar)
            overdue = list(statements)
            statements.clear()
            accountability_report(conn, parse_period("2026-09"), as_of, app.policy, app.calendar)
            accounted = list(statements)
            event.remove(runner.engine, "before_cursor_execute", seen)

            def plan(sql: str, params: Any) -> str:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
                return " | ".join(str(r[-1]) for r in rows)

            overdue_plans = [plan(*s) for s in overdue]
            accounted_plans = [plan(*s) for s in accounted]
        assert len(overdue_plans) == 3
        assert len(accounted_plans) == 1
        rows, open_cases, parked = overdue_plans
        assert "ix_segments_open_due" in rows
        assert "ix_segments_open_due" in open_cases
        assert "ix_segments_parked" in parked
        assert not any("ix_segments_latest_due" in p for p in overdue_plans)
        assert "ix_segments_latest_due" in accounted_plans[0]
    finally:
        app.close()


def test_views_written_again_over_existing_rows_come_out_the_same(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracking position moved back by hand: the rows the projection takes for new are there
    already. PostgreSQL's COPY of them fails, is rolled back to its savepoint and they are
    upserted instead; the views end as a rebuild leaves them. Titles hold what COPY's text
    format escapes (tab, newline, backslash, `\\N`)."""
    monkeypatch.setattr(cases, "COPY_FROM", 1)
    copied: list[bool] = []  # what each COPY straight into a view answered
    copy_insert = cases._copy_insert

    def spy(driver: Any, table: Any, rows: Any) -> bool:
        copied.append(copy_insert(driver, table, rows))
        return copied[-1]

    monkeypatch.setattr(cases, "_copy_insert", spy)
    clock = FakeClock(START + timedelta(days=400))
    app = build_engine(Settings(db=store, cipher_key=KEY), clock=clock)
    try:
        at = START
        for i, hazard_id in enumerate(("A", "B", "C")):
            for name in ("discover", "report", "assign"):
                at += timedelta(hours=5)
                cmd = make_command(i, hazard_id, name, False, at)
                if name == "discover":
                    cmd["title"] = f"闸门\t{i}\n\\N \\ end"
                (result,) = app.handle_many([parse_command(cmd)])
                assert result.ok, result.error
        runner = build_runner(app)
        runner.catch_up()
        built = table_rows(runner.engine)
        postgres = runner.engine.dialect.name == "postgresql"
        assert copied == ([True, True] if postgres else [])  # segments, ledger
        assert [r[2] for r in built["ledger"]] == [f"闸门\t{i}\n\\N \\ end" for i in range(3)]
        with runner.engine.begin() as conn:
            conn.execute(update(tracking).where(tracking.c.name == "cases").values(position=0))
        again = build_runner(app)
        assert again.catch_up() == app.recorder.max_notification_id()
        # The second time both were there already: rolled back, and upserted instead.
        assert copied == ([True, True, False, False] if postgres else [])
        assert table_rows(again.engine) == built
        assert dict(again.positions())["cases"] == app.recorder.max_notification_id()
        runner.engine.dispose()
        again.engine.dispose()
    finally:
        app.close()


def _segment_rows(writer: Any, keys: range, holder: str) -> list[list[Any]]:
    """`step_segments` rows (column order) for hazards `h<key>`, held by `holder`."""
    started = writer.time(START)
    return [
        [f"h{k:04d}", 1, 1, "report", "general", "G0", "fire", "t", holder, "U0", "p", started,
         None, None, started, started, "given", False, 0, started, True, False, False, 0]
        for k in keys
    ]  # fmt: skip


def test_a_view_upserted_twice_in_one_transaction(store: str) -> None:
    """Two upserts of one table in one chunk's transaction, each over COPY_FROM rows: on
    PostgreSQL the second empties the temporary table the first loaded (or it would write the
    first one's rows again over the second's)."""
    app = build_engine(Settings(db=store, cipher_key=KEY))
    engine = build_runner(app).engine
    try:
        with engine.begin() as conn:
            writer = cases._Writer(conn)
            size = cases.COPY_FROM
            first, second = range(0, 2 * size), range(size, 3 * size)
            writer.upsert(conn, step_segments, _segment_rows(writer, first, "first"))
            writer.upsert(conn, step_segments, _segment_rows(writer, second, "second"))
        with engine.connect() as conn:
            got = dict(conn.execute(select(steps.c.hazard_id, steps.c.holder)).all())
        expected = {f"h{k:04d}": "first" if k < size else "second" for k in range(3 * size)}
        assert got == expected
    finally:
        engine.dispose()
        app.close()


def test_a_role_without_temporary_tables_still_writes_the_views(
    store: str, store_kind: str
) -> None:
    """PostgreSQL: a locked-down database may withhold the TEMP privilege. The views' writer
    then upserts changed rows with `executemany` rather than failing the chunk."""
    if store_kind != "postgres":
        pytest.skip("temporary tables and their privilege are PostgreSQL's")
    import psycopg
    from sqlalchemy import create_engine

    from adapters.store import parse_db

    app = build_engine(Settings(db=store, cipher_key=KEY))
    owner = build_runner(app).engine
    role = f"views_writer_{uuid.uuid4().hex[:8]}"
    kwargs = parse_db(store).psycopg_kwargs()
    with psycopg.connect(**kwargs, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'REVOKE TEMPORARY ON DATABASE "{kwargs["dbname"]}" FROM PUBLIC')
        admin.execute(f'GRANT SELECT, INSERT, UPDATE ON step_segments TO "{role}"')
    limited = create_engine(owner.url.set(username=role))
    try:
        with limited.begin() as conn:
            writer = cases._Writer(conn)
            rows = _segment_rows(writer, range(cases.COPY_FROM), "first")
            writer.upsert(conn, step_segments, rows)  # new, but not said to be: upserted
            assert writer.temporary is False
        with owner.connect() as conn:
            got = conn.execute(select(steps.c.hazard_id)).scalars().all()
        assert sorted(got) == [r[0] for r in rows]
    finally:
        limited.dispose()
        owner.dispose()
        app.close()
        _drop_role(kwargs, role, "step_segments")


def _drop_role(kwargs: dict[str, Any], role: str, table: str) -> None:
    """Revoke what a test's role was granted on `table`, then drop the role."""
    import psycopg

    with psycopg.connect(**kwargs, autocommit=True) as admin:
        admin.execute(f'REVOKE ALL ON {table} FROM "{role}"')
        admin.execute(f'DROP ROLE "{role}"')


def test_rights_on_a_rebuilt_read_model_are_never_lost_midway(
    store: str, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a read model dropped and made again at start (its columns changed) gets the
    rights other roles had on it in the same transaction. A start that fails after making it
    (here: granting fails; a process killed there is the same) leaves the old table and its
    rights, and the next start grants them again; never a store that looks ready with the
    rights gone (found by review: the grants ran in a transaction of their own)."""
    if store_kind != "postgres":
        pytest.skip("grants to other roles are PostgreSQL's")
    import psycopg

    from adapters.store import parse_db

    app = build_engine(Settings(db=store, cipher_key=KEY))
    build_runner(app).engine.dispose()
    role = f"reader_{uuid.uuid4().hex[:8]}"
    kwargs = parse_db(store).psycopg_kwargs()

    def may_read() -> bool:
        with psycopg.connect(**kwargs, autocommit=True) as admin:
            row = admin.execute(
                "SELECT has_table_privilege(%s, 'ledger', 'SELECT')", (role,)
            ).fetchone()
        assert row is not None
        return bool(row[0])

    with psycopg.connect(**kwargs, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}"')
        admin.execute(f'GRANT SELECT ON ledger TO "{role}"')
        admin.execute("ALTER TABLE ledger ADD COLUMN left_by_an_older_version text")
    try:
        assert may_read()
        original = ProjectionRunner._grant_again

        def grant_then_fail(self: ProjectionRunner, conn: Any) -> None:
            original(self, conn)
            raise RuntimeError("killed after granting")

        monkeypatch.setattr(ProjectionRunner, "_grant_again", grant_then_fail)
        with pytest.raises(RuntimeError, match="killed after granting"):
            build_runner(app)
        assert may_read()  # all rolled back: the old table, its column and its right
        monkeypatch.setattr(ProjectionRunner, "_grant_again", original)
        build_runner(app).engine.dispose()
        assert may_read()
        with psycopg.connect(**kwargs, autocommit=True) as admin:
            columns = admin.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'ledger'"
            ).fetchall()
        assert ("left_by_an_older_version",) not in columns
    finally:
        app.close()
        _drop_role(kwargs, role, "ledger")


def test_fold_helpers_start_by_default_where_they_were_measured_to_pay(
    store: str, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From 20,000 events behind on SQLite; on PostgreSQL, whose server wants the same CPUs,
    from 500,000 (docs/performance.md: slower at 62,000 behind, faster at 621,000)."""
    from projections.runner import FOLD_HELPER_FROM, FOLD_HELPER_FROM_PG

    monkeypatch.delenv("HAZARDLOOP_FOLD_HELPER_FROM", raising=False)
    app = build_engine(Settings(db=store, cipher_key=KEY))
    try:
        runner = build_runner(app, settings=Settings(db=store, cipher_key=KEY))
        expected = FOLD_HELPER_FROM if store_kind == "sqlite" else FOLD_HELPER_FROM_PG
        assert runner.fold_helper_from == expected
        assert (FOLD_HELPER_FROM, FOLD_HELPER_FROM_PG) == (20_000, 500_000)
        runner.engine.dispose()
    finally:
        app.close()
