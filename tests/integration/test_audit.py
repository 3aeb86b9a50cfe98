"""Tamper evidence on real stores: every kind of edit behind the engine's back is caught.

Each test copies one pristine store, changes it directly (the SQLite file with sqlite3, a
PostgreSQL database with psycopg, as a tamperer with access to it would), and runs the verifier;
an untouched store verifies clean. The full catalogue of tamperings runs on SQLite, where the
fast check and the careful walk differ; PostgreSQL runs the careful walk, tested on the clean
store, a changed row, a deleted row and an edited chain row.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import structlog.testing

from adapters import audit, audit_scan
from adapters.audit import Head, case_proof, head, head_at, parse_head, verify
from adapters.bootstrap import Settings, build_engine
from adapters.logs import get_logger
from adapters.store import GENESIS, chain_format_error, chain_link, frame
from loop.commands import parse_command
from loop.errors import InvalidCommand, StoreError
from tests.conftest import SHANGHAI, FakeClock, PgCluster, selected_stores

KEY = "A" * 43 + "="  # the tipsters' master key for the PostgreSQL store (base64 of 32 bytes)

START = datetime(2026, 9, 1, 9, 0, tzinfo=SHANGHAI)


def _commands(i: int, at: datetime) -> list[dict[str, object]]:
    hid = f"H-{i:03d}"
    base = {"hazard_id": hid}
    steps: list[dict[str, object]] = [
        {"command": "discover", "actor": "wang", "grid": "G1", "category": "fire",
         "grade": "general", "title": f"hazard {i}", "source": "public_tip",
         "reporter": "tipster"},
        {"command": "report", "actor": "wang"},
        {"command": "assign", "actor": "centre", "unit": "U1", "person": "li"},
        {"command": "rectify", "actor": "li", "note": "fixed"},
    ]  # fmt: skip
    return [
        base | s | {"at": (at + timedelta(hours=n)).isoformat()}
        for n, s in enumerate(steps[: 1 + i % 4])
    ]


def _build(location: str, cipher_key: str | None = None) -> None:
    """12 cases written in several transactions (several batches)."""
    clock = FakeClock(START + timedelta(days=30))
    app = build_engine(Settings(db=location, cipher_key=cipher_key), clock=clock)
    try:
        for batch in range(3):
            commands = [
                parse_command(cmd)
                for i in range(batch * 4, batch * 4 + 4)
                for cmd in _commands(i, START + timedelta(days=batch))
            ]
            results = app.handle_many(commands, batch_size=5)
            assert all(r.ok for r in results), [r.to_dict() for r in results if not r.ok]
            clock.advance(days=1)
    finally:
        app.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store with 12 cases."""
    path = tmp_path_factory.mktemp("pristine") / "hazards.db"
    _build(str(path))
    return path


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(pristine)
    dst = sqlite3.connect(copy)
    src.backup(dst)  # a consistent copy, WAL included
    src.close()
    dst.close()
    return copy


def _sql(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for sql, params in statements:
            conn.execute(sql, params)
    conn.close()


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    (n,) = conn.execute("SELECT COUNT(*) FROM stored_events").fetchone()
    conn.close()
    return int(n)


def _event(path: Path, position: int) -> tuple[str, int, str, bytes]:
    conn = sqlite3.connect(path)
    row = conn.execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid=?",
        (position,),
    ).fetchone()
    conn.close()
    return str(row[0]), int(row[1]), str(row[2]), bytes(row[3])


def test_untouched_store_verifies_clean_and_its_head_is_recomputable(store: Path) -> None:
    result = verify(store)
    assert result.ok, result.to_dict()
    n = _count(store)
    assert result.events == n > 12
    # The head is the chain recomputed independently here, from the stored bytes: each event's
    # hash links the log's previous event and the case's previous event.
    previous = GENESIS
    cases: dict[str, bytes] = {}
    conn = sqlite3.connect(store)
    rows = conn.execute(
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
        "ORDER BY rowid"
    ).fetchall()
    stored = {
        p: (h, t)
        for p, h, t in conn.execute("SELECT position, log_hash, recorded_at FROM event_chain")
    }
    conn.close()
    for pos, oid, version, topic, state in rows:
        framed = frame(oid, version, topic, state)
        previous = chain_link(previous, cases.get(oid, GENESIS), pos, stored[pos][1], framed)
        assert stored[pos][0] == previous
        cases[oid] = previous
    assert result.head == Head(n, previous)
    # The first event's hash, byte by byte as docs/audit.md spells it out.
    micros = stored[1][1]
    by_hand = (
        GENESIS + GENESIS + (1).to_bytes(8, "big") + micros.to_bytes(8, "big", signed=True)
        + b"\x1f".join((rows[0][1].encode(), b"1", rows[0][3].encode(), rows[0][4]))
    )  # fmt: skip
    assert hashlib.sha256(by_hand).digest() == stored[1][0]


def test_flipped_byte_is_a_changed_event_named_by_case_and_position(store: Path) -> None:
    oid, _version, _topic, state = _event(store, 7)
    flipped = bytearray(state)
    flipped[len(flipped) // 2] ^= 0x01
    _sql(store, ("UPDATE stored_events SET state=? WHERE rowid=?", (bytes(flipped), 7)))
    result = verify(store)
    assert not result.ok
    (b,) = result.breaks
    assert (b.kind, b.position, b.originator_id) == ("changed", 7, oid)
    assert b.subject is not None
    assert b.subject.startswith("H-")


def test_deleted_event_is_named(store: Path) -> None:
    _sql(store, ("DELETE FROM stored_events WHERE rowid=?", (5,)))
    (b,) = verify(store).breaks
    assert (b.kind, b.position) == ("deleted", 5)


def test_deleted_event_with_its_chain_row_is_still_caught(store: Path) -> None:
    _sql(
        store,
        ("DELETE FROM stored_events WHERE rowid=?", (5,)),
        ("DELETE FROM event_chain WHERE position=?", (5,)),
    )
    (b,) = verify(store).breaks
    assert (b.kind, b.position) == ("deleted", 5)


def test_inserted_forgery_is_caught(store: Path) -> None:
    oid, _version, topic, state = _event(store, 3)
    _sql(
        store,
        (
            "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
            "VALUES (?,?,?,?)",
            (oid, 99, topic, state),
        ),
    )
    (b,) = verify(store).breaks
    assert b.kind == "inserted"
    assert b.position == _count(store)
    assert b.originator_id == oid


def test_swapped_events_are_a_reordering(store: Path) -> None:
    # Two events of one case (same originator) swap places: states and versions exchanged.
    conn = sqlite3.connect(store)
    pos_a, pos_b = conn.execute(
        "SELECT MIN(rowid), MAX(rowid) FROM stored_events WHERE originator_id IN "
        "(SELECT originator_id FROM stored_events WHERE originator_version=2 LIMIT 1) "
        "AND originator_version IN (1, 2)"
    ).fetchone()
    conn.close()
    a, b = _event(store, pos_a), _event(store, pos_b)
    _sql(
        store,
        ("UPDATE stored_events SET originator_version=-1 WHERE rowid=?", (pos_a,)),
        ("UPDATE stored_events SET topic=?, state=?, originator_version=1 WHERE rowid=?",
         (a[2], a[3], pos_b)),
        ("UPDATE stored_events SET topic=?, state=?, originator_version=2 WHERE rowid=?",
         (b[2], b[3], pos_a)),
    )  # fmt: skip
    (brk,) = verify(store).breaks
    assert (brk.kind, brk.position, brk.details.get("belongs_at")) == ("reordered", pos_a, pos_b)


def test_cut_off_tail_is_truncation(store: Path) -> None:
    n = _count(store)
    _sql(store, ("DELETE FROM stored_events WHERE rowid>?", (n - 3,)))
    (b,) = verify(store).breaks
    assert (b.kind, b.position) == ("truncated", n - 2)


def test_tail_cut_from_events_and_chain_is_truncation_by_the_head(store: Path) -> None:
    n = _count(store)
    _sql(
        store,
        ("DELETE FROM stored_events WHERE rowid>?", (n - 3,)),
        ("DELETE FROM event_chain WHERE position>?", (n - 3,)),
    )
    (b,) = verify(store).breaks
    assert (b.kind, b.details.get("missing")) == ("truncated", 3)


def test_edited_chain_row_is_chain_altered(store: Path) -> None:
    _sql(store, ("UPDATE event_chain SET log_hash=? WHERE position=?", (bytes(32), 4)))
    (b,) = verify(store).breaks
    assert (b.kind, b.position) == ("chain_altered", 4)


def _report_h000(store: Path, clock: FakeClock) -> None:
    """Append one event through the engine: H-000 reported (its first event is at position 1)."""
    app = build_engine(Settings(db=str(store)), clock=clock)
    try:
        result = app.handle(
            parse_command({"command": "report", "hazard_id": "H-000", "actor": "wang"})
        )
        assert result.ok, result.to_dict()
    finally:
        app.close()


def _rewrite_consistently(path: Path) -> None:
    """What a careful tamperer does: change an event, then recompute every hash after it."""
    conn = sqlite3.connect(path)
    with conn:
        _oid, _version, _topic, state = _event(path, 2)
        conn.execute(
            "UPDATE stored_events SET state=? WHERE rowid=?",
            (state.replace(b"wang", b"wong"), 2),
        )
        rows = conn.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        ).fetchall()
        times = dict(conn.execute("SELECT position, recorded_at FROM event_chain").fetchall())
        previous = GENESIS
        cases: dict[str, bytes] = {}
        for pos, o, v, t, s in rows:
            previous = chain_link(
                previous, cases.get(o, GENESIS), pos, times[pos], frame(o, v, t, s)
            )
            cases[o] = previous
            conn.execute("UPDATE event_chain SET log_hash=? WHERE position=?", (previous, pos))
        conn.execute("UPDATE chain_head SET log_hash=? WHERE id=1", (previous,))
    conn.close()


def test_consistent_rewrite_passes_alone_but_not_against_a_published_head(store: Path) -> None:
    published = verify(store).head
    _rewrite_consistently(store)
    assert _event(store, 2)[3] != b""
    assert verify(store).ok  # nothing inside the file can tell…
    result = verify(store, against=published)  # …the published head can
    (b,) = result.breaks
    assert (b.kind, b.position) == ("rewritten", published.count)


def test_the_only_head_of_no_events_is_genesis(store: Path) -> None:
    """`0:HASH` pins nothing unless HASH is the 64 zeros before the first event; any other is
    no head of any log: `rewritten` (the fast check gives way to the careful walk, which
    names it), and `audit verify` exits 1."""
    assert verify(store, against=Head(0, GENESIS)).ok
    forged = Head(0, b"\xff" * 32)
    result = verify(store, against=forged)
    (b,) = result.breaks
    assert (b.kind, b.position) == ("rewritten", 0)
    assert b.details == {"published": "ff" * 32, "found": "00" * 32}
    run = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "audit", "verify", "--db", str(store),
         "--against", f"0:{'ff' * 32}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("BROKEN: rewritten at position 0"), run.stderr


def test_appending_keeps_an_earlier_published_head_valid(store: Path, clock: FakeClock) -> None:
    published = verify(store).head
    _report_h000(store, clock)
    now = verify(store, against=published)
    assert now.ok, now.to_dict()
    assert now.head.count == published.count + 1
    assert not verify(store, against=Head(published.count, bytes(32))).ok
    assert verify(store, against=Head(published.count + 5, published.log_hash)).breaks[0].kind == (
        "truncated"
    )


def test_record_times_never_go_backwards_along_the_log(store: Path, clock: FakeClock) -> None:
    clock.now = START - timedelta(days=300)  # a clock set wrong (the case is later)
    app = build_engine(Settings(db=str(store)), clock=clock)
    try:
        app.handle(parse_command({"command": "report", "hazard_id": "H-004", "actor": "wang"}))
    finally:
        app.close()
    conn = sqlite3.connect(store)
    times = [t for (t,) in conn.execute("SELECT recorded_at FROM event_chain ORDER BY position")]
    conn.close()
    assert times == sorted(times)
    assert verify(store).ok


def test_a_moved_record_time_is_caught(store: Path) -> None:
    """Record times are hashed: moving one (to make a late upload look known in time) shows."""
    n = _count(store)
    conn = sqlite3.connect(store)
    (micros,) = conn.execute("SELECT recorded_at FROM event_chain WHERE position=5").fetchone()
    conn.close()
    _sql(
        store,
        ("UPDATE event_chain SET recorded_at=? WHERE position=?", (micros - 86_400_000_000, 5)),
    )
    for workers in (1, 2):
        (b,) = verify(store, workers=workers).breaks
        assert (b.kind, b.position) == ("changed", 5)
        assert "record time" in b.message
    assert n == _count(store)


def test_a_store_in_the_first_chain_format_is_refused_clearly(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute(
        "CREATE TABLE event_chain (position INTEGER PRIMARY KEY, originator_id TEXT, "
        "originator_version INTEGER, recorded_at INTEGER, log_hash BLOB, case_hash BLOB)"
    )
    conn.close()
    with pytest.raises(StoreError, match="format 1"):
        verify(old)
    with pytest.raises(StoreError, match="format 1"):
        build_engine(Settings(db=str(old)))
    assert chain_format_error(["position", "log_hash"], "x") is None


def test_bad_published_head_is_a_clear_error() -> None:
    with pytest.raises(InvalidCommand, match="COUNT:HASH"):
        parse_head("12:abc")
    assert parse_head(f"3:{'ab' * 32}") == Head(3, bytes.fromhex("ab" * 32))


def test_cli_verify_exit_status_and_messages(store: Path) -> None:
    cli = [sys.executable, "-m", "adapters.cli"]
    clean = subprocess.run([*cli, "audit", "verify", "--db", str(store)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    head = clean.stdout.strip()
    assert head == str(verify(store).head)
    _sql(store, ("DELETE FROM stored_events WHERE rowid=?", (6,)))
    broken = subprocess.run([*cli, "audit", "verify", "--db", str(store), "--against", head],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert broken.returncode == 1
    assert "deleted at position 6" in broken.stderr
    assert "case H-" in broken.stderr
    missing = subprocess.run([*cli, "audit", "verify", "--db", str(store.parent / "nope.db")],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1


def test_parallel_verification_agrees_with_one_process(store: Path) -> None:
    one = verify(store, workers=1)
    two = verify(store, workers=3)
    assert one.ok
    assert two.ok
    assert one.head == two.head
    _oid, _version, _topic, state = _event(store, 9)
    _sql(store, ("UPDATE stored_events SET state=? WHERE rowid=?", (state + b" ", 9)))
    (b,) = verify(store, workers=3).breaks
    assert (b.kind, b.position) == ("changed", 9)


def test_a_case_spanning_the_ranges_is_checked_across_them(store: Path, clock: FakeClock) -> None:
    # H-000's first event is at position 1, its last (appended now) at the end of the log: the
    # later range seeds the case from the earlier range's stored hash of it.
    _report_h000(store, clock)
    n = _count(store)
    assert _event(store, n)[0] == _event(store, 1)[0]
    for workers in (1, 2, 3):
        assert verify(store, workers=workers).ok
    _sql(store, ("UPDATE event_chain SET log_hash=? WHERE position=?", (bytes(32), 1)))
    for workers in (1, 3):
        (b,) = verify(store, workers=workers).breaks
        assert (b.kind, b.position) == ("chain_altered", 1)


def test_the_bounds_are_read_off_the_indexes_ends(store: Path) -> None:
    """No table scan before the check starts (MIN and MAX in one SELECT scanned both tables)."""
    reader = audit._open(store)
    try:
        plan = [row[3] for row in reader.all("EXPLAIN QUERY PLAN " + audit._BOUNDS)]
        assert reader.one(audit._BOUNDS) == (1, _count(store), 1, _count(store))
    finally:
        reader.close()
    assert [step for step in plan if step.startswith("SCAN") and "CONSTANT" not in step] == []
    assert sum(step.startswith("SEARCH") for step in plan) == 4


@pytest.mark.parametrize("count", [1, 2, 7, 50_000, 525_001])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_the_ranges_cover_the_log_once_in_equal_parts(count: int, workers: int) -> None:
    ranges = audit._split(count, workers)
    assert [p for lo, hi in ranges for p in range(lo, hi + 1)] == list(range(1, count + 1))
    size = -(-count // workers)  # each the same, the last what is left
    sizes = [hi - lo + 1 for lo, hi in ranges]
    assert sizes[:-1] == [size] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= size
    assert len(ranges) <= workers


def test_the_range_interpreters_read_with_apsw_the_caller_never_loads_it(store: Path) -> None:
    """APSW is what the range interpreters read with (the speed: docs/audit.md); the calling
    process keeps a connection of its own to the store, so it must never load a second SQLite
    library (two copies in one process drop each other's locks)."""
    assert audit_scan.DRIVERS == ("apsw", "sqlite3")
    probe = (
        "import sys; from adapters.audit import verify\n"
        f"assert verify({str(store)!r}, workers=2).ok\n"
        "assert 'apsw' not in sys.modules, 'the calling process loaded APSW'\n"
        "print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert (run.returncode, run.stdout) == (0, "ok\n"), run.stderr


def test_the_range_check_runs_alone_as_a_script(store: Path) -> None:
    n = _count(store)
    script = [sys.executable, "-I", audit_scan.__file__, str(store)]
    run = subprocess.run([*script, "3", str(n)], capture_output=True, text=True, check=True)
    assert run.stdout == "ok\n"
    _sql(store, ("UPDATE event_chain SET log_hash=? WHERE position=?", (bytes(32), n - 1)))
    run = subprocess.run([*script, "3", str(n)], capture_output=True, text=True, check=True)
    assert run.stdout == "broken\n"
    for driver in audit_scan.DRIVERS:  # the range before it is intact; the one with it is not
        assert audit_scan.check_range(str(store), 1, n - 2, driver)
        assert not audit_scan.check_range(str(store), 3, n, driver)


def _verdicts(path: Path) -> set[tuple[str, int] | None]:
    """What `audit verify` says with one and with two processes, and the careful walk alone."""
    found: set[tuple[str, int] | None] = set()
    for workers in (1, 2):
        result = verify(path, workers=workers)
        found.add((result.breaks[0].kind, result.breaks[0].position) if result.breaks else None)
    careful = audit._open(path)
    try:
        walked = audit._verify(careful, None)
    finally:
        careful.close()
    found.add((walked.breaks[0].kind, walked.breaks[0].position) if walked.breaks else None)
    return found


# Each: statements a tamperer with the file runs, and the one verdict every walk must give.
# Storage classes matter on SQLite: a text id and a blob id with the same bytes are different
# keys to the engine, so changing the class of both an event's and its chain row's id hides the
# event from its case (the engine then loads the case without it).
TAMPERINGS = {
    "id as a blob in both tables": (
        ["UPDATE stored_events SET originator_id=CAST(originator_id AS BLOB) WHERE rowid=10",
         "UPDATE event_chain SET originator_id=CAST(originator_id AS BLOB) WHERE position=10"],
        ("changed", 10),
    ),
    "state as text, same bytes": (
        ["UPDATE stored_events SET state=CAST(state AS TEXT) WHERE rowid=8"], ("changed", 8),
    ),
    "version as a blob": (
        ["UPDATE stored_events SET originator_version=CAST(originator_version AS BLOB) "
         "WHERE rowid=6"], ("changed", 6),
    ),
    "version NULL": (["UPDATE stored_events SET originator_version=NULL WHERE rowid=8"],
                     ("changed", 8)),
    "state NULL": (["UPDATE stored_events SET state=NULL WHERE rowid=7"], ("changed", 7)),
    "topic NULL": (["UPDATE stored_events SET topic=NULL WHERE rowid=8"], ("changed", 8)),
    "topic not UTF-8": (
        ["UPDATE stored_events SET topic=CAST(X'ff' || topic AS TEXT) WHERE rowid=8"],
        ("changed", 8),
    ),
    "chain row's id edited": (["UPDATE event_chain SET originator_id='zz' WHERE position=8"],
                              ("chain_altered", 8)),
    "chain row's version edited": (
        ["UPDATE event_chain SET originator_version=77 WHERE position=8"], ("chain_altered", 8),
    ),
    "record time as text": (["UPDATE event_chain SET recorded_at='x' WHERE position=9"],
                            ("chain_altered", 9)),
    "head hash as text": (["UPDATE chain_head SET log_hash='abc'"], ("chain_altered", 30)),
    "head count as text": (["UPDATE chain_head SET count='abc'"], ("chain_altered", 30)),
    "hash edited, next record time as text": (
        ["UPDATE event_chain SET log_hash=zeroblob(32) WHERE position=8",
         "UPDATE event_chain SET recorded_at='x' WHERE position=9"], ("changed", 8),
    ),
    "hash edited, next version NULL": (
        ["UPDATE event_chain SET log_hash=zeroblob(32) WHERE position=10",
         "UPDATE stored_events SET originator_version=NULL WHERE rowid=11"], ("changed", 10),
    ),
    "record time as text, not UTF-8": (
        ["UPDATE event_chain SET recorded_at=CAST(X'ff41fe' AS TEXT) WHERE position=8"],
        ("chain_altered", 8),
    ),
    "chain row's version as text, not UTF-8": (
        ["UPDATE event_chain SET originator_version=CAST(X'ff' AS TEXT) WHERE position=8"],
        ("chain_altered", 8),
    ),
    "hash as text, not UTF-8, seeding the second range": (
        ["UPDATE event_chain SET log_hash=CAST(X'ff' || substr(log_hash, 2) AS TEXT) "
         "WHERE position=15"], ("chain_altered", 15),
    ),
    "versions renumbered, a record time as text": (
        ["UPDATE stored_events SET originator_version=99 WHERE rowid=6",
         "UPDATE stored_events SET originator_version=3 WHERE rowid=5",
         "UPDATE event_chain SET recorded_at='x' WHERE position=6"], ("changed", 5),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_odd_values_are_named_breaks_the_same_by_every_walk(store: Path, name: str) -> None:
    """Whatever a column holds, every walk names the same first break; nothing raises."""
    statements, expected = TAMPERINGS[name]
    assert _count(store) == 30  # the positions above are this store's
    _sql(store, *((sql, ()) for sql in statements))
    assert _verdicts(store) == {expected}
    _the_readers_agree(store, intact=expected[1] == 30 and "head" in name)


def _the_readers_agree(store: Path, *, intact: bool) -> None:
    """Both readers of the fast check, over the whole log and over two ranges (the second
    seeded from the first's last stored hash), say the same, and see the break if any (a
    head row's break is not a range's to see); none raises."""
    said = {
        driver: tuple(
            audit_scan.check_range(str(store), lo, hi, driver)
            for lo, hi in ((1, 30), (1, 15), (16, 30))
        )
        for driver in audit_scan.DRIVERS
    }
    assert len(set(said.values())) == 1, said
    whole, first, second = said[audit_scan.DRIVERS[0]]
    assert whole == (first and second) == intact


@pytest.mark.parametrize(("table", "kind"), [("event_chain", "chain_altered"),
                                             ("stored_events", "changed")])  # fmt: skip
def test_a_version_stored_as_a_real_is_a_break_for_every_walk(
    store: Path, table: str, kind: str
) -> None:
    """SQLite's `=` holds 2.0 equal to 2, and a tamperer who edits the schema can store a REAL
    in an INTEGER column: the fast check must not take it for the engine's integer."""
    position = "position" if table == "event_chain" else "rowid"
    declared, bare = "originator_version INTEGER", "originator_version BLOB"  # BLOB: no affinity

    def declare(old: str, new: str) -> None:
        conn = sqlite3.connect(store)
        conn.execute("PRAGMA writable_schema=ON")
        with conn:
            conn.execute(
                "UPDATE sqlite_master SET sql=replace(sql, ?, ?) WHERE name=?", (old, new, table)
            )
        conn.close()

    declare(declared, bare)
    _sql(
        store,
        (f"UPDATE {table} SET originator_version=2.0 WHERE {position}=8", ()),
        (f"UPDATE {table} SET originator_version=1.0 WHERE {position}=11", ()),
    )
    declare(bare, declared)
    conn = sqlite3.connect(store)
    assert conn.execute(f"SELECT typeof(originator_version) FROM {table} WHERE {position}=8"
                        ).fetchone() == ("real",)  # fmt: skip
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert _event(store, 8)[1] == 2  # the engine's 2, as a REAL
    assert _verdicts(store) == {(kind, 8)}
    _the_readers_agree(store, intact=False)


@pytest.mark.parametrize("name", ["live.db#copy", "live.db?mode=rw", "live%41.db"])
def test_a_store_whose_name_holds_uri_characters_is_the_one_verified(
    store: Path, name: str
) -> None:
    """`file:{path}` would open another file (`live.db` for the first two, `liveA.db` for the
    last): the tampered store must be the one read, by every walk."""
    intact = store.parent / "live.db"
    twin = store.parent / "liveA.db"
    tampered = store.parent / name
    for path in (intact, twin, tampered):
        shutil.copy(store, path)
    _oid, _version, _topic, state = _event(store, 8)
    _sql(tampered, ("UPDATE stored_events SET state=? WHERE rowid=?", (state + b" ", 8)))
    assert _verdicts(tampered) == {("changed", 8)}
    _the_readers_agree(tampered, intact=False)
    assert verify(intact).ok
    assert verify(twin).ok


def test_a_hidden_event_cannot_pass_with_any_number_of_processes(store: Path) -> None:
    """A forged copy of a case's version 2, appended with a blob id and chained as if version 1
    were its previous event: every walk, with any split, refuses it."""
    conn = sqlite3.connect(store)
    oid, _, topic, state = _event(store, 5)
    assert _event(store, 4)[:2] == (oid, 1)
    (h4,) = conn.execute("SELECT log_hash FROM event_chain WHERE position=4").fetchone()
    h30, t30 = conn.execute(
        "SELECT log_hash, recorded_at FROM event_chain WHERE position=30"
    ).fetchone()
    forged = chain_link(h30, h4, 31, t30, frame(oid, 2, topic, state))
    with conn:
        conn.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
            "VALUES (31, CAST(? AS BLOB), 2, ?, ?)", (oid, topic, state),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO event_chain VALUES (31, CAST(? AS BLOB), 2, ?, ?)", (oid, t30, forged)
        )
        conn.execute("UPDATE chain_head SET count=31, log_hash=?", (forged,))
    conn.close()
    assert _verdicts(store) == {("changed", 31)}


# ------------------------------------------------------------------------------- PostgreSQL

postgres = pytest.mark.skipif(
    "postgres" not in selected_stores(), reason="HAZARDLOOP_TEST_STORES leaves PostgreSQL out"
)
_copies = itertools.count(1)


@pytest.fixture(scope="module")
def pg_pristine(pg_cluster: PgCluster) -> Iterator[str]:
    """A PostgreSQL database with the same 12 cases: its name."""
    name = pg_cluster.create("audit_pristine")
    _build(pg_cluster.url(name), cipher_key=KEY)
    yield name
    pg_cluster.drop(name)


@pytest.fixture
def pg_store(pg_cluster: PgCluster, pg_pristine: str) -> Iterator[str]:
    """A copy of the pristine PostgreSQL store: its URL."""
    name = f"audit_copy_{next(_copies)}"
    with psycopg.connect(pg_cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_pristine}"')  # type: ignore[arg-type]
    yield pg_cluster.url(name)
    pg_cluster.drop(name)


def _pg(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement as a tamperer with a database login would; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


@postgres
def test_pg_untouched_store_verifies_clean_with_its_head_and_proofs(pg_store: str) -> None:
    result = verify(pg_store)
    assert result.ok, result.to_dict()
    ((n,),) = _pg(pg_store, "SELECT COUNT(*) FROM stored_events")
    assert result.events == n > 12
    assert head(pg_store) == result.head == head_at(pg_store, n)
    # The head recomputed independently, from the rows as stored.
    rows = _pg(
        pg_store,
        "SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM stored_events ORDER BY notification_id",
    )
    times = dict(_pg(pg_store, "SELECT position, recorded_at FROM event_chain"))
    previous = GENESIS
    cases: dict[str, bytes] = {}
    for pos, oid, version, topic, state in rows:
        key = oid.hex  # type: ignore[attr-defined]
        framed = frame(key, version, topic, state)  # type: ignore[arg-type]
        previous = cases[key] = chain_link(
            previous, cases.get(key, GENESIS), pos, times[pos], framed
        )  # type: ignore[arg-type]
    assert result.head == Head(n, previous)
    oid = rows[0][1].hex  # type: ignore[attr-defined]
    proof = case_proof(pg_store, oid)
    assert proof
    assert all(link.ok for link in proof)


@postgres
def test_pg_the_only_head_of_no_events_is_genesis(pg_store: str) -> None:
    assert verify(pg_store, against=Head(0, GENESIS)).ok
    (b,) = verify(pg_store, against=Head(0, b"\x01" * 32)).breaks
    assert (b.kind, b.position) == ("rewritten", 0)


@postgres
def test_pg_changed_row_is_named_by_case_and_position(pg_store: str) -> None:
    ((oid, state),) = _pg(
        pg_store, "SELECT originator_id, state FROM stored_events WHERE notification_id = 7"
    )
    flipped = bytearray(state)  # type: ignore[arg-type]
    flipped[len(flipped) // 2] ^= 0x01
    _pg(pg_store, "UPDATE stored_events SET state = %s WHERE notification_id = 7", bytes(flipped))
    (b,) = verify(pg_store).breaks
    assert (b.kind, b.position, b.originator_id) == ("changed", 7, oid.hex)  # type: ignore[attr-defined]
    assert b.subject is not None
    assert b.subject.startswith("H-")
    assert not all(link.ok for link in case_proof(pg_store, oid.hex))  # type: ignore[attr-defined]


@postgres
@pytest.mark.parametrize("column", ["state", "topic"])
def test_pg_a_null_column_is_a_changed_event_not_a_crash(pg_store: str, column: str) -> None:
    # eventsourcing's PostgreSQL schema lets topic and state be NULL: one UPDATE does it.
    _pg(pg_store, f"UPDATE stored_events SET {column} = NULL WHERE notification_id = 6")
    (b,) = verify(pg_store).breaks
    assert (b.kind, b.position) == ("changed", 6)
    ((oid,),) = _pg(pg_store, "SELECT originator_id FROM stored_events WHERE notification_id = 6")
    assert not all(link.ok for link in case_proof(pg_store, oid.hex))  # type: ignore[attr-defined]


@postgres
def test_pg_deleted_row_is_named(pg_store: str) -> None:
    _pg(pg_store, "DELETE FROM stored_events WHERE notification_id = 5")
    (b,) = verify(pg_store).breaks
    assert (b.kind, b.position) == ("deleted", 5)


@postgres
def test_pg_edited_chain_row_is_chain_altered(pg_store: str) -> None:
    _pg(pg_store, "UPDATE event_chain SET log_hash = %s WHERE position = 4", bytes(32))
    (b,) = verify(pg_store).breaks
    assert (b.kind, b.position) == ("chain_altered", 4)


@postgres
def test_pg_cli_verify_and_head(pg_store: str) -> None:
    cli = [sys.executable, "-m", "adapters.cli", "audit"]
    clean = subprocess.run([*cli, "verify", "--db", pg_store],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    published = clean.stdout.strip()
    claimed = subprocess.run([*cli, "head", "--db", pg_store],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert claimed.stdout.strip() == published == str(verify(pg_store).head)
    _pg(pg_store, "DELETE FROM stored_events WHERE notification_id = 6")
    broken = subprocess.run([*cli, "verify", "--db", pg_store, "--against", published],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert broken.returncode == 1
    assert "deleted at position 6" in broken.stderr
    assert "case H-" in broken.stderr


def test_a_range_interpreter_that_fails_says_why_and_is_no_verdict(
    store: Path, tmp_path: Path
) -> None:
    """An interpreter that crashes (here: the file is not a database) is not taken for an
    intact range, and the reason is logged, not swallowed: a broken reader must not pass for
    a tampered log, nor be silent while every verify falls back to the careful walk."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 512)
    get_logger()  # logging configured first, as at any edge (configuring clears a capture)
    with structlog.testing.capture_logs() as logs:
        assert audit._check_ranges(junk, [(1, 10), (11, 20)]) is False
    failed = [entry for entry in logs if entry["event"] == "range check failed"]
    assert failed, logs
    assert failed[0]["log_level"] == "warning"
    assert (failed[0]["lo"], failed[0]["hi"]) == (1, 10)
    assert "file is not a database" in failed[0]["error"]  # the interpreter's own error
    with structlog.testing.capture_logs() as logs:
        assert audit._check_ranges(store, [(1, 15), (16, 30)]) is True
    assert logs == []
