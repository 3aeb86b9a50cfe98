"""Tamper evidence: recompute every event's hash from the exact stored bytes, name the first break.

Reads the store read-only, in one snapshot: a SQLite file with the standard library's sqlite3
(`mode=ro`, one read transaction), a PostgreSQL database with psycopg (`REPEATABLE READ, READ
ONLY`), so a verification can run beside a live engine and can never change what it checks.
A fast check runs first (`adapters.audit_scan` on SQLite, in parallel ranges); the careful walk
runs when it finds anything off, to name the first break. See docs/audit.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import audit_scan
from adapters.logs import get_logger
from adapters.store import (
    CHAIN_TABLE,
    GENESIS,
    HEAD_TABLE,
    StoreLocation,
    chain_format_error,
    chain_link,
    parse_db,
)
from loop.errors import HazardLoopError, InvalidCommand, StoreError

__all__ = [
    "Break",
    "Head",
    "ProofLink",
    "Verification",
    "case_proof",
    "head",
    "head_at",
    "parse_head",
    "printed_head",
    "verify",
]

#: An event as the careful walk reads it: position, id, version, topic, state, and its frame.
#: Text and bytes are read as such whatever a column's storage class, and the frame is built
#: by the database, so this walk and the fast check (adapters/audit_scan.py) read the same bytes.
_EVENT_COLUMNS = (
    "{pos}, {eoid}, originator_version, CAST(topic AS {blob}), CAST(state AS {blob}), "
    "COALESCE({frame}, CAST('' AS {blob})), "  # a NULL column: an empty frame, a changed event
    "{event_classes}"
)
#: The storage classes the engine writes, as `{event_classes}` / `{chain_classes}` read them on
#: SQLite (where a column holds any class, and a text id and a blob id with the same bytes are
#: different keys to the engine); PostgreSQL's columns are typed, so they always match.
EVENT_CLASSES = "text,integer,text,blob"  # originator_id, originator_version, topic, state
CHAIN_CLASSES = (
    "text,integer,integer,blob"  # originator_id, originator_version, recorded_at, log_hash
)

#: Makes a Break (with the subject looked up) from kind, position, originator id, message.
_BreakFn = Callable[..., "Break"]


@dataclass(frozen=True)
class Head:
    """A point of the log: how many events, and the log hash after the last of them."""

    count: int
    log_hash: bytes

    def __str__(self) -> str:
        return f"{self.count}:{self.log_hash.hex()}"


@dataclass(frozen=True)
class Break:
    """The first place where the stored log and its chains disagree."""

    kind: str  # changed | reordered | deleted | inserted | truncated | chain_altered | rewritten
    position: int
    originator_id: str | None
    subject: str | None  # the hazard id (or grid code…) the event belongs to, when readable
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "position": self.position,
            "originator_id": self.originator_id,
            "subject": self.subject,
            "message": self.message,
            "details": self.details,
        }


@dataclass(frozen=True)
class Verification:
    """What `audit verify` found: the head it verified, or the first break."""

    head: Head
    events: int
    breaks: list[Break]
    against: Head | None = None

    @property
    def ok(self) -> bool:
        return not self.breaks

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "head": str(self.head),
            "events": self.events,
            "against": str(self.against) if self.against else None,
            "breaks": [b.to_dict() for b in self.breaks],
        }


#: What reads as a chain head rather than a time wherever one may be given (`--known-at`,
#: `known_at`): digits, a colon, hex digits; `parse_head` then says what is wrong with it.
HEAD_TEXT = re.compile(r"[0-9]+:[0-9A-Fa-f]*")


def is_head_text(text: str) -> bool:
    """Whether `text` is meant as a chain head `COUNT:HASH` (one rule for every reader)."""
    return HEAD_TEXT.fullmatch(text) is not None


def parse_head(text: str) -> Head:
    """Read a published head `COUNT:HASH` (HASH: 64 hex digits)."""
    count, sep, digest = text.strip().partition(":")
    try:
        if not sep or not count.isdigit() or len(digest) != 64:
            raise ValueError
        return Head(int(count), bytes.fromhex(digest))
    except ValueError:
        raise InvalidCommand(
            f"bad head {text!r}: expected COUNT:HASH with 64 hex digits", head=text
        ) from None


#: What the audit functions accept as a store: a SQLite file, a `--db` value, or a location.
StoreRef = Path | str | StoreLocation


class _Reader:
    """Read-only access to one store's tables, the same SQL on both backends.

    SQL is written with `?` parameters; `{pos}` is the events' log position column (SQLite's
    rowid, PostgreSQL's notification_id); `{eoid}` is the events' originator id as the chain
    writes it (32 hex digits for a UUID), `{e_eoid}` the same for the table aliased `e`;
    `{oid}` is a parameter compared with the events' originator id. Everything is read in one
    read-only transaction: one snapshot of the store.
    """

    backend = "sqlite"
    pos = "rowid"
    eoid = "CAST({a}originator_id AS TEXT)"  # {a}: a table alias, or nothing
    oid = "?"
    blob = "BLOB"
    #: The frame as the fast check builds it (see adapters/audit_scan.py); {a}: an alias.
    frame = audit_scan.FRAME_SQL
    event_classes = (  # {a}: a table alias, or nothing
        "typeof({a}originator_id) || ',' || typeof({a}originator_version) || ',' || "
        "typeof({a}topic) || ',' || typeof({a}state)"
    )
    chain_classes = (
        "typeof({a}originator_id) || ',' || typeof({a}originator_version) || ',' || "
        "typeof({a}recorded_at) || ',' || typeof({a}log_hash)"
    )
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, display: str) -> None:
        self.display = display

    def sql(self, text: str) -> str:
        return text.format(
            pos=self.pos,
            eoid=self.eoid.format(a=""),
            e_eoid=self.eoid.format(a="e."),
            oid=self.oid,
            blob=self.blob,
            frame=self.frame.format(a=""),
            frame_e=self.frame.format(a="e."),
            event_classes=self.event_classes.format(a=""),
            chain_classes=self.chain_classes.format(a=""),
            event_classes_e=self.event_classes.format(a="e."),
            chain_classes_c=self.chain_classes.format(a="c."),
        )

    def one(self, text: str, *params: Any) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def all(self, text: str, *params: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def stream(self, text: str, *params: Any) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def fail(self, exc: Exception) -> StoreError:
        return StoreError(f"cannot read the event store {self.display}: {exc}")


class _SQLiteReader(_Reader):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        if not path.is_file():
            raise StoreError(f"no event store at {path}")
        try:
            self.conn = sqlite3.connect(audit_scan.readonly_uri(path), uri=True)
            # Text that is not UTF-8 (a damaged row) is read with U+FFFD, never an exception.
            self.conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            self.conn.execute("BEGIN")  # one snapshot for every read below
            self.conn.execute(f"SELECT 1 FROM {CHAIN_TABLE} LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise self.fail(exc) from exc

    def one(self, text: str, *params: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(self.sql(text), params).fetchone()
        return row

    def all(self, text: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(self.sql(text), params).fetchall()

    def stream(self, text: str, *params: Any) -> Iterator[tuple[Any, ...]]:
        cursor = self.conn.execute(self.sql(text), params)
        while batch := cursor.fetchmany(4096):
            yield from batch

    def close(self) -> None:
        self.conn.close()


class _PostgresReader(_Reader):
    backend = "postgres"
    pos = "notification_id"
    event_classes = f"'{EVENT_CLASSES}'"  # typed columns: always what the engine writes
    chain_classes = f"'{CHAIN_CLASSES}'"
    eoid = "{a}originator_id"
    blob = "bytea"

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location.display)
        import psycopg

        self.errors = (psycopg.Error,)
        self._cursors = 0
        try:
            self.conn = psycopg.connect(**location.psycopg_kwargs())
            self.conn.read_only = True
            # One snapshot for every read below, however long the walk takes.
            self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            row = self.conn.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = 'stored_events' "
                "AND column_name = 'originator_id'"
            ).fetchone()
            self.conn.execute(f"SELECT 1 FROM {CHAIN_TABLE} LIMIT 1").fetchall()
        except psycopg.Error as exc:
            raise self.fail(exc) from exc
        if row is not None and row[0] == "uuid":
            self.eoid = "replace({a}originator_id::text, '-', '')"
            self.oid = "?::uuid"
        # The frame as adapters.store.frame builds it, from the stored values; {a}: an alias.
        self.frame = (
            f"(convert_to({self.eoid} || chr(31) || {{a}}originator_version::text || "
            "chr(31) || {a}topic || chr(31), 'UTF8') || {a}state)"
        )

    def sql(self, text: str) -> str:
        return super().sql(text).replace("?", "%s")

    def one(self, text: str, *params: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(self.sql(text), params).fetchone()
        return row

    def all(self, text: str, *params: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(self.sql(text), params).fetchall()
        return rows

    def stream(self, text: str, *params: Any) -> Iterator[tuple[Any, ...]]:
        self._cursors += 1
        # Server-side, rows in batches; binary: bytea arrives as bytes, not as hex to decode.
        cursor = self.conn.cursor(name=f"audit_{self._cursors}", binary=True)
        cursor.itersize = 4096
        try:
            cursor.execute(self.sql(text), params)
            yield from cursor
        finally:
            cursor.close()

    def close(self) -> None:
        self.conn.close()


def _open(store: StoreRef) -> _Reader:
    """A reader on a store: a SQLite file (Path), a `--db` value (str) or a parsed location.

    A store whose chains are in another format is refused here, with what to do about it."""
    reader: _Reader
    if isinstance(store, Path):
        reader = _SQLiteReader(store)
    else:
        location = parse_db(store) if isinstance(store, str) else store
        reader = (
            _PostgresReader(location) if location.pg is not None else _SQLiteReader(location.path)
        )
    try:
        if isinstance(reader, _SQLiteReader):
            columns = [str(r[1]) for r in reader.all(f"PRAGMA table_info({CHAIN_TABLE})")]
        else:
            columns = [
                str(r[0])
                for r in reader.all(
                    "SELECT column_name FROM information_schema.columns "
                    f"WHERE table_schema = current_schema() AND table_name = '{CHAIN_TABLE}'"
                )
            ]
        error = chain_format_error(columns, reader.display)
    except reader.errors as exc:
        reader.close()
        raise reader.fail(exc) from exc
    if error is not None:
        reader.close()
        raise error
    return reader


def head(store: StoreRef) -> Head:
    """The head the store claims (its head row), without verifying anything."""
    reader = _open(store)
    try:
        row = reader.one(f"SELECT count, log_hash FROM {HEAD_TABLE} WHERE id=1")
    except reader.errors as exc:
        raise reader.fail(exc) from exc
    finally:
        reader.close()
    return Head(0, GENESIS) if row is None else Head(int(row[0]), bytes(row[1]))


def _subject(reader: _Reader, originator_id: str | None) -> str | None:
    """The client's id of a case (hazard_id, or a grid's code…), read from its first event."""
    if originator_id is None:
        return None
    try:
        row = reader.one(
            "SELECT CAST(state AS {blob}) FROM stored_events WHERE originator_id={oid} "
            "ORDER BY originator_version LIMIT 1",
            originator_id,
        )
    except reader.errors:
        return None  # not even an id this store could hold (a damaged chain row)
    raw = _blob(row[0]) if row is not None else None
    if raw is None:
        return None
    try:
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        state = None  # the first event itself may be the damaged one: read around the damage
    for key in ("hazard_id", "code"):
        value = state.get(key) if isinstance(state, dict) else None
        if isinstance(value, str):
            return value
        found = re.search(rb'"%s":"([^"\\]{1,64})"' % key.encode(), raw)
        if state is None and found:
            return found.group(1).decode("utf-8", "replace")
    return None


#: Below this many events the calling process verifies; from it, the log is split into ranges,
#: each checked by its own interpreter (with APSW), one per CPU.
PARALLEL_FROM = 50_000


def verify(
    store: StoreRef, against: Head | None = None, *, workers: int | None = None
) -> Verification:
    """Recompute both chains over the whole log; name the first break.

    The fast path checks every link of every event (on SQLite in position ranges, in parallel
    processes on a large log; on PostgreSQL in one pass over a join) and only says "intact" or
    "something is off"; when anything is off, the careful walk runs to name the first break and
    its kind. The careful walk reads in one read-only snapshot (docs/audit.md).
    """
    reader = _open(store)
    try:
        fast = _fast_verify(reader, against, workers)
        if fast is not None:
            return fast
        return _verify(reader, against)
    except reader.errors as exc:
        raise reader.fail(exc) from exc
    finally:
        reader.close()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: The first and last positions of the events and of the chain. One aggregate per subquery:
#: SQLite reads a MIN or MAX off the index's end only when it is its query's sole aggregate (both
#: in one SELECT scan the whole table, a third of the check's time on a 525,000-event store).
_BOUNDS = (
    "SELECT (SELECT MIN({pos}) FROM stored_events), (SELECT MAX({pos}) FROM stored_events), "
    f"(SELECT MIN(position) FROM {CHAIN_TABLE}), (SELECT MAX(position) FROM {CHAIN_TABLE})"
)


def _fast_verify(reader: _Reader, against: Head | None, workers: int | None) -> Verification | None:
    """Every link checked in a tight loop; None whenever the careful walk must take over."""
    # Both tables must span exactly 1..count; that nothing inside is missing, the checks prove.
    bounds = reader.one(_BOUNDS)
    events, links = (bounds[:2], bounds[2:]) if bounds else (None, None)
    head_row = reader.one(f"SELECT count, log_hash FROM {HEAD_TABLE} WHERE id=1")
    if head_row is None or not isinstance(head_row[0], int) or head_row[0] < 1:
        return None  # empty, or no head: the careful walk says which
    count = head_row[0]
    if events != (1, count) or links != (1, count):
        return None  # a deletion, an insertion, a truncation: the careful walk names it
    if isinstance(reader, _SQLiteReader):
        if workers is None:
            workers = min(_cpus(), 4) if count >= PARALLEL_FROM else 1
        ranges = _split(count, max(1, workers))
        if not _check_ranges(reader.path, ranges, here=count < PARALLEL_FROM):
            return None
    elif not _check_log(reader, count):
        return None
    last = reader.one(f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", count)
    assert last is not None
    if head_row[1] != last[0]:
        return None
    if against is not None and against.count == 0 and against.log_hash != GENESIS:
        return None  # no log has that head: the careful walk says `rewritten`
    if against is not None and against.count > 0:
        if against.count > count:
            return None
        pinned = reader.one(f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", against.count)
        if pinned is None or pinned[0] != against.log_hash:
            return None
    return Verification(Head(count, bytes(last[0])), count, [], against)


def _split(count: int, workers: int) -> list[tuple[int, int]]:
    """Positions 1..count in at most `workers` ranges of equal size (the last may be shorter)."""
    size = -(-count // workers)
    return [(lo, min(count, lo + size - 1)) for lo in range(1, count + 1, size)]


def _check_log(reader: _Reader, count: int) -> bool:
    """PostgreSQL's fast check: the whole log in one pass, as `audit_scan` checks a range.

    The database joins each event to its chain row (by position, id and version: its types are
    strict, so `=` is byte equality) and builds the frame exactly as the careful walk's; a
    case's previous event is found by version, with the same rule as `audit_scan._check`.
    """
    rows = reader.stream(
        "SELECT {frame_e}, c.log_hash, c.recorded_at, c.originator_id, c.originator_version "
        f"FROM stored_events e JOIN {CHAIN_TABLE} c ON c.position = e.{{pos}} "
        "AND c.originator_id = {e_eoid} AND c.originator_version = e.originator_version "
        "ORDER BY e.{pos}"
    )
    genesis = GENESIS
    previous = genesis
    cases: dict[str, tuple[int, bytes]] = {}
    get = cases.get
    position = 1
    for framed, log_hash, micros, oid, version in rows:
        if framed is None:
            return False  # a NULL topic or state (the schema allows it): the careful walk says
        if version <= 1:
            before = genesis  # a case's first version (1, or 0 for the library's own tests)
        else:
            last = get(oid)
            if last is None or last[0] != version - 1:
                return False  # not the case's previous version, or none earlier in the log
            before = last[1]
        previous = chain_link(previous, before, position, micros, framed)
        if previous != log_hash:
            return False
        cases[oid] = (version, previous)
        position += 1
    return position == count + 1


def _check_ranges(path: Path, ranges: list[tuple[int, int]], *, here: bool = False) -> bool:
    """Check each range in a fresh interpreter, all at once (or, `here` with one range, here).

    The interpreters run `adapters/audit_scan.py` as a script in isolated mode, reading with
    APSW (standard library and APSW only: they start in milliseconds, where a multiprocessing
    child would import this program again). This process only waits: it keeps its own
    connection to the store, and a second SQLite library in it could drop that connection's
    locks (adapters/audit_scan.py). Each range seeds itself from the stored hashes just before
    it, which the range holding them checks. `here`: a small log, checked by this process with
    the standard library's reader, as fast as starting an interpreter would be.
    """
    if here and len(ranges) == 1:
        return audit_scan.check_range(str(path), *ranges[0])
    script = audit_scan.__file__
    children: list[subprocess.Popen[bytes]] = []
    try:
        for lo, hi in ranges:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-I", script, str(path), str(lo), str(hi)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        for child, (lo, hi) in zip(children, ranges, strict=True):
            out, err = child.communicate()
            if child.returncode != 0:
                # Not a verdict (a range says "broken" with status 0): the interpreter failed,
                # e.g. APSW installed but broken. The careful walk still gives the verdict,
                # only slower; say why, so nobody mistakes it for a tampered log.
                last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
                get_logger("hazardloop.audit").warning(
                    "range check failed", lo=lo, hi=hi, status=child.returncode, error=last[0]
                )
            if child.returncode != 0 or out.strip() != b"ok":
                return False
        return True
    finally:
        for child in children:  # a break found, or an interrupt: stop the others' work
            if child.returncode is None:  # not yet heard (`communicate` sets it)
                child.kill()  # (a no-op for one that has finished)
                child.communicate()


def _verify(reader: _Reader, against: Head | None) -> Verification:
    events = reader.stream(f"SELECT {_EVENT_COLUMNS} FROM stored_events ORDER BY {{pos}}")
    chain = reader.stream(
        "SELECT position, CAST(originator_id AS TEXT), originator_version, "
        "CAST(log_hash AS {blob}), recorded_at, {chain_classes} "
        f"FROM {CHAIN_TABLE} ORDER BY position"
    )
    genesis = GENESIS
    previous = genesis
    cases: dict[str, tuple[int, bytes]] = {}
    count = 0
    pinned: bytes | None = None
    found: Break | None = None
    e = next(events, None)
    ch = next(chain, None)

    def brk(kind: str, position: int, oid: str | None, message: str, **details: Any) -> Break:
        return Break(kind, position, oid, _subject(reader, oid), message, details)

    while e is not None and ch is not None:
        position = e[0]
        if position != ch[0] or position != count + 1:
            found = _misaligned(reader, e, ch, count, brk)
            break
        oid, version = e[1], e[2]
        if e[6] != EVENT_CLASSES:
            found = brk(
                "changed",
                position,
                oid,
                f"the event at position {position} is not stored as the engine stores events "
                f"(storage classes {e[6]}, not {EVENT_CLASSES})",
                storage_classes=e[6],
            )
            break
        if ch[5] != CHAIN_CLASSES:
            found = brk(
                "chain_altered",
                position,
                oid,
                f"the chain row at position {position} is not stored as the engine stores it "
                f"(storage classes {ch[5]}, not {CHAIN_CLASSES})",
                storage_classes=ch[5],
            )
            break
        # The case's previous hash: its event one version earlier, which must be the case's
        # last event before this one in the log (the writer's and the fast check's rule too).
        last = cases.get(oid)
        if version <= 1:
            before: bytes | None = genesis  # a case's first version: 1 (0 in library tests)
        elif last is not None and last[0] == version - 1:
            before = last[1]
        else:
            before = None
        log_hash = None if before is None else chain_link(previous, before, position, ch[4], e[5])
        if log_hash is not None and log_hash == ch[3] and (oid, version) != (ch[1], ch[2]):
            found = brk(
                "chain_altered",
                position,
                oid,
                f"the event at position {position} is intact but its chain row names another "
                f"case or version ({ch[1]} version {ch[2]})",
            )
            break
        if log_hash is None or log_hash != ch[3] or (oid, version) != (ch[1], ch[2]):
            found = _mismatch(reader, e, ch, last, log_hash, brk)
            break
        cases[oid] = (version, log_hash)
        previous = log_hash
        count = position
        if against is not None and position == against.count:
            pinned = log_hash
        e = next(events, None)
        ch = next(chain, None)
    if found is None and e is not None:
        found = brk(
            "inserted",
            e[0],
            e[1],
            f"event at position {e[0]} is not in the hash chain (written behind the engine)",
        )
    if found is None and ch is not None:
        remaining = 1 + sum(1 for _ in chain)
        found = brk(
            "truncated",
            ch[0],
            ch[1],
            f"the log ends at position {count}, but the chain records {remaining} more event(s)",
            missing=remaining,
        )
    if found is None:
        found = _check_head(reader, count, previous, brk)
    if found is None and against is not None:
        found = _check_against(against, count, pinned, brk)
    return Verification(Head(count, previous), count, [found] if found else [], against)


def _misaligned(
    reader: _Reader, e: tuple[Any, ...], ch: tuple[Any, ...], count: int, brk: _BreakFn
) -> Break:
    """Positions disagree: an event without its chain row, or a chain row without its event."""
    expected = count + 1
    if e[0] < ch[0]:
        return brk(
            "inserted",
            e[0],
            e[1],
            f"event at position {e[0]} is not in the hash chain (written behind the engine)",
        )
    missing = ch[0] if ch[0] < e[0] else expected
    oid = ch[1] if ch[0] < e[0] else None
    return brk(
        "deleted",
        missing,
        oid,
        f"the event at position {missing} has been deleted",
        next_present=e[0],
    )


def _case_before(reader: _Reader, oid: str, version: object) -> bytes | None:
    """The stored hash of the case's event one version earlier (zeros for a first event);
    None when there is none, or when what is stored is not what the engine writes."""
    if not isinstance(version, int):
        return None
    if version <= 1:
        return GENESIS
    row = reader.one(
        f"SELECT log_hash FROM {CHAIN_TABLE} WHERE originator_id=? AND originator_version=?",
        oid,
        version - 1,
    )
    return _blob(row[0]) if row else None


def _blob(value: object) -> bytes | None:
    """A stored hash as bytes; None for anything the engine never writes there."""
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


def _mismatch(
    reader: _Reader,
    e: tuple[Any, ...],
    ch: tuple[Any, ...],
    last: tuple[int, bytes] | None,
    computed: bytes | None,
    brk: _BreakFn,
) -> Break:
    """An event whose bytes do not give its stored hash: changed, moved, or the chain edited.

    `last` is the case's last event before it in the log (version, hash); `computed` the hash
    recomputed from the stored bytes, None when the case's previous version is not where it
    must be. Values the engine never writes (a NULL, a text hash) count as not matching.
    """
    position, oid, version = e[0], e[1], e[2]
    framed = e[5]
    # Is this event another position's event (rows swapped)? Look for the chain row it fits.
    for q, _oid, q_version, q_hash, q_micros in reader.all(
        f"SELECT position, originator_id, originator_version, log_hash, recorded_at "
        f"FROM {CHAIN_TABLE} WHERE originator_id=? AND originator_version=? AND position<>?",
        oid,
        version,
        position,
    ):
        prior = reader.one(f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", q - 1)
        q_prior = _blob(prior[0]) if prior else GENESIS
        q_before = _case_before(reader, oid, version)
        if q_prior is None or q_before is None or not isinstance(q_micros, int):
            continue
        if chain_link(q_prior, q_before, q, q_micros, framed) == _blob(q_hash):
            return brk(
                "reordered",
                position,
                oid,
                f"the event at position {position} belongs at position {q} (events swapped)",
                belongs_at=q,
                version=q_version,
            )
    if computed is None:
        seen = None if last is None else last[0]
        return brk(
            "changed",
            position,
            oid,
            f"the event at position {position} is version {version} of its case, whose "
            f"previous event in the log is version {seen}: a case's versions run 1, 2, 3…",
            version=version,
            previous_version=seen,
        )
    if (oid, version) == (ch[1], ch[2]):
        # Intact event, edited chain row? Then the next link still fits what we computed.
        nxt = reader.one(
            f"SELECT {_EVENT_COLUMNS} FROM stored_events WHERE {{pos}}=?", position + 1
        )
        stored_next = reader.one(
            f"SELECT log_hash, recorded_at FROM {CHAIN_TABLE} WHERE position=?", position + 1
        )
        if nxt is not None and stored_next is not None:
            next_before = computed if nxt[1] == oid else _case_before(reader, nxt[1], nxt[2])
            next_micros = stored_next[1]
            if next_before is not None and isinstance(next_micros, int):
                fits = chain_link(computed, next_before, position + 1, next_micros, nxt[5])
                if fits == _blob(stored_next[0]):
                    return brk(
                        "chain_altered",
                        position,
                        oid,
                        "the event is intact but its stored hash was changed",
                    )
        elif nxt is None:
            head_row = reader.one(f"SELECT log_hash FROM {HEAD_TABLE} WHERE id=1")
            if head_row is not None and _blob(head_row[0]) == computed:
                return brk(
                    "chain_altered",
                    position,
                    oid,
                    "the event is intact but its stored hash was changed",
                )
    topic = bytes(e[3]).decode("utf-8", "replace") if e[3] is not None else None
    return brk(
        "changed",
        position,
        oid,
        f"the event at position {position} (version {version}), or its record time, was "
        "changed after it was recorded",
        version=version,
        topic=topic,
    )


def _check_head(reader: _Reader, count: int, last: bytes, brk: _BreakFn) -> Break | None:
    row = reader.one(f"SELECT count, log_hash FROM {HEAD_TABLE} WHERE id=1")
    if row is None:
        if count == 0:
            return None
        return brk("chain_altered", count, None, "the chain head row is missing")
    claimed, claimed_hash = row[0], _blob(row[1])
    if not isinstance(claimed, int) or claimed_hash is None:
        return brk(
            "chain_altered", count, None, "the chain head row holds values the engine never writes"
        )
    if claimed > count:
        return brk(
            "truncated",
            count + 1,
            None,
            f"the log ends at event {count}, but its head records {claimed} events",
            missing=claimed - count,
        )
    if claimed < count:
        return brk(
            "inserted",
            claimed + 1,
            None,
            f"the log holds {count} events, but its head records only {claimed}",
        )
    if claimed_hash != last:
        return brk("chain_altered", count, None, "the chain head's hash was changed")
    return None


def _check_against(against: Head, count: int, pinned: bytes | None, brk: _BreakFn) -> Break | None:
    if against.count > count:
        return brk(
            "truncated",
            count + 1,
            None,
            f"the published head counts {against.count} events; the log now holds {count}",
            missing=against.count - count,
        )
    if against.count == 0:
        pinned = GENESIS  # the only head of count 0: the hash before the first event
    if pinned != against.log_hash:
        return brk(
            "rewritten",
            against.count,
            None,
            f"the log's hash at event {against.count} is not the published one: history up to "
            "that head has been rewritten"
            if against.count
            else "a head of 0 events has the hash of no event (64 zeros); this one is no "
            "head of this or any log",
            published=against.log_hash.hex(),
            found=pinned.hex() if pinned else None,
        )
    return None


@dataclass(frozen=True)
class ProofLink:
    """One event of a case in the proof: everything its hash is computed from, and the hash.

    hash = SHA-256(previous_log_hash ‖ previous_case_hash ‖ position as 8 bytes ‖
    recorded_at_micros as 8 signed bytes ‖ the frame), all big-endian: docs/audit.md.
    """

    version: int
    position: int
    recorded_at_micros: int | None  # the record time as hashed: µs since the epoch, UTC
    frame_base64: str  # the event's exact stored bytes as hashed (its frame), base64
    event_sha256: str  # SHA-256 of the frame, hex
    previous_log_hash: str  # the hash of the log's event at position - 1 (zeros for the first)
    previous_case_hash: str  # the hash of the case's event one version earlier (zeros: first)
    log_hash: str  # this event's hash: its link in the log's chain and in the case's
    ok: bool  # recomputed from the stored bytes and the stored hashes before it, it matches

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def case_proof(
    store: StoreRef, originator_id: str, up_to_version: int | None = None
) -> list[ProofLink]:
    """Recompute a case's links from its stored bytes: what a dossier carries as its proof.

    Each link is checked on its own against the stored hashes before it, so a proof points at
    the one event that was changed rather than at everything after it. A link is not `ok`
    either when its chain row names another case or version, when the event or its chain row
    is not stored as the engine stores them, or when the case's versions skip one.
    """
    reader = _open(store)
    try:
        rows = reader.all(
            f"SELECT e.{{pos}}, e.originator_version, COALESCE({{frame_e}}, CAST('' AS {{blob}})), "
            f"c.log_hash, c.recorded_at, p.log_hash, {{e_eoid}} = c.originator_id "
            f"AND e.originator_version = c.originator_version, "
            "{event_classes_e}, {chain_classes_c} FROM stored_events e "
            f"JOIN {CHAIN_TABLE} c ON c.position = e.{{pos}} "
            f"LEFT JOIN {CHAIN_TABLE} p ON p.position = e.{{pos}} - 1 "
            "WHERE e.originator_id={oid} ORDER BY e.originator_version",
            originator_id,
        )
    except reader.errors as exc:
        raise reader.fail(exc) from exc
    finally:
        reader.close()
    links: list[ProofLink] = []
    case: bytes | None = GENESIS
    expected = 1
    for position, version, framed, log_hash, micros, prior, same, e_classes, c_classes in rows:
        if up_to_version is not None and isinstance(version, int) and version > up_to_version:
            break
        framed = bytes(framed)
        previous = _blob(prior) if prior is not None else GENESIS
        stored = _blob(log_hash)
        before = GENESIS if isinstance(version, int) and version <= 1 else None
        if before is None and version == expected:
            before = case
        ok = (
            bool(same)
            and e_classes == EVENT_CLASSES
            and c_classes == CHAIN_CLASSES
            and isinstance(micros, int)
            and previous is not None
            and before is not None
            and chain_link(previous, before, position, micros, framed) == stored
        )
        links.append(
            ProofLink(
                version if isinstance(version, int) else -1,
                position,
                micros if isinstance(micros, int) else None,
                base64.b64encode(framed).decode("ascii"),
                hashlib.sha256(framed).hexdigest(),
                (previous or b"").hex(),
                (before or b"").hex(),
                (stored or b"").hex(),
                ok,
            )
        )
        case = stored
        expected = version + 1 if isinstance(version, int) else -1
    return links


def head_at(store: StoreRef, position: int) -> Head:
    """The log's head after `position` events, as stored (verify it with `verify`)."""
    if position == 0:
        return Head(0, GENESIS)
    reader = _open(store)
    try:
        row = reader.one(f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", position)
    except reader.errors as exc:
        raise reader.fail(exc) from exc
    finally:
        reader.close()
    if row is None:
        raise StoreError(f"the hash chain has no position {position}")
    return Head(position, bytes(row[0]))


def printed_head(store: StoreRef, position: int) -> str | None:
    """The head a report or dossier prints for the events 1..`position` (`COUNT:HASH`), or None
    for a store written before the hash chains: the one rule of the CLI, the API and the
    nightly."""
    try:
        return str(head_at(store, position))
    except HazardLoopError:
        return None
