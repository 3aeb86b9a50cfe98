"""The fold helper: a projection's folding on a second core, its rows written by the runner.

A large catch-up (a rebuild, a worker far behind) is bound by one Python process's CPU: reading
and decoding each event, folding its case with the domain's own `apply`, building its rows, and
the database's upserts. With a helper, the runner's process keeps the transaction (it claims the
tracking positions, runs the other projections, writes every row and commits), while a child
process, forked from it, reads the same positions of the log through its own connection,
decodes and folds them in slices, and sends each slice's changed rows back: the runner writes
slice k while the helper folds slice k+1. Nothing about exactly-once changes: the helper writes
nothing, and rows and positions still commit in one transaction. docs/projections.md, "Folding
on a second core", says why fork, and what happens when either process fails.
"""

from __future__ import annotations

import contextlib
import marshal
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol
from uuid import UUID

__all__ = [
    "HEX_DIGITS",
    "FoldHelper",
    "FoldHelperError",
    "Foldable",
    "can_fork",
    "case_part",
    "usable_cpus",
]


class Foldable(Protocol):
    """A projection whose folding can run in a helper: `fold` returns the rows a slice of
    events changed (picklable; a tuple subclass arrives as a plain tuple), `store_all` writes
    them in the runner's transaction."""

    name: str
    refolded: int
    events: Any

    def wants(self, topic: str) -> bool: ...

    def fold(self, items: Any, time: Callable[[Any], Any]) -> Any: ...

    def store_all(self, conn: Any, batches: Iterator[Any]) -> None: ...

    def reset(self) -> None: ...


class FoldHelperError(RuntimeError):
    """The helper failed (its error, as it gave it) or ended; the chunk was rolled back."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset limits), not
    the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether a helper can be forked here: Linux (fork is the platform's own way to start a
    process there; elsewhere it is unsafe or missing) with more than one usable CPU."""
    return (
        sys.platform == "linux"
        and "fork" in multiprocessing.get_all_start_methods()
        and usable_cpus() > 1
    )


class FoldHelper:
    """One forked child that folds chunks of the log for `projection`, slice by slice.

    `open_store()` runs in the child and gives it an application of its own (its own connections:
    nothing the parent opened is used there); `make_reader(app)` and `make_decoder(app)` build its
    log reader and row decoder; `stored_time()` gives, per chunk, how the views' database stores
    a date-time (`projections.cases.stored_time`).
    """

    def __init__(
        self,
        projection: Foldable,
        *,
        open_store: Callable[[], Any],
        make_reader: Callable[[Any], Callable[[int, int, int | None], Sequence[Any]]],
        make_decoder: Callable[[Any], Callable[..., Any]],
        stored_time: Callable[[], Callable[[Any], Any]],
        slice_size: int = 10_000,
        part: tuple[int, int] = (0, 1),
        stall_seconds: float = 120.0,
    ) -> None:
        self.projection = projection
        self.slice_size = slice_size
        #: (i, k): this helper folds the cases whose id's integer is i modulo k.
        self.part = part
        self.stall_seconds = stall_seconds
        self._serve_args = (open_store, make_reader, make_decoder, stored_time)
        self._conn: Connection | None = None
        self._process: Any = None
        #: Hazard events the helper folded (every chunk asked of it so far).
        self.folded = 0
        #: Hazard events it folded for the last chunk it finished.
        self.folded_last = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def start(self, inherited: Sequence[Connection] = ()) -> None:
        """Fork the helper; it closes our end of its pipe and of `inherited` (other helpers'
        pipes), so that our death closes every pipe it reads. `ready` waits for it."""
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_serve,
            args=(
                theirs,
                [ours, *inherited],
                self.projection,
                self.slice_size,
                self.part,
                *self._serve_args,
            ),
            name=f"hazardloop-fold-{self.projection.name}-{self.part[0]}",
            daemon=True,
        )
        process.start()
        theirs.close()  # the child's end: only the child holds it now
        self._conn, self._process = ours, process

    @property
    def connection(self) -> Connection | None:
        return self._conn

    def ready(self, timeout: float = 60.0) -> None:
        """Wait until the helper has opened the store; its error if it could not."""
        conn = self._connection()
        if not conn.poll(timeout):
            raise FoldHelperError(f"the fold helper did not start within {timeout:.0f} s")
        message = self._receive(conn)
        if message[0] != "ready":
            raise FoldHelperError(f"the fold helper could not start: {message[1]}")

    def fold(self, first: int, last: int, count: int) -> Iterator[Any]:
        """Ask for positions `first`..`last` (`count` events, as the runner read them) and yield
        the rows of each slice as the helper sends them. The helper starts at once."""
        conn = self._connection()
        try:
            conn.send(("fold", first, last, count))
        except OSError as exc:  # it is gone: say why, if it said
            raise self._failure() from exc
        return self._batches(conn, first, last)

    def _failure(self) -> FoldHelperError:
        """Why the helper went away: the error it left, if it left one (after any rows it sent
        before it failed), else its exit code."""
        conn = self._conn
        with contextlib.suppress(EOFError, OSError):
            while conn is not None and conn.poll(0):
                message = _get(conn)
                if message[0] == "error":
                    return FoldHelperError(f"the fold helper failed: {message[1]}")
        return self._ended()

    def _batches(self, conn: Connection, first: int, last: int) -> Iterator[Any]:
        while True:
            message = self._receive(conn)
            kind = message[0]
            if kind == "rows":
                yield message[1]
            elif kind == "done":
                # Requests are answered in order; a chunk's answer read as another's (its
                # messages left unread) would be a bug of ours: refuse it rather than commit.
                if tuple(message[4:6]) != (first, last):
                    raise FoldHelperError(
                        f"the fold helper answered for positions {message[4]}..{message[5]}, "
                        f"not {first}..{last}"
                    )
                self.projection.refolded += int(message[2])
                self.folded_last = int(message[3])
                self.folded += self.folded_last
                return
            else:
                raise FoldHelperError(f"the fold helper failed: {message[1]}")

    def stop(self, *, kill: bool = False) -> None:
        """End the helper: asked first (killed if it does not end within a few seconds), or
        killed at once (`kill`: after a failure it may be busy with a chunk no one will take)."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            if not kill:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(("stop",))
            conn.close()
        if process is not None:
            if kill:
                process.kill()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)

    def _connection(self) -> Connection:
        if self._conn is None:
            raise FoldHelperError("the fold helper is not running")
        return self._conn

    def _receive(self, conn: Connection) -> Any:
        waited = 0.0
        while not conn.poll(0.5):
            waited += 0.5
            if not self._process.is_alive():
                raise self._ended()
            if waited >= self.stall_seconds:
                raise FoldHelperError(f"the fold helper sent nothing for {waited:.0f} s")
        try:
            return _get(conn)
        except (EOFError, OSError) as exc:
            raise self._ended() from exc

    def _ended(self) -> FoldHelperError:
        self._process.join(5)
        return FoldHelperError(
            f"the fold helper process ended (exit code {self._process.exitcode})"
        )


def _serve(
    conn: Connection,
    parents: list[Connection],
    projection: Foldable,
    slice_size: int,
    part: tuple[int, int],
    open_store: Callable[[], Any],
    make_reader: Callable[[Any], Callable[[int, int, int | None], Sequence[Any]]],
    make_decoder: Callable[[Any], Callable[..., Any]],
    stored_time: Callable[[], Callable[[Any], Any]],
) -> None:
    """The child: fold what the parent asks for until it says stop or goes away."""
    for end in parents:  # else a pipe outlives the parent, and `recv` would wait for ever
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        app = open_store()
        read, decode = make_reader(app), make_decoder(app)
        projection.events = app.events  # a case not in memory is folded again from here
        _put(conn, ("ready",))
    except BaseException as exc:
        _report(conn, exc)
        return
    wants = projection.wants
    i, k = part
    # The reader's own `part` (SQLite) reads only this part's events: the others' are not even
    # made Python objects; then SQLite counts the chunk for the check below.
    read_part = getattr(read, "part", None) if k > 1 and getattr(read, "parts", False) else None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message[0] != "fold":
            return
        _, first, last, count = message
        try:
            time_of = stored_time()
            folded = 0
            refolded = projection.refolded
            seen = read.count(first, last) if read_part else 0  # type: ignore[attr-defined]
            at = first
            while at <= last:
                if read_part is not None:
                    rows = read_part(at, slice_size, last, i, k)
                    mine = [(n, decode(o, v, t, b)) for n, o, v, t, b in rows if wants(t)]
                else:
                    rows = read(at, slice_size, last)
                    seen += len(rows)
                    mine = [
                        (n, decode(o, v, t, b))
                        for n, o, v, t, b in rows
                        if (k == 1 or case_part(o, k) == i) and wants(t)
                    ]
                if not rows:
                    break
                folded += len(mine)
                _put(conn, ("rows", tuple(projection.fold(mine, time_of))))
                at = rows[-1][0] + 1
            if seen != count:
                raise RuntimeError(
                    f"read {seen} events at positions {first}..{last}, the runner {count}"
                )
            _put(conn, ("done", seen, projection.refolded - refolded, folded, first, last))
        except BaseException as exc:
            _report(conn, exc)
            return


def _report(conn: Connection, exc: BaseException) -> None:
    text = " ".join(str(exc).split())
    with contextlib.suppress(Exception):
        _put(conn, ("error", f"{type(exc).__name__}: {text}"))


def _put(conn: Connection, message: tuple[Any, ...]) -> None:
    """Send a message to the runner: by `marshal` when it holds only the built-in types marshal
    writes (a batch of rows for SQLite: text, numbers, None; a third of pickle's cost both
    ways), else by pickle (date-times, for PostgreSQL)."""
    try:
        data = b"m" + marshal.dumps(message)
    except ValueError:  # "unmarshallable object"
        data = b"p" + pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    conn.send_bytes(data)


def _get(conn: Connection) -> Any:
    """A message `_put` sent."""
    data = conn.recv_bytes()
    body = memoryview(data)[1:]
    return marshal.loads(body) if data[:1] == b"m" else pickle.loads(body)


#: The digits of an id's text, in the order of their values (for SQL: `instr(HEX_DIGITS, d) - 1`).
HEX_DIGITS = "0123456789abcdef"


def case_part(originator_id: Any, k: int) -> int:
    """Which of `k` parts a case falls in: the last byte of its id, modulo k (a `UUID`, or its
    text from another reader). The SQLite reader's `part` computes the same from the stored
    text (the last two of its lowercase hex digits), in SQL."""
    uuid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    return (uuid.int & 0xFF) % k
