#!/usr/bin/env python3
"""Benchmark suite: the command path and the reads, each beside a baseline run in the same run.

Issue #6. For each size (hazards; about 6.2 commands and events each, the realistic mix of
scripts/bench_projections.py) and each store (SQLite; PostgreSQL with --pg), it measures:

- **bulk apply**: a JSONL file read, parsed and applied by `HazardLoop.handle_many` in batches
  (what `hazardloop apply` does), beside (a) a plain eventsourcing application writing the same
  events (a minimal Aggregate whose events have the same stored sizes; aggregates kept in
  memory; one `save` per command) and (b) raw inserts of the same rows (the engine's own stored
  rows, read back) through the driver, `executemany` with the same batch size: the physical limit;
- **one command per transaction**: `parse_command` + `HazardLoop.handle`, throughput and latency
  p50 / p99, beside the plain application's save and a raw one-row insert-and-commit;
- **projection catch-up** from zero, beside the raw read rate of the event table;
- **loading one case** as of now and as of a past version, beside a raw select of its rows;
- **the overdue report** over the whole ledger, beside a raw read of the ledger table.

Every figure is a median of `--repeat` runs (each on a fresh store where it writes), printed
with its baseline and the ratio. The machine is small and shared: compare within one run.

    .venv/bin/python scripts/bench.py --quick                 # 2,000 hazards, SQLite
    .venv/bin/python scripts/bench.py --sizes 10000,100000    # the figures in docs/performance.md
    .venv/bin/python scripts/bench.py --sizes 10000 --pg      # SQLite and PostgreSQL

Results and how to read them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "scripts"):
    if str(extra) not in sys.path:
        sys.path.append(str(extra))

from bench_projections import (  # noqa: E402
    AS_OF,
    CLOCK,
    command_stream,
    drop_views,
    machine,
    paged_read,
    raw_read,
)
from eventsourcing.application import Application  # noqa: E402
from eventsourcing.domain import Aggregate  # noqa: E402

from adapters.bootstrap import Settings, build_engine, build_runner  # noqa: E402
from adapters.bulk_writer import BulkWriter  # noqa: E402
from adapters.cli import _read_commands  # noqa: E402
from loop.application import HazardLoop  # noqa: E402
from loop.commands import parse_command  # noqa: E402
from projections.reports import overdue_report  # noqa: E402

SEED = 2026


# ------------------------------------------------------------------ the workload


def workload(hazards: int, prefix: str = "H") -> list[dict[str, Any]]:
    """The commands of `hazards` cases in business-time order (ids start with `prefix`)."""
    out = list(command_stream(hazards, SEED))
    if prefix != "H":
        for body in out:
            body["hazard_id"] = prefix + body["hazard_id"][1:]
    return out


def write_jsonl(path: Path, commands: list[dict[str, Any]]) -> None:
    with path.open("wb") as f:
        for body in commands:
            f.write(orjson.dumps(body) + b"\n")


def time_case_selects(conn: Any, sql: str, oids: list[str]) -> float:
    """Seconds to select every case's rows with `sql` on an open connection (one warm-up)."""
    conn.execute(sql, (oids[0],)).fetchall()
    started, n = time.perf_counter(), 0
    for oid in oids:
        n += len(conn.execute(sql, (oid,)).fetchall())
    seconds = time.perf_counter() - started
    assert n >= len(oids), "the raw select found no rows: wrong id format"
    return seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ a plain eventsourcing app


class Plain(Aggregate):
    """The smallest aggregate: one string field per event, sized to the engine's events."""

    class Started(Aggregate.Created):
        data: str

    class Stepped(Aggregate.Event):
        data: str

    @classmethod
    def start(cls, ident: uuid.UUID, data: str) -> Plain:
        return cls._create(cls.Started, id=ident, data=data)

    def step(self, data: str) -> None:
        self.trigger_event(self.Stepped, data=data)


class PlainApp(Application):  # type: ignore[type-arg]
    name = "Plain"
    env = {"IS_SNAPSHOTTING_ENABLED": "n"}  # noqa: RUF012


def plain_payloads(rows: list[tuple[str, int, str, bytes]], app: PlainApp) -> list[str]:
    """For each engine row, a payload that makes the plain event's stored state as long."""
    probe_id = uuid.uuid4()
    probe = Plain.start(probe_id, "")
    created_base = len(app.mapper.to_stored_event(probe.collect_events()[0]).state)
    probe.step("")
    stepped_base = len(app.mapper.to_stored_event(probe.collect_events()[0]).state)
    out = []
    for _, version, _, state in rows:
        base = created_base if version == 1 else stepped_base
        out.append("x" * max(0, len(state) - base))
    return out


def plain_run(
    env: dict[str, str], rows: list[tuple[str, int, str, bytes]], latencies: list[float] | None
) -> tuple[float, int]:
    """Write the rows' events through a plain application, one save per command."""
    app = PlainApp(env=env)
    try:
        payloads = plain_payloads(rows, app)
        live: dict[str, Plain] = {}
        gc.collect()
        started = time.perf_counter()
        for (oid, version, _, _), data in zip(rows, payloads, strict=True):
            t0 = time.perf_counter()
            if version == 1:
                agg = Plain.start(uuid.UUID(oid), data)
                live[oid] = agg
            else:
                agg = live[oid]
                agg.step(data)
            app.save(agg)
            if latencies is not None:
                latencies.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - started
        return seconds, len(rows)
    finally:
        app.close()


# ------------------------------------------------------------------ stores


class Store:
    """Where a run writes: fresh databases on demand, and the driver's raw inserts."""

    name = "?"

    def fresh(self, label: str) -> str:
        raise NotImplementedError

    def plain_env(self, label: str) -> dict[str, str]:
        raise NotImplementedError

    def engine_rows(self, db: str) -> list[tuple[str, int, str, bytes]]:
        raise NotImplementedError

    def raw_insert(self, rows: list[tuple[str, int, str, bytes]], batch: int) -> float:
        raise NotImplementedError

    def raw_single(self, rows: list[tuple[str, int, str, bytes]], latencies: list[float]) -> float:
        raise NotImplementedError

    def raw_cases(self, db: str, oids: list[str]) -> float:
        """Seconds to select each case's rows, in order, on one open connection."""
        raise NotImplementedError

    def raw_ledger(self, db: str) -> int:
        raise NotImplementedError

    def raw_events(self, db: str) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteStore(Store):
    name = "SQLite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.ddl: list[str] = []

    def _path(self, label: str) -> Path:
        self.count += 1
        path = self.folder / f"{label}-{self.count}.db"
        for old in self.folder.glob(f"{label}-*"):
            old.unlink()  # one store per label at a time: the disk is shared too
        return path

    def fresh(self, label: str) -> str:
        return str(self._path(label))

    def plain_env(self, label: str) -> dict[str, str]:
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": self.fresh(label)}

    def engine_rows(self, db: str) -> list[tuple[str, int, str, bytes]]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            self.ddl = [
                sql
                for (sql,) in conn.execute(
                    "SELECT sql FROM sqlite_master WHERE tbl_name='stored_events' AND sql NOT NULL"
                )
            ]
            return [
                (str(a), int(b), str(c), bytes(d))
                for a, b, c, d in conn.execute(
                    "SELECT originator_id, originator_version, topic, state FROM stored_events "
                    "ORDER BY rowid"
                )
            ]

    def _raw_conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.fresh("raw"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")  # as eventsourcing opens its stores
        for sql in self.ddl:
            conn.execute(sql)
        return conn

    _INSERT = (
        "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
        "VALUES (?,?,?,?)"
    )

    def raw_insert(self, rows: list[tuple[str, int, str, bytes]], batch: int) -> float:
        with contextlib.closing(self._raw_conn()) as conn:
            started = time.perf_counter()
            for i in range(0, len(rows), batch):
                conn.execute("BEGIN")
                conn.executemany(self._INSERT, rows[i : i + batch])
                conn.execute("COMMIT")
            return time.perf_counter() - started

    def raw_single(self, rows: list[tuple[str, int, str, bytes]], latencies: list[float]) -> float:
        with contextlib.closing(self._raw_conn()) as conn:
            started = time.perf_counter()
            for row in rows:
                t0 = time.perf_counter()
                conn.execute("BEGIN")
                conn.execute(self._INSERT, row)
                conn.execute("COMMIT")
                latencies.append(time.perf_counter() - t0)
            return time.perf_counter() - started

    def raw_cases(self, db: str, oids: list[str]) -> float:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            sql = "SELECT * FROM stored_events WHERE originator_id=? ORDER BY originator_version"
            return time_case_selects(conn, sql, oids)

    def raw_ledger(self, db: str) -> int:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return sum(1 for _ in conn.execute("SELECT * FROM ledger"))

    def raw_events(self, db: str) -> int:
        return raw_read(db)


class PostgresStore(Store):
    """A throwaway durable server (tests/pgserver.py); one database per fresh store."""

    name = "PostgreSQL"

    def __init__(self) -> None:
        from tests.pgserver import PostgresServer

        self.server = PostgresServer(durable=True)
        self.server.start()
        self.count = 0
        self.live: list[str] = []

    def _db(self, label: str) -> tuple[str, str]:
        self.count += 1
        name = f"{label}_{self.count}"
        for old in [n for n in self.live if n.startswith(label + "_")]:
            self.server.drop_database(old)
            self.live.remove(old)
        self.live.append(name)
        return name, self.server.create_database(name)

    def fresh(self, label: str) -> str:
        return self._db(label)[1]

    def plain_env(self, label: str) -> dict[str, str]:
        from urllib.parse import urlparse

        name, url = self._db(label)
        u = urlparse(url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": name,
            "POSTGRES_HOST": u.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(u.port),
            "POSTGRES_USER": u.username or "",
            "POSTGRES_PASSWORD": u.password or "",
        }

    def _connect(self, url: str) -> Any:
        import psycopg

        return psycopg.connect(url)

    def engine_rows(self, db: str) -> list[tuple[str, int, str, bytes]]:
        with self._connect(db) as conn:
            cur = conn.execute(
                "SELECT originator_id, originator_version, topic, state FROM stored_events "
                "ORDER BY notification_id"
            )
            return [(str(a), int(b), str(c), bytes(d)) for a, b, c, d in cur]

    _DDL = (
        "CREATE TABLE stored_events (originator_id uuid NOT NULL, originator_version bigint "
        "NOT NULL, topic text, state bytea, notification_id bigserial, "
        "PRIMARY KEY (originator_id, originator_version))",
        "CREATE UNIQUE INDEX stored_events_notification_id_idx ON stored_events "
        "(notification_id ASC)",
    )
    _INSERT = (
        "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
        "VALUES (%s,%s,%s,%s)"
    )

    def _raw_conn(self) -> Any:
        conn = self._connect(self.fresh("raw"))
        for sql in self._DDL:
            conn.execute(sql)
        conn.commit()
        return conn

    def raw_insert(self, rows: list[tuple[str, int, str, bytes]], batch: int) -> float:
        with self._raw_conn() as conn:
            started = time.perf_counter()
            with conn.cursor() as cur:
                for i in range(0, len(rows), batch):
                    cur.executemany(self._INSERT, rows[i : i + batch])
                    conn.commit()
            return time.perf_counter() - started

    def raw_single(self, rows: list[tuple[str, int, str, bytes]], latencies: list[float]) -> float:
        with self._raw_conn() as conn:
            started = time.perf_counter()
            with conn.cursor() as cur:
                for row in rows:
                    t0 = time.perf_counter()
                    cur.execute(self._INSERT, row)
                    conn.commit()
                    latencies.append(time.perf_counter() - t0)
            return time.perf_counter() - started

    def raw_cases(self, db: str, oids: list[str]) -> float:
        with self._connect(db) as conn:
            sql = "SELECT * FROM stored_events WHERE originator_id=%s ORDER BY originator_version"
            return time_case_selects(conn, sql, oids)

    def raw_ledger(self, db: str) -> int:
        with self._connect(db) as conn, conn.cursor(name="ledger") as cur:
            cur.execute("SELECT * FROM ledger")
            return sum(1 for _ in cur)

    def raw_events(self, db: str) -> int:
        with self._connect(db) as conn, conn.cursor(name="events") as cur:
            cur.execute("SELECT * FROM stored_events ORDER BY notification_id")
            return sum(1 for _ in cur)

    def close(self) -> None:
        self.server.remove()


# ------------------------------------------------------------------ measuring


@dataclass
class Figure:
    """One measured figure beside its baseline: rates (higher is better) or seconds."""

    what: str
    value: float
    unit: str
    baseline: str = ""
    base_value: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.base_value in (None, 0):
            return None
        assert self.base_value is not None
        return self.value / self.base_value


#: A PostgreSQL store keeps no key file beside it: the benchmark's throwaway master key.
BENCH_KEY = base64.b64encode(bytes(range(32))).decode()


def engine_for(db: str) -> HazardLoop:
    key = BENCH_KEY if db.startswith("postgresql") else None
    return build_engine(Settings(db=db, cipher_key=key), clock=lambda: CLOCK)


def bulk_apply(
    db: str, jsonl: Path, batch: int, bulk_writer: bool = True
) -> tuple[float, int, int, float]:
    """`hazardloop apply` without its output: read, parse, handle_many (with the bulk writer
    process on SQLite, as `apply` runs it).

    (seconds, commands, events, CPU seconds of this process: the writer's are not counted)
    """
    app = engine_for(db)
    try:
        lines: deque[int] = deque()
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        n = refused = 0
        with jsonl.open("rb") as stream:
            commands = _read_commands(stream, lines, None)
            writer = BulkWriter.factory(app) if bulk_writer else None
            for result in app.handle_many(commands, batch_size=batch, writer=writer):
                lines.popleft()
                n += 1
                refused += not result.ok
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        events = int(app.recorder.max_notification_id() or 0)
    finally:
        app.close()
    if refused:
        raise SystemExit(f"the engine refused {refused} command(s) of the benchmark")
    return seconds, n, events, cpu


def single_apply(db: str, commands: list[dict[str, Any]], latencies: list[float]) -> float:
    """Each command parsed and handled in its own transaction (after the store's bulk load)."""
    app = engine_for(db)
    try:
        gc.collect()
        started = time.perf_counter()
        for body in commands:
            t0 = time.perf_counter()
            app.handle(parse_command(body))
            latencies.append(time.perf_counter() - t0)
        return time.perf_counter() - started
    finally:
        app.close()


def med(values: list[float]) -> float:
    return statistics.median(values)


def run_size(store: Store, hazards: int, args: argparse.Namespace, work: Path) -> list[Figure]:
    figures: list[Figure] = []
    repeat = args.repeat if hazards < 100_000 else max(1, args.repeat_large)
    commands = workload(hazards)
    jsonl = work / f"commands-{hazards}.jsonl"
    write_jsonl(jsonl, commands)
    say = lambda text: print(f"  [{store.name} {hazards:,}] {text}", file=sys.stderr, flush=True)  # noqa: E731

    # Bulk apply, plain eventsourcing, raw inserts: interleaved in each repeat.
    bulk, plain, raw, ratios_raw, ratios_plain, cpu_us = [], [], [], [], [], []
    db = ""
    rows: list[tuple[str, int, str, bytes]] = []
    events = 0
    for i in range(repeat):
        db = store.fresh("engine")
        seconds, n, events, cpu = bulk_apply(db, jsonl, args.batch)
        bulk.append(events / seconds)
        cpu_us.append(cpu / events * 1e6)
        say(
            f"bulk apply {i + 1}/{repeat}: {n:,} commands, {events:,} events in {seconds:.1f} s "
            f"({cpu_us[-1]:.0f} µs of CPU per event)"
        )
        rows = store.engine_rows(db)
        seconds = store.raw_insert(rows, args.batch)
        raw.append(len(rows) / seconds)
        seconds, count = plain_run(store.plain_env("plain"), rows[: args.plain_max], None)
        plain.append(count / seconds)
        ratios_raw.append(bulk[-1] / raw[-1])
        ratios_plain.append(bulk[-1] / plain[-1])
    figures.append(
        Figure(
            f"bulk apply, batches of {args.batch} (events/s)",
            med(bulk),
            "ev/s",
            f"raw executemany, batches of {args.batch}",
            med(raw),
            note=f"engine: {med(cpu_us):.0f} µs of CPU per event",
            extra={"ratio_median": med(ratios_raw), "events": events, "cpu_us": med(cpu_us)},
        )
    )
    figures.append(
        Figure(
            "  … the same beside plain eventsourcing",
            med(bulk),
            "ev/s",
            "plain eventsourcing, 1 save/command",
            med(plain),
            note=f"plain: the first {min(len(rows), args.plain_max):,} events",
            extra={"ratio_median": med(ratios_plain)},
        )
    )

    # One command per transaction, onto the store the last bulk run left (its size).
    singles = workload(args.singles_hazards, prefix="S")
    single_rates, lat_all, raw_single_rates, raw_lat = [], [], [], []
    plain_single, plain_lat = [], []
    for i in range(repeat):
        one = store.fresh("single")
        shutil_copy(store, db, one)
        lat: list[float] = []
        seconds = single_apply(one, singles, lat)
        single_rates.append(len(singles) / seconds)
        lat_all.extend(lat)
        say(f"one per transaction {i + 1}/{repeat}: {len(singles):,} in {seconds:.1f} s")
        sub = rows[: len(singles)]
        rl: list[float] = []
        seconds = store.raw_single(sub, rl)
        raw_single_rates.append(len(sub) / seconds)
        raw_lat.extend(rl)
        pl: list[float] = []
        seconds, count = plain_run(store.plain_env("plain"), sub, pl)
        plain_single.append(count / seconds)
        plain_lat.extend(pl)
    figures.append(
        Figure(
            "one command per transaction (commands/s)",
            med(single_rates),
            "cmd/s",
            "raw insert+commit per row",
            med(raw_single_rates),
        )
    )
    figures.append(
        Figure(
            "  … the same beside plain eventsourcing",
            med(single_rates),
            "cmd/s",
            "plain eventsourcing, 1 save/command",
            med(plain_single),
        )
    )
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        figures.append(
            Figure(
                f"  latency {label}, parse + handle (ms)",
                percentile(lat_all, q) * 1000,
                "ms",
                f"raw insert+commit per row, {label}",
                percentile(raw_lat, q) * 1000,
                note=f"plain eventsourcing {percentile(plain_lat, q) * 1000:.2f} ms",
            )
        )

    # Reads, on the last bulk-built store.
    app = engine_for(db)
    try:
        raw_rates = []
        for _ in range(repeat):
            seconds, n = timed(lambda: store.raw_events(db))
            raw_rates.append(n / seconds)
        seconds, _ = timed(lambda: paged_read(app, 5000, app.mapper.to_domain_event))
        decoded = events / seconds
        catch = []
        for i in range(repeat):
            if store.name == "SQLite":
                drop_views(db)  # as scripts/bench_projections.py does
                runner = build_runner(app)
            else:
                runner = build_runner(app)
                forget_views(runner)
            seconds, done = timed(runner.catch_up)
            catch.append(done / seconds)
            say(f"catch-up {i + 1}/{repeat}: {done:,} events in {seconds:.1f} s")
        figures.append(
            Figure(
                "projection catch-up from zero (events/s)",
                med(catch),
                "ev/s",
                "raw read of the event table",
                med(raw_rates),
                note=f"select_notifications + decode: {decoded:,.0f} ev/s",
            )
        )

        rng = random.Random(7)
        ids = [f"H{rng.randrange(hazards):07d}" for _ in range(args.loads)]
        cases = [(i, app.get_hazard(i)) for i in ids]
        oids = [h.id.hex if store.name == "SQLite" else str(h.id) for _, h in cases]
        now_t, past_t, raw_t = [], [], []
        for _ in range(repeat):
            s, _ = timed(lambda: [app.get_hazard(i) for i in ids])
            now_t.append(s / len(ids))
            s, _ = timed(lambda: [app.get_hazard(i, max(1, h.version // 2)) for i, h in cases])
            past_t.append(s / len(ids))
            raw_t.append(store.raw_cases(db, oids) / len(ids))
        versions = statistics.mean(h.version for _, h in cases)
        figures.append(
            Figure(
                "load one case, as of now (ms)",
                med(now_t) * 1000,
                "ms",
                "raw select of its rows (open connection)",
                med(raw_t) * 1000,
                note=f"{len(ids)} random cases, {versions:.1f} events each",
            )
        )
        figures.append(
            Figure(
                "load one case, as of half its versions (ms)",
                med(past_t) * 1000,
                "ms",
                "raw select of its rows (open connection)",
                med(raw_t) * 1000,
            )
        )

        with runner.engine.connect() as conn:
            over = []
            report = None
            for _ in range(max(3, repeat)):  # a few seconds at most: always a median of 3
                s, report = timed(lambda: overdue_report(conn, AS_OF, app.policy, app.calendar))
                over.append(s)
        ledger = []
        for _ in range(max(3, repeat)):
            s, n = timed(lambda: store.raw_ledger(db))
            ledger.append(s)
        assert report is not None
        figures.append(
            Figure(
                f"overdue report over {hazards:,} hazards (s)",
                med(over),
                "s",
                f"raw read of the ledger ({n:,} rows)",
                med(ledger),
                note=f"{len(report.rows):,} overdue rows, {report.open_cases:,} open",
            )
        )
    finally:
        app.close()
    return figures


def forget_views(runner: Any) -> None:
    """What `ProjectionRunner.rebuild` does before it catches up: no rows, no positions."""
    from sqlalchemy import delete

    from projections.tables import tracking

    with runner.engine.begin() as conn:
        for p in runner.projections:
            for table in p.tables:
                conn.execute(delete(table))
            conn.execute(delete(tracking).where(tracking.c.name == p.name))
            p.reset()


def shutil_copy(store: Store, source: str, target: str) -> None:
    """Start the one-command runs from the bulk-loaded store (same size of tables)."""
    if isinstance(store, SQLiteStore):
        with (
            contextlib.closing(sqlite3.connect(source)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
    else:
        assert isinstance(store, PostgresStore)
        src = source.rsplit("/", 1)[1]
        dst = target.rsplit("/", 1)[1]
        store.server.drop_database(dst)
        import psycopg

        with psycopg.connect(store.server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dst}" TEMPLATE "{src}"')


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def fmt(value: float, unit: str) -> str:
    if unit in ("ms", "s"):
        return f"{value:,.3f} {unit}" if value < 10 else f"{value:,.1f} {unit}"
    return f"{value:,.0f} {unit}"


def print_table(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nmachine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}, "
        f"SQLite {m['sqlite']}, load {m['load_avg']} at start; repeats {results['repeat']} "
        f"({results['repeat_large']} at 100k hazards and over)"
    )
    for run in results["runs"]:
        print(f"\n== {run['store']}, {run['hazards']:,} hazards ({run['events']:,} events) ==")
        rows = []
        for f in run["figures"]:
            ratio = f["ratio"]
            rows.append(
                (
                    f["what"],
                    fmt(f["value"], f["unit"]),
                    f["baseline"],
                    fmt(f["base_value"], f["unit"]) if f["base_value"] is not None else "",
                    f"x{ratio:.3f}" if ratio is not None else "",
                    f["note"],
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            print(
                f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  "
                f"{r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}  {r[5]}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="hazards, comma-separated")
    parser.add_argument("--quick", action="store_true", help="2,000 hazards, 2 repeats")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL too (throwaway server)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--batch", type=int, default=500, help="commands per transaction (bulk)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (median)")
    parser.add_argument("--repeat-large", type=int, default=1, help="runs at 100k and over")
    parser.add_argument(
        "--singles-hazards", type=int, default=500, help="cases applied one command at a time"
    )
    parser.add_argument("--loads", type=int, default=200, help="cases loaded, per repeat")
    parser.add_argument(
        "--plain-max",
        type=int,
        default=20_000,
        help="events written by the plain eventsourcing baseline (one commit each: a sample)",
    )
    parser.add_argument("--workdir", help="where stores go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.repeat, args.singles_hazards, args.loads = [2000], 2, 200, 100
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "repeat": args.repeat,
        "repeat_large": max(1, args.repeat_large),
        "runs": [],
    }
    stores: list[Callable[[], Store]] = []
    if not args.no_sqlite:
        stores.append(lambda: SQLiteStore(work))
    if args.pg:
        stores.append(PostgresStore)
    try:
        for make in stores:
            store = make()
            try:
                for hazards in sizes:
                    figures = run_size(store, hazards, args, work)
                    results["runs"].append(
                        {
                            "store": store.name,
                            "hazards": hazards,
                            "events": figures[0].extra["events"],
                            "figures": [{**f.__dict__, "ratio": f.ratio} for f in figures],
                        }
                    )
                    print_table({**results, "runs": results["runs"][-1:]})
            finally:
                store.close()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_avg_end"] = machine()["load_avg"]
    print("\n\nALL RESULTS")
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
