"""The bulk writer: a child process that stores a bulk load's batches on a SQLite store while
the engine decides the next batch (docs/performance.md, "The bulk writer").

A bulk `apply` spends about a quarter of its time storing each batch: inserting the events,
linking the hash chains, committing. Python runs one thread at a time, so another thread could
not take that work off the engine; another process can, on the machine's other CPU. The engine
(`HazardLoop.handle_many(writer=…)`) decides and encodes batch N+1 while this process stores
batch N with the same recorder code (`adapters.store_sqlite.HazardLoopSQLiteRecorder`: events,
idempotency rows, chain rows and head in one transaction), and gives out batch N's results once
it is stored. The stored bytes and the results are those of a load without it.

The protocol, on the child's stdin and stdout: frames of an 8-byte big-endian length, a byte
that says how the rest is written (`m`: marshal, `p`: pickle) and the message (the two ends are
the same program; nothing else writes to these pipes).

- parent → child: first `(name, env)`, the engine's persistence settings; then one
  `(rows, idempotency, recorded_at)` per batch: `rows` the encoded events as
  `loop.encoding.Row`s (originator id as its UUID's 128-bit number, or its text; version, topic,
  state), `recorded_at` None for "read the clock once the
  write lock is held" or the time the engine's own clock gave, in microseconds since the
  epoch (as the chain stores it). End of input: the child exits.
- child → parent: `("ready",)` once the recorder is open; then, per batch, `("ok", positions)`,
  `("conflict", message)` (an `IntegrityError`: nothing stored), or `("error", message)` (any
  other persistence error: nothing stored).

If the child ends without an answer, the engine looks in the store for the batch's last event
(`WriterLost`) and applies the rest of the load itself. The child ignores SIGINT: an interrupt
of the operator's `apply` stops the parent, which closes the pipe; the child finishes the
transaction it is in (or never began it) and exits.
"""

from __future__ import annotations

import marshal
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent

from adapters.store_sqlite import from_micros, to_micros

if TYPE_CHECKING:  # the child imports no more than the store needs
    from loop.application import HazardLoop
    from loop.encoding import Row

__all__ = ["BulkWriter"]

_LENGTH = struct.Struct(">Q")
#: The folder that holds the `adapters` package: put on the child's path, so that it imports
#: this code whether or not the package is installed.
_ROOT = Path(__file__).resolve().parents[1]


def _send(stream: IO[bytes], message: object) -> None:
    """One frame: by `marshal` when the message holds only what marshal writes (every message
    of the protocol: text, numbers, bytes, None; an eighth of pickle's cost to write), else by
    pickle. The first byte says which."""
    try:
        data = b"m" + marshal.dumps(message)  # type: ignore[arg-type]  # ValueError if not
    except ValueError:  # "unmarshallable object"
        data = b"p" + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message; None at the end of the stream (or a cut-off frame)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    body = memoryview(data)[1:]
    # Our own child (or parent), over a private pipe.
    return marshal.loads(body) if data[:1] == b"m" else pickle.loads(body)


class BulkWriter:
    """The parent's end: starts the child and speaks the protocol (loop.application.BatchWriter).

    Only for a SQLite store in a file (`factory` gives None for any other): on PostgreSQL the
    server already does the storing in processes of its own.
    """

    def __init__(self, app: HazardLoop) -> None:
        env = {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "adapters.bulk_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._to, self._from = self._proc.stdin, self._proc.stdout
        self._ready = False
        self._lost = False
        #: Batches stored by the child (for tests and the log).
        self.batches = 0
        try:
            _send(self._to, (app.name, dict(app.env)))
        except OSError:
            self._lost = True

    @classmethod
    def factory(cls, app: HazardLoop) -> Callable[[], BulkWriter | None]:
        """What `handle_many(writer=…)` takes: starts a writer for `app` when called, or gives
        None when its store is not a SQLite file or the process has a single CPU to run on."""

        def start() -> BulkWriter | None:
            from adapters.store_sqlite import HazardLoopSQLiteRecorder
            from projections.helper import usable_cpus

            recorder = app.recorder
            if not isinstance(recorder, HazardLoopSQLiteRecorder):
                return None
            if recorder.datastore.pool.is_sqlite_memory_mode or usable_cpus() < 2:
                return None  # (on one CPU the two processes would only take turns)
            try:
                return cls(app)
            except OSError as exc:  # no interpreter to start: the load goes on without
                from adapters.logs import get_logger

                get_logger().warning("bulk writer not started", error=str(exc))
                return None

        return start

    def ready(self) -> bool:
        """Whether the child has opened the store (never waits)."""
        if self._ready or self._lost:
            return self._ready and not self._lost
        readable, _, _ = select.select([self._from], [], [], 0)
        if not readable:
            return False
        message = _receive(self._from)
        if message != ("ready",):
            self._lost = True
            return False
        self._ready = True
        return True

    def submit(self, rows: Sequence[Row], kwargs: dict[str, Any]) -> None:
        try:
            moment = kwargs.get("recorded_at")
            at = None if moment is None else to_micros(moment)  # marshal writes no datetime
            _send(self._to, (list(rows), kwargs.get("idempotency") or [], at))
        except OSError:
            self._lost = True  # `wait` says so

    def wait(self) -> Sequence[int]:
        from loop.application import WriterLost

        if self._lost:
            raise WriterLost("the bulk writer process has ended")
        message = _receive(self._from)
        if message is None:
            self._lost = True
            code = self._proc.poll()
            raise WriterLost(f"the bulk writer process ended without an answer (exit {code})")
        kind, detail = message
        if kind == "ok":
            self.batches += 1
            return list(detail)
        if kind == "conflict":
            raise IntegrityError(detail)
        raise PersistenceError(detail)

    def close(self) -> None:
        """End the child: end of input, then a wait (killed if it does not exit in 30 s); a
        child that never became ready has nothing to finish, and is killed at once."""
        if not self._ready:
            self._proc.kill()
        from adapters.logs import get_logger

        get_logger().info("bulk writer", pid=self.pid, batches=self.batches, lost=self._lost)
        try:  # end of input; and the answer it may still be writing is read (it may not fit
            # the pipe, and the child would wait for room)
            self._proc.communicate(timeout=30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()

    @property
    def pid(self) -> int:
        return self._proc.pid


def _serve(inp: IO[bytes], out: IO[bytes]) -> int:
    from eventsourcing.utils import Environment

    from adapters.store_sqlite import HazardLoopSQLiteFactory

    setup = _receive(inp)
    if setup is None:
        return 0
    name, env = setup
    recorder = HazardLoopSQLiteFactory(Environment(name, env)).application_recorder()
    _send(out, ("ready",))

    def clock() -> datetime:
        return datetime.now(UTC)

    while (message := _receive(inp)) is not None:
        rows, idempotency, recorded_at = message
        stored = [
            StoredEvent(
                originator_id=f"{oid:032x}" if type(oid) is int else oid,
                originator_version=version,
                topic=topic,
                state=state,
            )
            for oid, version, topic, state in rows
        ]
        given = None if recorded_at is None else from_micros(recorded_at)
        kwargs: dict[str, Any] = {"recorded_at": clock if given is None else given}
        if idempotency:
            kwargs["idempotency"] = idempotency
        try:
            positions = recorder.insert_events(stored, **kwargs)
            reply: tuple[str, Any] = ("ok", list(positions or []))
        except IntegrityError as exc:
            reply = ("conflict", str(exc))
        except PersistenceError as exc:
            reply = ("error", str(exc))
        _send(out, reply)
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns stdout: anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return _serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
