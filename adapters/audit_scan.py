"""The fast check of one range of a SQLite store's log: every event's hash, in a tight loop.

`audit verify` runs it in fresh interpreters (`python -I this_file DB LO HI`, printing `ok` or
`broken`), one per range, all at once; it imports only the standard library and APSW, so each
starts in milliseconds. It answers only "intact" or "something is off": the careful walk in
`adapters.audit` names the break. See docs/audit.md ("Measured").

Two readers, the same check: APSW (a thin C wrapper of SQLite that makes a row's Python values
in about two thirds of the time the standard library's `sqlite3` takes; what the interpreters
use) and `sqlite3` (what the calling process uses for a small log, and the fallback where APSW
is not installed). The calling process never loads APSW: two copies of the SQLite library in
one process each keep their own POSIX locks on the same file, and one closing the file drops the
other's locks (sqlite.org/howtocorrupt.html, 2.2.1), which in a process that also writes the
store could corrupt it.

What is checked for positions LO..HI, against the stored rows:
- every event LO..HI has its chain row at the same position, with the same originator id and
  version (SQLite's `=`: same storage class, same value), and no row is missing on either side;
- each event's hash, SHA-256(the log's previous hash ‖ the case's previous hash ‖ position ‖
  record time ‖ frame) over the exact stored bytes, is its stored `log_hash`. The log's
  previous hash is the hash just computed (for LO: the stored hash at LO - 1, checked by the
  range that holds it); the case's previous hash is zeros for a case's first version, else
  that of the case's event one version earlier, which must lie earlier in the log (before LO:
  its stored hash) — see `_check`.
  One hash per event binds it into both chains: the log's and its case's.
The frame is the stored bytes of id, version (an integer, in decimal), topic and state joined
by 0x1F, byte for byte what SQLite builds for the careful walk whatever a column's storage class.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

__all__ = ["DRIVERS", "check_range", "readonly_uri"]

#: The readers this interpreter has, the faster first. APSW is a dependency; without it (a
#: platform with no wheel) the standard library reads. It is imported only to be used.
DRIVERS: tuple[str, ...] = (
    ("apsw", "sqlite3") if importlib.util.find_spec("apsw") is not None else ("sqlite3",)
)

GENESIS = bytes(32)
#: The frame as adapters.store.frame builds it (id, version, topic, state joined by 0x1F), built
#: by SQLite from the stored values: byte for byte the same for the engine's own rows.
FRAME_SQL = (
    "CAST({a}originator_id || x'1f' || {a}originator_version || x'1f' || {a}topic || x'1f' || "
    "{a}state AS BLOB)"
)
# The unary + keeps SQLite on the position's primary key for the join (not the case index).
# The frame is put together here from the event's state and topic and the chain row's id and
# version, which the join makes the event's own (SQLite's `=`: same storage class, same bytes).
# A row whose storage classes are not the engine's drops out (and the count falls short): a
# blob id with a text id's bytes, say, is another key to the engine, hiding the event from its
# case. The versions and the record time must be integers: SQLite's `=` holds 2.0 equal to 2,
# and a REAL can be stored in an INTEGER column by a tamperer who edits the schema. The texts
# come back as their stored bytes (CAST AS BLOB), never decoded, whichever the reader.
_ROWS = (
    "SELECT e.state, CAST(e.topic AS BLOB), c.log_hash, c.recorded_at, "
    "CAST(c.originator_id AS BLOB), c.originator_version "
    "FROM stored_events e JOIN event_chain c ON c.position = e.rowid "
    "AND +c.originator_id = e.originator_id AND +c.originator_version = e.originator_version "
    "WHERE e.rowid BETWEEN ? AND ? AND typeof(e.originator_id) = 'text' "
    "AND typeof(e.topic) = 'text' AND typeof(e.state) = 'blob' AND typeof(c.log_hash) = 'blob' "
    "AND typeof(e.originator_version) = 'integer' AND typeof(c.originator_version) = 'integer' "
    "AND typeof(c.recorded_at) = 'integer' "
    "ORDER BY e.rowid"
)


class _Versions(dict[int, bytes]):
    """0x1F, the version in decimal (as SQLite writes an integer as text), 0x1F: made once."""

    def __missing__(self, version: int) -> bytes:
        if type(version) is not int:
            raise TypeError(version)  # a real or a blob: the careful walk says what it is
        self[version] = piece = b"\x1f%d\x1f" % version
        return piece


# The id comes back as bytes; CAST compares it as the text it was read from. The case's earlier
# event is found through the events' primary key (the chain has no index on the case: see
# adapters/store.py), its chain row at its rowid, naming the same event. A hash that is not a
# blob (text that is not UTF-8 would not even be read by APSW) is no row.
_BEFORE = (
    "SELECT c.position, c.log_hash FROM stored_events e "
    "JOIN event_chain c ON c.position = e.rowid "
    "WHERE e.originator_id = CAST(? AS TEXT) AND e.originator_version = ? "
    "AND c.originator_id = e.originator_id AND c.originator_version = e.originator_version "
    "AND typeof(c.log_hash) = 'blob'"
)
_SEED = "SELECT log_hash FROM event_chain WHERE position = ? AND typeof(log_hash) = 'blob'"


def readonly_uri(path: str | Path) -> str:
    """The SQLite URI that opens `path` read-only: the path percent-encoded, so that a `?`,
    `#` or `%` in a file's name is part of the name (`file:{path}` would open another file)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def _connect(path: str, driver: str) -> Any:
    """A read-only connection whose `execute(sql, params)` yields rows and has `fetchone()`."""
    if driver == "apsw" and driver in DRIVERS:
        import apsw

        return apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    if driver != "sqlite3":
        raise ValueError(f"no reader {driver!r} here; this interpreter has {DRIVERS}")
    conn = sqlite3.connect(readonly_uri(path), uri=True)
    conn.text_factory = bytes  # exact stored bytes, never decoded
    return conn


def check_range(path: str, lo: int, hi: int, driver: str = "sqlite3") -> bool:
    """Whether positions lo..hi of the store at `path` hold exactly what their links say.

    `driver`: "sqlite3" (the default: safe in any process) or "apsw" (only in a process that has
    no other connection to the store: see the module's docstring).
    """
    conn = _connect(path, driver)
    collecting = gc.isenabled()
    gc.disable()  # nothing cyclic is made here; the collector's passes only cost time
    try:
        return _check(conn, lo, hi)
    except (TypeError, ValueError, struct.error):
        return False  # a value that is not what the engine writes (a NULL, a real version…)
    finally:
        if collecting:
            gc.enable()
        conn.close()


def _check(conn: Any, lo: int, hi: int) -> bool:
    """The loop. The rule for a case's previous event, the writer's and the careful walk's too:
    a first version (1; 0 in the library's own tests) starts from zeros; any later version v
    links to version v - 1, which must be the case's last event before it in the log.

    Within the range the previous event is the one remembered; for a case's first event in the
    range with version > 1 it is looked up (its stored hash, which the range holding it checks)
    and must lie before the range.
    """
    if lo > 1:
        seed = conn.execute(_SEED, (lo - 1,)).fetchone()
        if seed is None:
            return False
        previous: bytes = seed[0]
    else:
        previous = GENESIS
    cases: dict[bytes, tuple[int, bytes]] = {}
    sha256 = hashlib.sha256
    pack = struct.Struct(">Qq").pack  # position, record time: as adapters.store.chain_link
    join = b"".join
    get = cases.get
    genesis = GENESIS
    versions = _Versions()
    sep = b"\x1f"
    before: bytes
    position = lo
    # Iterating the cursor itself: no list per batch, the rows stream from SQLite.
    for state, topic, log_hash, micros, oid, version in conn.execute(_ROWS, (lo, hi)):
        if version <= 1:
            before = genesis  # a case's first version: 1 (0 in the library's own tests)
        else:
            last = get(oid)
            if last is not None:
                if last[0] != version - 1:
                    return False
                before = last[1]
            else:
                found = conn.execute(_BEFORE, (oid, version - 1)).fetchone()
                if found is None or not found[0] < lo:
                    return False
                before = found[1]
        # previous ‖ case's previous ‖ position and record time ‖ frame, joined in one copy
        # (5 % less time than seven `+`s, each making a new bytes object).
        here = pack(position, micros)
        previous = sha256(
            join((previous, before, here, oid, versions[version], topic, sep, state))
        ).digest()
        if previous != log_hash:
            return False
        cases[oid] = (version, previous)
        position += 1
    # Every position lo..hi seen once, in order (rowids are unique; the join drops a row that
    # lacks its partner or disagrees with it, and then the count falls short).
    return position == hi + 1


def main(argv: list[str]) -> int:
    path, lo, hi = argv[0], int(argv[1]), int(argv[2])
    sys.stdout.write("ok\n" if check_range(path, lo, hi, DRIVERS[0]) else "broken\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
