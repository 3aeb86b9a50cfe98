"""Tamper evidence: recompute both hash chains from the exact stored bytes, name the first break.

Reads the SQLite file read-only with the standard library's sqlite3, so a verification can run
beside a live engine and can never change what it checks. See docs/audit.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.store import CHAIN_TABLE, GENESIS, HEAD_TABLE, case_link, frame, log_link
from loop.errors import InvalidCommand, StoreError

__all__ = [
    "Break",
    "Head",
    "ProofLink",
    "Verification",
    "case_proof",
    "head",
    "head_at",
    "parse_head",
    "verify",
]

_SEP = b"\x1f"

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


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"no event store at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute(f"SELECT 1 FROM {CHAIN_TABLE} LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the event store {path}: {exc}") from exc
    return conn


def head(path: Path) -> Head:
    """The head the store claims (its head row), without verifying anything."""
    conn = _connect(path)
    try:
        row = conn.execute(f"SELECT count, log_hash FROM {HEAD_TABLE} WHERE id=1").fetchone()
    finally:
        conn.close()
    return Head(0, GENESIS) if row is None else Head(int(row[0]), bytes(row[1]))


def _subject(conn: sqlite3.Connection, originator_id: str | None) -> str | None:
    """The client's id of a case (hazard_id, or a grid's code…), read from its first event."""
    if originator_id is None:
        return None
    row = conn.execute(
        "SELECT state FROM stored_events WHERE originator_id=? ORDER BY originator_version LIMIT 1",
        (originator_id,),
    ).fetchone()
    if row is None:
        return None
    raw = bytes(row[0])
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


#: Below this many events one process verifies; above it, the log is split across processes.
PARALLEL_FROM = 200_000


def verify(path: Path, against: Head | None = None, *, workers: int | None = None) -> Verification:
    """Recompute both chains over the whole log; name the first break.

    The fast path checks every link of every event (in position ranges, in parallel on a large
    log) and only says "intact" or "something at position p"; when anything is off, the careful
    walk below runs to name the first break and its kind.
    """
    conn = _connect(path)
    try:
        fast = _fast_verify(path, conn, against, workers)
        if fast is not None:
            return fast
        return _verify(conn, against)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the event store {path}: {exc}") from exc
    finally:
        conn.close()


def _fast_verify(
    path: Path, conn: sqlite3.Connection, against: Head | None, workers: int | None
) -> Verification | None:
    """Every link checked in a tight loop; None whenever the careful walk must take over."""
    events, top = conn.execute("SELECT COUNT(*), MAX(rowid) FROM stored_events").fetchone()
    links, last = conn.execute(f"SELECT COUNT(*), MAX(position) FROM {CHAIN_TABLE}").fetchone()
    head_row = conn.execute(f"SELECT count, log_hash FROM {HEAD_TABLE} WHERE id=1").fetchone()
    count = int(events)
    if count == 0 or not (count == int(top) == int(links) == int(last)):
        return None  # empty, or a gap, an insertion or a deletion: the careful walk names it
    if head_row is None or int(head_row[0]) != count:
        return None
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if count >= PARALLEL_FROM else 1
    size = -(-count // workers)
    ranges = [(lo, min(count, lo + size - 1)) for lo in range(1, count + 1, size)]
    if len(ranges) == 1:
        outcomes = [_check_range(str(path), *ranges[0])]
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(len(ranges)) as pool:
            outcomes = pool.starmap(_check_range, [(str(path), lo, hi) for lo, hi in ranges])
    if not all(outcomes):
        return None
    (last_hash,) = conn.execute(
        f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", (count,)
    ).fetchone()
    if bytes(head_row[1]) != bytes(last_hash):
        return None
    if against is not None and against.count > 0:
        if against.count > count:
            return None
        (pinned,) = conn.execute(
            f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", (against.count,)
        ).fetchone()
        if bytes(pinned) != against.log_hash:
            return None
    return Verification(Head(count, bytes(last_hash)), count, [], against)


def _check_range(path: str, lo: int, hi: int) -> bool:
    """Whether every event in positions lo..hi gives its stored log and case hashes.

    Seeds come from the stored hashes just before the range (the log hash at lo - 1, each case's
    hash at its previous version); those are themselves checked by the range that holds them.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sha256 = hashlib.sha256
        events = conn.execute(
            "SELECT rowid, originator_id || char(31) || originator_version || char(31) || "
            "topic || char(31), state FROM stored_events WHERE rowid BETWEEN ? AND ? "
            "ORDER BY rowid",
            (lo, hi),
        )
        chain = conn.cursor()
        chain.execute(
            f"SELECT position, originator_id, originator_version, log_hash, case_hash "
            f"FROM {CHAIN_TABLE} WHERE position BETWEEN ? AND ? ORDER BY position",
            (lo, hi),
        )
        seed = conn.execute(
            f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", (lo - 1,)
        ).fetchone()
        previous = bytes(seed[0]) if seed else GENESIS
        lookup = conn.cursor()
        cases: dict[str, bytes] = {}
        expected = lo
        while True:
            batch = events.fetchmany(4096)
            links = chain.fetchmany(4096)
            if len(batch) != len(links):
                return False
            if not batch:
                return expected == hi + 1
            for (position, header, state), (at, oid, version, log_hash, case_hash) in zip(
                batch, links, strict=True
            ):
                if position != expected or at != position:
                    return False
                computed = sha256(
                    previous + position.to_bytes(8, "big") + header.encode() + state
                ).digest()
                if computed != log_hash or not header.startswith(f"{oid}\x1f{version}\x1f"):
                    return False
                before = cases.get(oid)
                if before is None:
                    # The case's previous event lies before this range (or there is none):
                    # its stored hash, checked by the range that holds it.
                    row = lookup.execute(
                        f"SELECT case_hash FROM {CHAIN_TABLE} WHERE originator_id=? AND "
                        "originator_version<? ORDER BY originator_version DESC LIMIT 1",
                        (oid, version),
                    ).fetchone()
                    before = bytes(row[0]) if row is not None else GENESIS
                linked = sha256(before + computed).digest()
                if linked != case_hash:
                    return False
                cases[oid] = linked
                previous = computed
                expected += 1
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[Any, ...]]:
    cursor = conn.execute(sql)
    while batch := cursor.fetchmany(4096):
        yield from batch


def _verify(conn: sqlite3.Connection, against: Head | None) -> Verification:
    events = _rows(
        conn,
        "SELECT rowid, originator_id, originator_version, topic, state "
        "FROM stored_events ORDER BY rowid",
    )
    chain = _rows(
        conn,
        f"SELECT position, originator_id, originator_version, log_hash, case_hash "
        f"FROM {CHAIN_TABLE} ORDER BY position",
    )
    sha256 = hashlib.sha256
    genesis = GENESIS
    previous = genesis
    cases: dict[str, tuple[int, bytes]] = {}
    count = 0
    pinned: bytes | None = None
    found: Break | None = None
    e = next(events, None)
    ch = next(chain, None)

    def brk(kind: str, position: int, oid: str | None, message: str, **details: Any) -> Break:
        return Break(kind, position, oid, _subject(conn, oid), message, details)

    while e is not None and ch is not None:
        position = e[0]
        if position != ch[0] or position != count + 1:
            found = _misaligned(conn, e, ch, count, brk)
            break
        oid = e[1]
        version = e[2]
        state = e[4]
        framed = _SEP.join((oid.encode(), str(version).encode(), e[3].encode(), state))
        log_hash = sha256(previous + position.to_bytes(8, "big") + framed).digest()
        if log_hash != ch[3] or oid != ch[1] or version != ch[2]:
            found = _mismatch(conn, e, ch, previous, log_hash, brk)
            break
        last = cases.get(oid)
        before = genesis if last is None else last[1]
        case_hash = sha256(before + log_hash).digest()
        if case_hash != ch[4]:
            found = brk(
                "chain_altered",
                position,
                oid,
                "the event is intact but its stored case hash was changed",
            )
            break
        cases[oid] = (version, case_hash)
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
        found = _check_head(conn, count, previous, brk)
    if found is None and against is not None:
        found = _check_against(against, count, pinned, brk)
    return Verification(Head(count, previous), count, [found] if found else [], against)


def _misaligned(
    conn: sqlite3.Connection, e: tuple[Any, ...], ch: tuple[Any, ...], count: int, brk: _BreakFn
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


def _mismatch(
    conn: sqlite3.Connection,
    e: tuple[Any, ...],
    ch: tuple[Any, ...],
    previous: bytes,
    computed: bytes,
    brk: _BreakFn,
) -> Break:
    """An event whose bytes do not give its stored hash: changed, moved, or the chain edited."""
    position, oid = e[0], e[1]
    framed = frame(oid, e[2], e[3], e[4])
    # Is this event another position's event (rows swapped)? Look for the chain row it fits.
    for q, _oid, q_version, q_hash in conn.execute(
        f"SELECT position, originator_id, originator_version, log_hash FROM {CHAIN_TABLE} "
        "WHERE originator_id=? AND originator_version=? AND position<>?",
        (oid, e[2], position),
    ):
        prior = conn.execute(
            f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", (q - 1,)
        ).fetchone()
        if log_link(bytes(prior[0]) if prior else GENESIS, q, framed) == bytes(q_hash):
            return brk(
                "reordered",
                position,
                oid,
                f"the event at position {position} belongs at position {q} (events swapped)",
                belongs_at=q,
                version=q_version,
            )
    if (oid, e[2]) == (ch[1], ch[2]):
        # Intact event, edited chain row? Then the next link still fits what we computed.
        nxt = conn.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
            "WHERE rowid=?",
            (position + 1,),
        ).fetchone()
        stored_next = conn.execute(
            f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", (position + 1,)
        ).fetchone()
        if nxt is not None and stored_next is not None:
            fits = log_link(computed, position + 1, frame(nxt[1], nxt[2], nxt[3], nxt[4]))
            if fits == bytes(stored_next[0]):
                return brk(
                    "chain_altered",
                    position,
                    oid,
                    "the event is intact but its stored log hash was changed",
                )
        elif nxt is None:
            head_row = conn.execute(f"SELECT log_hash FROM {HEAD_TABLE} WHERE id=1").fetchone()
            if head_row is not None and bytes(head_row[0]) == computed:
                return brk(
                    "chain_altered",
                    position,
                    oid,
                    "the event is intact but its stored log hash was changed",
                )
    return brk(
        "changed",
        position,
        oid,
        f"the event at position {position} (version {e[2]}) was changed after it was recorded",
        version=e[2],
        topic=e[3],
    )


def _check_head(conn: sqlite3.Connection, count: int, last: bytes, brk: _BreakFn) -> Break | None:
    row = conn.execute(f"SELECT count, log_hash FROM {HEAD_TABLE} WHERE id=1").fetchone()
    if row is None:
        if count == 0:
            return None
        return brk("chain_altered", count, None, "the chain head row is missing")
    claimed, claimed_hash = int(row[0]), bytes(row[1])
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
        return None
    if pinned != against.log_hash:
        return brk(
            "rewritten",
            against.count,
            None,
            f"the log's hash at event {against.count} is not the published one: history up to "
            "that head has been rewritten",
            published=against.log_hash.hex(),
            found=pinned.hex() if pinned else None,
        )
    return None


@dataclass(frozen=True)
class ProofLink:
    """One event of a case in the proof: enough to recompute its two hashes by hand."""

    version: int
    position: int
    event_sha256: str  # SHA-256 of the event's exact stored bytes (its frame), hex
    previous_log_hash: str  # the log hash of position - 1 (zeros for the first event)
    log_hash: str
    case_hash: str
    ok: bool  # recomputed from the stored bytes, both hashes match

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def case_proof(path: Path, originator_id: str, up_to_version: int | None = None) -> list[ProofLink]:
    """Recompute a case's links from its stored bytes: what a dossier carries as its proof."""
    conn = _connect(path)
    try:
        rows = conn.execute(
            f"SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state, "
            f"c.log_hash, c.case_hash, p.log_hash FROM stored_events e "
            f"JOIN {CHAIN_TABLE} c ON c.position = e.rowid "
            f"LEFT JOIN {CHAIN_TABLE} p ON p.position = e.rowid - 1 "
            "WHERE e.originator_id=? ORDER BY e.originator_version",
            (originator_id,),
        ).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the event store {path}: {exc}") from exc
    finally:
        conn.close()
    links: list[ProofLink] = []
    case = GENESIS
    for position, oid, version, topic, state, log_hash, case_hash, prior in rows:
        if up_to_version is not None and version > up_to_version:
            break
        framed = frame(oid, version, topic, state)
        previous = bytes(prior) if prior is not None else GENESIS
        computed = log_link(previous, position, framed)
        # Each link is checked on its own against the stored hashes before it, so a proof
        # points at the one event that was changed rather than at everything after it.
        ok = computed == bytes(log_hash) and case_link(case, computed) == bytes(case_hash)
        case = bytes(case_hash)
        links.append(
            ProofLink(
                version,
                position,
                hashlib.sha256(framed).hexdigest(),
                previous.hex(),
                bytes(log_hash).hex(),
                bytes(case_hash).hex(),
                ok,
            )
        )
    return links


def head_at(path: Path, position: int) -> Head:
    """The log's head after `position` events, as stored (verify it with `verify`)."""
    if position == 0:
        return Head(0, GENESIS)
    conn = _connect(path)
    try:
        row = conn.execute(
            f"SELECT log_hash FROM {CHAIN_TABLE} WHERE position=?", (position,)
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise StoreError(f"the hash chain has no position {position}")
    return Head(position, bytes(row[0]))
