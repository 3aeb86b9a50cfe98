"""Tamper evidence on a real SQLite file: every kind of edit behind the engine's back is caught.

Each test copies one pristine store, changes the database file directly with sqlite3 (as a
tamperer with file access would), and runs the verifier; an untouched store verifies clean.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from adapters.audit import Head, parse_head, verify
from adapters.bootstrap import Settings, build_engine
from adapters.store import GENESIS, case_link, frame, log_link
from loop.commands import parse_command
from loop.errors import InvalidCommand
from tests.conftest import SHANGHAI, FakeClock

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


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with 12 cases, written in several transactions (several batches)."""
    path = tmp_path_factory.mktemp("pristine") / "hazards.db"
    clock = FakeClock(START + timedelta(days=30))
    app = build_engine(Settings(db=str(path)), clock=clock)
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
    # The head is the chain recomputed independently here, from the stored bytes.
    previous = GENESIS
    cases: dict[str, bytes] = {}
    conn = sqlite3.connect(store)
    rows = conn.execute(
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
        "ORDER BY rowid"
    ).fetchall()
    stored = dict(conn.execute("SELECT position, case_hash FROM event_chain").fetchall())
    conn.close()
    for pos, oid, version, topic, state in rows:
        previous = log_link(previous, pos, frame(oid, version, topic, state))
        cases[oid] = case_link(cases.get(oid, GENESIS), previous)
        assert stored[pos] == cases[oid]
    assert result.head == Head(n, previous)
    assert hashlib.sha256(GENESIS + (1).to_bytes(8, "big") + frame(*rows[0][1:])).digest() != (
        GENESIS
    )


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
        previous = GENESIS
        cases: dict[str, bytes] = {}
        for pos, o, v, t, s in rows:
            previous = log_link(previous, pos, frame(o, v, t, s))
            cases[o] = case_link(cases.get(o, GENESIS), previous)
            conn.execute(
                "UPDATE event_chain SET log_hash=?, case_hash=? WHERE position=?",
                (previous, cases[o], pos),
            )
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


def test_appending_keeps_an_earlier_published_head_valid(store: Path, clock: FakeClock) -> None:
    published = verify(store).head
    app = build_engine(Settings(db=str(store)), clock=clock)
    try:
        result = app.handle(
            parse_command({"command": "report", "hazard_id": "H-000", "actor": "wang"})
        )
        assert result.ok, result.to_dict()
    finally:
        app.close()
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
