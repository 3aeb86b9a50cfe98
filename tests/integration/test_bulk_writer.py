"""The bulk writer process (adapters/bulk_writer.py): a pipelined bulk load stores exactly what
the engine stores without it, gives the same results, and loses nothing when a batch cannot
be stored or the writer process dies.

Each test applies the same commands to two fresh stores, one with the writer and one without,
and compares the results and every stored row, hash chains included (the engine's clock is a
fake one, so the record times, and so the hashes, are the same).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.audit import verify
from adapters.bootstrap import Settings, build_engine
from adapters.bulk_writer import BulkWriter
from adapters.demo import AS_OF, Generator, _organisation, _specs
from loop.application import HazardLoop, Result, WriterLost
from loop.commands import parse_command
from loop.encoding import Row

SQLITE = pytest.mark.sqlite_only("the writer process is for SQLite stores; the test opens it")


def _commands(
    tmp_path: Path, hazards: int = 60, seed: int = 7, tips: bool = False
) -> list[dict[str, Any]]:
    """A district's commands in business-time order (as the demo builds them), and two that are
    refused: a taken id, a step out of order. Public tips are made patrol finds unless `tips`:
    a tipster is sealed with the store's own random key, so two stores' bytes would differ."""
    engine = build_engine(Settings(db=str(tmp_path / "generator.db")), clock=lambda: AS_OF)
    try:
        rng = random.Random(seed)
        gen = Generator(rng, engine.policy, engine.calendar)
        for spec in _specs(rng, gen.clock, hazards):
            gen.cases.append(gen.play(spec, gen.cases))
        org = _organisation(gen.cast, seed)
        stamped = [*org.commands, *(item for case in gen.cases for item in case.commands)]
        stamped.sort(key=lambda item: item[0])
        bodies = [body for _, body in stamped]
        if not tips:
            for body in bodies:
                if body.get("source") == "public_tip":
                    body["source"] = "patrol"
    finally:
        engine.close()
    first = next(b for b in bodies if b["command"] == "discover")
    at = len(bodies) // 2
    bodies[at:at] = [
        dict(first),
        {
            "command": "close",
            "hazard_id": first["hazard_id"],
            "actor": first["actor"],
            "at": first["at"],
        },
    ]
    return bodies


def _engine(db: Path) -> HazardLoop:
    return build_engine(Settings(db=str(db)), clock=lambda: AS_OF)


def _apply(
    db: Path,
    bodies: list[dict[str, Any]],
    writer: Callable[[HazardLoop], Callable[[], Any]] | None,
    batch_size: int = 25,
) -> list[Result]:
    app = _engine(db)
    try:
        factory = writer(app) if writer else None
        return list(app.handle_many(map(parse_command, bodies), batch_size=batch_size,
                                    writer=factory))  # fmt: skip
    finally:
        app.close()


def _verdicts(results: Sequence[Result]) -> list[tuple[Any, ...]]:
    return [
        (r.ok, r.hazard_id, r.event, r.version, r.status, r.error and r.error.code) for r in results
    ]


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {
            "events": conn.execute("SELECT rowid, * FROM stored_events ORDER BY rowid").fetchall(),
            "chain": conn.execute("SELECT * FROM event_chain ORDER BY position").fetchall(),
            "head": conn.execute("SELECT * FROM chain_head").fetchall(),
            "keys": conn.execute("SELECT * FROM idempotency_keys ORDER BY key").fetchall(),
        }
    finally:
        conn.close()


class _Ready(BulkWriter):
    """A writer the engine uses from the second batch on (the test waits for it to start)."""

    made: list[_Ready]

    def __init__(self, app: HazardLoop) -> None:
        super().__init__(app)
        while not self.ready():
            time.sleep(0.005)
        type(self).made.append(self)


def _factory(cls: type[_Ready]) -> Callable[[HazardLoop], Callable[[], Any]]:
    cls.made = []

    def make(app: HazardLoop) -> Callable[[], Any]:
        return lambda: cls(app)

    return make


@SQLITE
def test_the_writer_stores_what_the_engine_stores(tmp_path: Path) -> None:
    bodies = _commands(tmp_path)
    plain = _apply(tmp_path / "plain.db", bodies, None)
    piped = _apply(tmp_path / "piped.db", bodies, _factory(_Ready))
    (writer,) = _Ready.made
    assert writer.batches >= len(bodies) // 25 - 2  # every batch but the first (and refusals)
    assert _verdicts(piped) == _verdicts(plain)
    assert sum(not r.ok for r in plain) == 2
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")
    assert verify(tmp_path / "piped.db").ok


@SQLITE
def test_public_tips_are_sealed_as_without_the_writer(tmp_path: Path) -> None:
    """Sealing a tipster writes the case's key while the writer may hold the write lock: it
    waits for it. The same verdicts and keys; every event stored, the log intact."""
    bodies = _commands(tmp_path, tips=True)
    assert any(b.get("source") == "public_tip" and b.get("reporter") for b in bodies)
    plain = _apply(tmp_path / "plain.db", bodies, None)
    piped = _apply(tmp_path / "piped.db", bodies, _factory(_Ready))
    assert _verdicts(piped) == _verdicts(plain)
    counts = "SELECT (SELECT count(*) FROM stored_events), (SELECT count(*) FROM tipster_keys)"
    with sqlite3.connect(tmp_path / "plain.db") as a, sqlite3.connect(tmp_path / "piped.db") as b:
        assert a.execute(counts).fetchall() == b.execute(counts).fetchall()
        assert b.execute(counts).fetchone()[1] > 0
    assert verify(tmp_path / "piped.db").ok


@SQLITE
def test_the_cli_factory_starts_a_writer_on_sqlite_and_applies_the_same(tmp_path: Path) -> None:
    """As `hazardloop apply` runs it: the writer starts when a second batch comes, and batches
    go through it once it is ready (here: however many that is)."""
    bodies = _commands(tmp_path, hazards=40)
    plain = _apply(tmp_path / "plain.db", bodies, None, batch_size=10)
    piped = _apply(tmp_path / "piped.db", bodies, BulkWriter.factory, batch_size=10)
    assert _verdicts(piped) == _verdicts(plain)
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")


@SQLITE
def test_a_batch_another_writer_got_to_first_is_applied_again_command_by_command(
    tmp_path: Path,
) -> None:
    """A case the load discovers in its third batch was stored by another engine meanwhile:
    the writer's transaction fails (nothing of it stored), the batch decided after it on top of
    it is dropped, and both are applied as without the writer (the discover refused as taken)."""
    bodies = _commands(tmp_path)
    taken = next(b for b in bodies[60:] if b["command"] == "discover")
    for name in ("plain.db", "piped.db"):
        other = _engine(tmp_path / name)
        try:
            other.handle(parse_command(taken))
        finally:
            other.close()
    plain = _apply(tmp_path / "plain.db", bodies, None)
    piped = _apply(tmp_path / "piped.db", bodies, _factory(_Ready))
    assert _verdicts(piped) == _verdicts(plain)
    refused = [r for r in piped if not r.ok]
    assert any(r.hazard_id == taken["hazard_id"] and r.error is not None
               and r.error.code == "hazard_already_exists" for r in refused)  # fmt: skip
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")


class _DiesBeforeBatch(_Ready):
    """Killed before it is handed its third batch: that batch never reaches the store."""

    def submit(self, rows: Sequence[Row], kwargs: dict[str, Any]) -> None:
        if self.batches == 2:
            os.kill(self.pid, signal.SIGKILL)
            self._proc.wait()
        super().submit(rows, kwargs)


class _DiesAfterBatch(_Ready):
    """Stores its third batch, then dies before it can say so."""

    def wait(self) -> Sequence[int]:
        positions = super().wait()
        if self.batches == 3:
            os.kill(self.pid, signal.SIGKILL)
            self._proc.wait()
            raise WriterLost("killed by the test after it stored the batch")
        return positions


@SQLITE
@pytest.mark.parametrize("cls", [_DiesBeforeBatch, _DiesAfterBatch])
def test_a_writer_that_dies_loses_and_doubles_nothing(tmp_path: Path, cls: type[_Ready]) -> None:
    """Whether the dead writer stored the batch is read from the store; the engine applies the
    rest of the load itself."""
    bodies = _commands(tmp_path)
    plain = _apply(tmp_path / "plain.db", bodies, None)
    piped = _apply(tmp_path / "piped.db", bodies, _factory(cls))
    (writer,) = cls.made
    assert writer.batches == (2 if cls is _DiesBeforeBatch else 3)
    assert _verdicts(piped) == _verdicts(plain)
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")
    assert verify(tmp_path / "piped.db").ok


def test_a_writer_only_for_a_sqlite_file(store: str, tmp_path: Path) -> None:
    """PostgreSQL stores in server processes of its own: no writer; the load applies as without."""
    app = build_engine(Settings(db=store), clock=lambda: AS_OF)
    try:
        writer = BulkWriter.factory(app)()
        if "://" in store:
            assert writer is None
        else:
            assert isinstance(writer, BulkWriter)
            writer.close()
        bodies = _commands(tmp_path, hazards=10)
        results = list(app.handle_many(map(parse_command, bodies), batch_size=5,
                                       writer=BulkWriter.factory(app)))  # fmt: skip
        assert len(results) == len(bodies)
        assert sum(not r.ok for r in results) == 2
    finally:
        app.close()


@SQLITE
def test_no_writer_on_a_single_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes on one CPU would only take turns: the load runs as without a writer."""
    import projections.helper

    app = _engine(tmp_path / "one.db")
    try:
        monkeypatch.setattr(projections.helper, "usable_cpus", lambda: 1)
        assert BulkWriter.factory(app)() is None
        monkeypatch.setattr(projections.helper, "usable_cpus", lambda: 2)
        writer = BulkWriter.factory(app)()
        assert isinstance(writer, BulkWriter)
        writer.close()
    finally:
        app.close()


@SQLITE
def test_the_embedded_api_takes_the_writer_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`EmbeddedEngine.handle_many(…, bulk_writer=True)`: the same results and stored rows."""
    import adapters.embed
    from adapters.embed import open_engine

    monkeypatch.setattr(adapters.embed, "BulkWriter", _Ready)  # used once it is ready
    _Ready.made = []
    bodies = _commands(tmp_path, hazards=30)
    results = {}
    for name, flag in (("plain.db", False), ("piped.db", True)):
        hl = open_engine(Settings(db=str(tmp_path / name)), clock=lambda: AS_OF)
        try:
            results[name] = hl.handle_many(bodies, batch_size=10, bulk_writer=flag)
        finally:
            hl.close()
    assert _verdicts(results["piped.db"]) == _verdicts(results["plain.db"])
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")
    (writer,) = _Ready.made
    assert writer.batches > 10


class _Slow(_Ready):
    """A writer that takes its time: each batch reaches the store only when the engine asks
    for the answer, that is after the next batch has been decided (a legitimate timing)."""

    def submit(self, rows: Sequence[Row], kwargs: dict[str, Any]) -> None:
        self._held = (rows, kwargs)

    def wait(self) -> Sequence[int]:
        rows, kwargs = self._held
        super().submit(rows, kwargs)
        return super().wait()


@SQLITE
@pytest.mark.parametrize("at", [124, 149])  # the last command of a batch of 25
def test_a_retry_in_the_next_batch_is_replayed(tmp_path: Path, at: int) -> None:
    """A client's retry (the same idempotency key) that falls in the batch after the original,
    while the original's batch is still being stored: replayed, as without the writer."""
    bodies = _commands(tmp_path)
    body = dict(bodies[at], idempotency_key=f"retry-{at}")
    bodies[at : at + 1] = [body, dict(body)]
    plain = _apply(tmp_path / "plain.db", bodies, None)
    piped = _apply(tmp_path / "piped.db", bodies, _factory(_Slow))
    assert plain[at + 1].replayed
    assert _verdicts(piped) == _verdicts(plain)
    assert [r.replayed for r in piped] == [r.replayed for r in plain]
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")


@SQLITE
def test_cases_of_the_batch_in_flight_are_read_from_it_not_the_store(tmp_path: Path) -> None:
    """With no cache between batches, a case (a unit, a grid, a hazard) the batch in flight
    made or changed is not in the store yet: it is taken from that batch."""
    bodies = _commands(tmp_path)
    results = {}
    for name, writer in (("plain.db", None), ("piped.db", _factory(_Slow))):
        app = _engine(tmp_path / name)
        try:
            factory = writer(app) if writer else None
            results[name] = list(app.handle_many(map(parse_command, bodies), batch_size=25,
                                                 cache_size=0, writer=factory))  # fmt: skip
        finally:
            app.close()
    assert _verdicts(results["piped.db"]) == _verdicts(results["plain.db"])
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")


@SQLITE
def test_an_interrupt_gives_out_the_results_of_what_was_stored(tmp_path: Path) -> None:
    """Interrupted while reading, the load gives out the results of the batch in flight once
    it is stored, then stops: every stored command has its result, as without the writer."""

    def items(stop: int) -> Any:
        for i, body in enumerate(bodies):
            if i == stop:
                raise KeyboardInterrupt
            yield parse_command(body)

    bodies = _commands(tmp_path)
    given = {}
    for name, writer in (("plain.db", None), ("piped.db", _factory(_Ready))):
        app = _engine(tmp_path / name)
        got: list[Result] = []
        try:
            factory = writer(app) if writer else None
            with pytest.raises(KeyboardInterrupt):
                got.extend(app.handle_many(items(310), batch_size=25, writer=factory))
        finally:
            app.close()
        given[name] = len(got)
    assert given["piped.db"] == given["plain.db"] == 300
    assert _rows(tmp_path / "piped.db") == _rows(tmp_path / "plain.db")
    assert len(_rows(tmp_path / "piped.db")["events"]) == 300
    assert verify(tmp_path / "piped.db").ok


@SQLITE
def test_closing_reads_a_large_last_answer(tmp_path: Path) -> None:
    """Closed with a batch of 25,000 events in flight (an interrupted load), the writer's
    answer (its positions) does not fit the pipe: close reads it, and the child exits."""
    app = _engine(tmp_path / "big.db")
    try:
        writer = BulkWriter(app)
        while not writer.ready():
            time.sleep(0.005)
        rows: list[Row] = [(uuid.uuid4().int, 1, "test:Big", b"{}") for _ in range(25_000)]
        writer.submit(rows, {"recorded_at": None})
        started = time.monotonic()
        writer.close()
        assert time.monotonic() - started < 20
        assert writer._proc.returncode == 0
    finally:
        app.close()
    assert len(_rows(tmp_path / "big.db")["events"]) == 25_000


@SQLITE
def test_the_writer_runs_this_code_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with an `adapters` package of its own (another checkout, say) as the working
    directory: the child still imports the parent's code (`python -P`)."""
    shadow = tmp_path / "adapters"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "bulk_writer.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    app = _engine(tmp_path / "cwd.db")
    try:
        writer = BulkWriter(app)
        deadline = time.monotonic() + 30
        while not writer.ready() and writer._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.ready(), writer._proc.poll()
        writer.close()
    finally:
        app.close()


def test_the_writer_process_imports_neither_psycopg_nor_sqlalchemy() -> None:
    """What the child imports decides how soon it takes over a load (0.28 s with them, 0.08 s
    without, here): it needs only the SQLite recorder (adapters.store_sqlite)."""
    import subprocess
    import sys

    probe = (
        "import sys, adapters.bulk_writer\n"
        "from adapters.store_sqlite import HazardLoopSQLiteFactory  # what _serve imports\n"
        "heavy = ('psycopg', 'sqlalchemy', 'adapters.store')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        capture_output=True, text=True, check=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert done.stdout.strip() == ""


def test_frames_travel_by_marshal_and_a_record_time_by_pickle() -> None:
    """A batch's rows, keys and record time (microseconds) go by marshal; a message marshal
    cannot write (a date-time, say) by pickle; both arrive as sent."""
    import io
    from datetime import UTC, datetime

    from adapters.bulk_writer import _receive, _send

    rows = [(uuid.uuid4().hex, 1, "loop.hazard:Hazard.Discovered", b"{}")]
    keys = [("wang:k1", "fp", b'{"ok":true}')]
    for message, how in (
        ((rows, keys, None), b"m"),
        ((rows, keys, 1_788_224_400_000_000), b"m"),
        ((rows, [], datetime(2026, 9, 1, 1, 0, tzinfo=UTC)), b"p"),
        (("ok", [1, 2, 3]), b"m"),
    ):
        pipe = io.BytesIO()
        _send(pipe, message)
        assert pipe.getvalue()[8:9] == how
        pipe.seek(0)
        assert _receive(pipe) == message
        assert _receive(pipe) is None  # the end of the stream
