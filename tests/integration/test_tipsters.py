"""Confidential tipsters, and events stored by yesterday's code loading into today's model."""

from __future__ import annotations

import base64
import errno
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from adapters import tipsters
from adapters.audit import verify
from adapters.bootstrap import Settings, build_engine
from adapters.store import parse_db
from loop.application import HazardLoop
from loop.commands import fingerprint, parse_command
from loop.errors import IdempotencyKeyReused, StoreError
from loop.hazard import Erasure, Hazard
from tests.conftest import FakeClock
from tests.integration.test_pg_store import assert_chains_intact, chain_rows

NAME = "举报人张秀英"  # the tipster: must never be readable from the file or the logs
TIP = {
    "command": "discover", "hazard_id": "TIP-1", "actor": "grid-wang", "grid": "G1",
    "category": "fire", "grade": "general", "title": "locked fire exit",
    "source": "public_tip", "reporter": NAME, "at": "2026-11-20T09:00:00+08:00",
}  # fmt: skip
DATA = Path(__file__).parent.parent / "data"


def _file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def _pg(store: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(**parse_db(store).psycopg_kwargs(), autocommit=True)


def _stored_bytes(store: str) -> bytes:
    """Everything the store holds: the SQLite files' bytes; on PostgreSQL every value of every
    table (bytea as its bytes, text as UTF-8) and the tables' files as the server wrote them."""
    if parse_db(store).pg is None:
        return _file_bytes(Path(store))
    out: list[bytes] = []
    with _pg(store) as conn:
        conn.execute("CHECKPOINT")  # the tables' files as of now, not older pages
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]  # fmt: skip
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # type: ignore[arg-type]
                for value in row:
                    out.append(bytes(value) if isinstance(value, bytes | memoryview)
                               else str(value).encode())  # fmt: skip
            (path,) = conn.execute(  # type: ignore[misc]
                "SELECT pg_relation_filepath(%s)", (table,)
            ).fetchone() or (None,)
            if path:
                out.append(conn.execute(
                    "SELECT pg_read_binary_file(%s)", (path,)).fetchone()[0])  # type: ignore[index]  # fmt: skip
    return b"".join(out)


def _head(store: str) -> tuple[int, bytes]:
    """The chain head, after checking every link of both chains."""
    assert_chains_intact(store)
    _, _, head = chain_rows(store)
    return int(head[0]), head[1]


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        input=stdin, capture_output=True, text=True, check=False,
        env={**os.environ, "HAZARDLOOP_LOG_LEVEL": "debug"},
    )  # fmt: skip


def test_name_is_nowhere_in_the_store_or_the_logs_and_shows_only_when_revealed(
    store: str,
) -> None:
    applied = _cli("apply", "-", "--db", store, stdin=json.dumps(TIP) + "\n")
    assert applied.returncode == 0, applied.stderr
    assert applied.stderr  # the per-command log line was written…
    assert NAME not in applied.stderr + applied.stdout  # …without the name
    app = build_engine(Settings(db=store))
    try:
        hazard = app.get_hazard("TIP-1")
        assert hazard.reporter_sealed
        assert NAME not in hazard.reporter
        assert app.vault is not None
        assert app.vault.open("TIP-1", hazard.reporter) == NAME
    finally:
        app.close()
    everything = _stored_bytes(store)
    assert b"TIP-1" in everything  # the search does see the store's contents
    for encoded in (NAME.encode(), NAME.encode("utf-16-le"), NAME.encode("gb18030")):
        assert encoded not in everything
    shown = _cli("show", "TIP-1", "--db", store)
    assert json.loads(shown.stdout)["reporter"] == "(confidential)"
    assert NAME not in shown.stderr
    revealed = _cli("show", "TIP-1", "--db", store, "--reveal-tipster")
    assert json.loads(revealed.stdout)["reporter"] == NAME
    history = _cli("history", "TIP-1", "--db", store)
    assert history.returncode == 0
    assert NAME not in history.stdout + history.stderr


def test_a_retried_tip_is_recognised_by_a_keyed_fingerprint_not_a_guessable_one(
    engine: HazardLoop, store: str
) -> None:
    """The idempotency table keeps a fingerprint of each keyed command: for a public tip it
    is taken over the vault's keyed digest of the reporter, so a guess of the name and the
    other fields cannot be checked against it by whoever reads the store."""
    keyed_tip = {**TIP, "idempotency_key": "pda-7:tip-1"}
    first = engine.handle(parse_command(keyed_tip))
    assert first.ok
    again = engine.handle(parse_command(keyed_tip))  # a retry: the first result, no new event
    assert (again.ok, again.version, len(engine.history("TIP-1"))) == (True, 1, 1)
    other = parse_command({**keyed_tip, "reporter": "someone else"})
    with pytest.raises(IdempotencyKeyReused):  # the reporter still tells commands apart
        engine.handle(other)
    everything = _stored_bytes(store)
    assert engine.vault is not None
    kept = fingerprint(parse_command(keyed_tip), engine.vault.digest)
    assert kept.encode() in everything  # the search finds the fingerprint the store keeps
    guessable = fingerprint(parse_command(keyed_tip))  # the plain SHA-256 of the command
    assert guessable.encode() not in everything
    assert guessable != kept


def test_erasure_is_for_good_and_breaks_no_chain(engine: HazardLoop, store: str) -> None:
    assert engine.handle(parse_command(TIP)).ok
    token = engine.get_hazard("TIP-1").reporter
    sqlite = parse_db(store).pg is None
    select = "SELECT wrapped FROM tipster_keys WHERE hazard_id='TIP-1'"
    if sqlite:
        conn = sqlite3.connect(store)
        (wrapped,) = conn.execute(select).fetchone()
        conn.close()
        head_before = verify(Path(store)).head
    else:
        with _pg(store) as pg:
            (wrapped,) = pg.execute(select).fetchone()  # type: ignore[misc]
        head_before = _head(store)
    assert bytes(wrapped) in _stored_bytes(store)  # the search does see the key before
    assert engine.vault is not None
    assert engine.vault.erase("TIP-1") == Erasure(erased=True, final_on_disk=True)
    assert engine.vault.open("TIP-1", token) is None
    assert engine.vault.erase("TIP-1") == Erasure(erased=False, final_on_disk=True)
    if sqlite:
        after = verify(Path(store))
        assert after.ok
        assert after.head == head_before  # the events and their chains are untouched
    else:
        assert _head(store) == head_before
    assert bytes(wrapped) not in _stored_bytes(store)  # the key's bytes are gone from the store
    shown = _cli("show", "TIP-1", "--db", store, "--reveal-tipster")
    assert json.loads(shown.stdout)["reporter"] == "(erased)"
    # The case still loads, in this process and in a fresh one, and its dossier proof holds.
    assert engine.get_hazard("TIP-1").reporter == token
    from adapters.dossier import build_dossier

    assert build_dossier(engine, "TIP-1")["proof"]["intact"]


def _wrapped_key(db: str) -> bytes:
    conn = sqlite3.connect(db)
    (wrapped,) = conn.execute("SELECT wrapped FROM tipster_keys WHERE hazard_id='TIP-1'").fetchone()
    conn.close()
    return bytes(wrapped)


def _reader(db: str) -> sqlite3.Connection:
    """Another connection holding a read transaction (a running server or report): it reads
    the snapshot of before the erase until it ends."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM tipster_keys").fetchone()
    return conn


@pytest.mark.sqlite_only("holds a read transaction on the SQLite file and searches its bytes")
def test_an_erase_held_back_by_a_reader_says_so_and_finishes_when_run_again(
    engine: HazardLoop, store: str
) -> None:
    assert engine.handle(parse_command(TIP)).ok
    wrapped = _wrapped_key(store)
    reader = _reader(store)
    try:
        assert engine.vault is not None
        started = time.monotonic()
        done = engine.vault.erase("TIP-1", wait=0.5)
        assert time.monotonic() - started >= 0.5  # it retried for the time it was given
        # The key is destroyed in the database, but the reader's snapshot keeps its bytes.
        assert done == Erasure(erased=True, final_on_disk=False)
        assert engine.vault.open("TIP-1", engine.get_hazard("TIP-1").reporter) is None
        assert wrapped in _file_bytes(Path(store))
    finally:
        reader.close()
    assert engine.vault.erase("TIP-1") == Erasure(erased=False, final_on_disk=True)
    assert wrapped not in _file_bytes(Path(store))


@pytest.mark.sqlite_only("holds a read transaction on the SQLite file and searches its bytes")
def test_an_erase_waits_for_a_reader_that_ends_within_its_time(
    engine: HazardLoop, store: str
) -> None:
    assert engine.handle(parse_command(TIP)).ok
    wrapped = _wrapped_key(store)
    reader = _reader(store)
    ends = threading.Timer(0.4, reader.close)
    ends.start()
    try:
        assert engine.vault is not None
        assert engine.vault.erase("TIP-1", wait=10) == Erasure(erased=True, final_on_disk=True)
    finally:
        ends.join()
    assert wrapped not in _file_bytes(Path(store))


@pytest.mark.sqlite_only("holds a read transaction on the SQLite file and searches its bytes")
def test_the_cli_erase_says_when_its_bytes_may_remain_and_what_to_do(store: str) -> None:
    assert _cli("apply", "-", "--db", store, stdin=json.dumps(TIP) + "\n").returncode == 0
    wrapped = _wrapped_key(store)
    reader = _reader(store)
    try:
        held = _cli("tipster", "erase", "TIP-1", "--db", store)
        assert held.returncode == 0, held.stderr
        assert json.loads(held.stdout) == {
            "hazard_id": "TIP-1", "erased": True, "final_on_disk": False,
        }  # fmt: skip
        assert "run `hazardloop tipster erase TIP-1` again" in held.stderr
        assert wrapped in _file_bytes(Path(store))
    finally:
        reader.close()
    again = _cli("tipster", "erase", "TIP-1", "--db", store)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "hazard_id": "TIP-1", "erased": False, "final_on_disk": True,
    }  # fmt: skip
    assert "note:" not in again.stderr
    assert wrapped not in _file_bytes(Path(store))
    shown = _cli("show", "TIP-1", "--db", store, "--reveal-tipster")
    assert json.loads(shown.stdout)["reporter"] == "(erased)"


def test_other_reporters_are_not_sealed(engine: HazardLoop) -> None:
    patrol = TIP | {"hazard_id": "PAT-1", "source": "patrol", "reporter": "inspector li"}
    assert engine.handle(parse_command(patrol)).ok
    hazard = engine.get_hazard("PAT-1")
    assert (hazard.reporter, hazard.reporter_sealed) == ("inspector li", False)


def test_a_retried_tip_reuses_its_key(engine: HazardLoop) -> None:
    cmd = parse_command(TIP | {"idempotency_key": "tip-upload-1"})
    first = engine.handle(cmd)
    again = engine.handle(cmd)
    assert first.ok
    assert again.ok
    assert again.replayed
    assert engine.vault is not None
    assert engine.vault.open("TIP-1", engine.get_hazard("TIP-1").reporter) == NAME


def _insert_raw(store: str, rows: list[tuple[str, int, str, bytes]]) -> None:
    """Events inserted as stored bytes, behind the recorder's back."""
    sql = "INSERT INTO stored_events (originator_id, originator_version, topic, state) VALUES "
    if parse_db(store).pg is None:
        conn = sqlite3.connect(store)
        with conn:
            conn.executemany(sql + "(?,?,?,?)", rows)
        conn.close()
    else:
        with _pg(store) as pg, pg.cursor() as cur:
            cur.executemany(sql + "(%s,%s,%s,%s)", rows)  # type: ignore[arg-type]


def _last_discovered_state(store: str) -> bytes:
    sql = "SELECT state FROM stored_events WHERE topic LIKE '%Discovered' ORDER BY {} DESC LIMIT 1"
    if parse_db(store).pg is None:
        conn = sqlite3.connect(store)
        (state,) = conn.execute(sql.format("rowid")).fetchone()
        conn.close()
        return bytes(state)
    with _pg(store) as pg:
        (state,) = pg.execute(sql.format("notification_id")).fetchone()  # type: ignore[arg-type,misc]
    return bytes(state)


def test_stored_v1_events_load_into_todays_model(store: str, clock: FakeClock) -> None:
    """Events captured from the store before Discovered v2, inserted as stored bytes."""
    captured = json.loads((DATA / "stored_v1_case.json").read_text(encoding="utf-8"))["events"]
    app = build_engine(Settings(db=store), clock=clock)
    try:
        _insert_raw(store, [(e["originator_id"], e["originator_version"], e["topic"],
                             e["state"].encode()) for e in captured])  # fmt: skip
        first = json.loads(captured[0]["state"])
        assert "class_version" not in first
        assert "reporter_sealed" not in first
        hazard = app.get_hazard(first["hazard_id"])
        assert isinstance(hazard, Hazard)
        assert hazard.version == len(captured)
        assert hazard.status.value == "closed"
        assert hazard.reporter_sealed is False
        assert hazard.reporter == first["reporter"]
        assert hazard.extension_count == 1
        # And today's code writes v2, which loads back the same way.
        assert app.handle(parse_command(TIP)).ok
        assert json.loads(_last_discovered_state(store))["class_version"] == 2
    finally:
        app.close()


def test_a_v1_public_tip_is_as_confidential_in_the_cli_as_in_the_api(store: str) -> None:
    """Discovered v1 stored a tip's reporter in clear: `show` and `history` hide it all the
    same (the one rule, `is_confidential`), reveal it only with --reveal-tipster, and log that
    reveal without the name; the Python API says the same."""
    from adapters.embed import open_engine

    captured = json.loads((DATA / "stored_v1_case.json").read_text(encoding="utf-8"))["events"]
    build_engine(Settings(db=store)).close()
    _insert_raw(store, [(e["originator_id"], e["originator_version"], e["topic"],
                         e["state"].encode()) for e in captured])  # fmt: skip
    first = json.loads(captured[0]["state"])
    hid, name = first["hazard_id"], first["reporter"]
    assert first["source"] == "public_tip"
    shown = _cli("show", hid, "--db", store, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["reporter"] == "(confidential)"
    history = _cli("history", hid, "--db", store, "--json")
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout.splitlines()[0])["payload"]["reporter"] == "(confidential)"
    for run in (shown, history):
        assert name not in run.stdout + run.stderr
        assert "tipster revealed" not in run.stderr
    for command in ("show", "history"):
        revealed = _cli(command, hid, "--db", store, "--json", "--reveal-tipster")
        assert revealed.returncode == 0, revealed.stderr
        assert name in revealed.stdout
        assert "tipster revealed" in revealed.stderr
        assert name not in revealed.stderr
    api = open_engine(Settings(db=store))
    try:
        assert api.hazard(hid)["reporter"] == "(confidential)"
        assert api.history(hid)[0]["payload"]["reporter"] == "(confidential)"
        assert api.hazard(hid, reveal_tipster=True)["reporter"] == name
    finally:
        api.close()


@pytest.mark.parametrize("bad", ["not-base64!", "c2hvcnQ="])
def test_a_bad_master_key_is_a_clear_error(store: str, bad: str) -> None:
    from loop.errors import StoreError

    with pytest.raises(StoreError, match="HAZARDLOOP_CIPHER_KEY"):
        build_engine(Settings(db=store, cipher_key=bad))


def test_a_read_only_command_makes_no_key_file_and_names_the_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store copied without its key file: reports still run, nothing makes a new key (which
    would never open the tips sealed with the real one), and what needs the key names it."""
    monkeypatch.delenv("HAZARDLOOP_CIPHER_KEY", raising=False)
    monkeypatch.delenv("HAZARDLOOP_CIPHER_KEY_FILE", raising=False)
    db = str(tmp_path / "store.db")
    assert _cli("apply", "-", "--db", db, stdin=json.dumps(TIP) + "\n").returncode == 0
    key = Path(db + ".key")
    kept = tmp_path / "kept.key"
    key.rename(kept)
    report = _cli("report", "overdue", "--db", db, "--format", "json", "--as-of", "2026-11-25")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["as_of"].startswith("2026-11-25")
    shown = _cli("show", "TIP-1", "--db", db)
    assert shown.returncode == 2, shown.stdout
    lines = shown.stderr.strip().splitlines()
    assert len(lines) == 1, shown.stderr
    assert f"the tipster key file {key} is missing" in lines[0]
    assert NAME not in shown.stdout + shown.stderr
    assert not key.exists()  # neither command made one
    monkeypatch.setenv("HAZARDLOOP_CIPHER_KEY_FILE", str(kept))
    revealed = _cli("show", "TIP-1", "--db", db, "--reveal-tipster")
    assert json.loads(revealed.stdout)["reporter"] == NAME  # the real key still opens it


# --------------------------------------------------------------------- the key file, made once


def test_the_key_file_never_exists_without_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the new key is written, the key file's name does not exist yet: a process opening
    the same new store at that moment makes or reads a whole key, never an empty file (it used
    to be created empty, then written: "the key file … is damaged" for the other process)."""
    path = tmp_path / "store.db.key"
    seen: list[bool] = []
    sync = os.fsync

    def fsync(fd: int) -> None:
        seen.append(path.exists())
        sync(fd)

    monkeypatch.setattr(tipsters.os, "fsync", fsync)
    key = tipsters.load_master_key(None, None, path)
    assert seen == [False]  # the key was written, and synced, before the name appeared
    assert key is not None
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert tipsters.load_master_key(None, None, path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["store.db.key"]  # nothing left aside


def test_without_hard_links_the_key_file_is_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db.key"

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(tipsters.os, "link", no_links)
    key = tipsters.load_master_key(None, None, path)
    assert key is not None
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert tipsters.load_master_key(None, None, path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["store.db.key"]


def test_an_empty_key_file_being_written_is_waited_for(tmp_path: Path) -> None:
    """Written in place (no hard links), another process may find the file still empty: it
    reads again until the key is there, within a moment."""
    path = tmp_path / "store.db.key"
    path.touch(mode=0o600)
    key = os.urandom(32)
    late = threading.Timer(0.2, lambda: path.write_bytes(base64.b64encode(key) + b"\n"))
    late.start()
    try:
        assert tipsters.load_master_key(None, None, path) == key
    finally:
        late.join()


def test_a_key_file_that_cannot_be_made_or_read_is_named(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    with pytest.raises(StoreError, match=r"cannot create the key file .*Not a directory"):
        tipsters.load_master_key(None, None, not_a_folder / "store.db.key")
    a_folder = tmp_path / "store.db.key"
    a_folder.mkdir()
    with pytest.raises(StoreError, match=r"cannot read the key file .*Is a directory"):
        tipsters.load_master_key(None, None, a_folder)
