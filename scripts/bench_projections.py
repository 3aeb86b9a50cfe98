#!/usr/bin/env python3
"""Benchmark: projection catch-up and the reports over a large ledger (issue #3).

Builds a store of N hazards through the real engine (`HazardLoop.handle_many`, batched commands:
the bulk `hazardloop apply` path), then measures, in the same run and on the same file:

- the raw read rate of the event table (sqlite3, all rows), the rate through the recorder's
  `select_notifications` in pages, and that plus decoding with the application's mapper;
- a catch-up of the projections from zero (read-model tables dropped, then
  `ProjectionRunner.catch_up`), in events/s and as a ratio of each read rate;
- the overdue report as of a moment when many steps are overdue, and the accountability report
  for a quarter (median of 3 each).

    .venv/bin/python scripts/bench_projections.py --quick            # 10k hazards
    .venv/bin/python scripts/bench_projections.py --hazards 100000
    .venv/bin/python scripts/bench_projections.py --db /tmp/1m.db --keep --build-only  # 1M
    .venv/bin/python scripts/bench_projections.py --db /tmp/1m.db --keep --json  # reuses it

A store that already holds the requested number of hazards is reused (the build is skipped).
Another `projections` package can be measured on the same store with PYTHONPATH (the baseline
in docs/performance.md). Results and how to read them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: PYTHONPATH may point at another `projections`

from adapters.bootstrap import Settings, build_engine, build_runner  # noqa: E402
from adapters.bulk_writer import BulkWriter  # noqa: E402
from loop.application import HazardLoop  # noqa: E402
from loop.commands import parse_command  # noqa: E402
from projections.reports import accountability_report, overdue_report, parse_period  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
#: Hazards are discovered evenly over this window, whatever their number.
FIRST = datetime(2025, 1, 2, 8, 0, tzinfo=TZ)
LAST = datetime(2026, 9, 30, 18, 0, tzinfo=TZ)
#: The engine's fixed clock; nothing is planned after CUTOFF, so what is unfinished stays open.
CLOCK = datetime(2026, 10, 16, 9, 0, tzinfo=TZ)
CUTOFF = datetime(2026, 10, 15, 18, 0, tzinfo=TZ)
#: The overdue report is run as of this moment, the accountability report for this quarter.
AS_OF = datetime(2026, 10, 15, 18, 0, tzinfo=TZ)
PERIOD = "2026-Q3"

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

CATEGORIES = ("fire", "gas", "construction", "industry_trade", "road_traffic", "hazchem",
              "fireworks", "non_coal_mine")  # fmt: skip
SOURCES = ("patrol", "inspection", "self_check", "public_tip")


# ------------------------------------------------------------------ the store


class Plan:
    """The commands of one case, at increasing business times (cut at CUTOFF)."""

    def __init__(self, hazard_id: str, rng: random.Random, at: datetime) -> None:
        self.id = hazard_id
        self.rng = rng
        self.at = at
        self.commands: list[tuple[datetime, dict[str, Any]]] = []
        self.grade = "major" if rng.random() < 0.05 else "general"
        self.grid = f"G{rng.randrange(400):03d}"
        self.member = f"m-{self.grid}-{rng.randrange(3)}"
        unit = rng.randrange(150)
        self.unit, self.person = f"U{unit:03d}", f"p-{unit:03d}-{rng.randrange(3)}"

    def emit(self, command: str, after: timedelta, **fields: Any) -> bool:
        """Plan `command` `after` the previous one; False once past the cut (the case stops)."""
        at = self.at + after
        if at > CUTOFF:
            return False
        self.at = at
        body = {"command": command, "hazard_id": self.id, "at": at.isoformat(), **fields}
        body.setdefault("actor", "centre-1")
        self.commands.append((at, body))
        return True

    def hours(self, lo: float, hi: float, late: float = 0.0, late_hi: float = 0.0) -> timedelta:
        """A delay in [lo, hi] hours, or (with probability `late`) up to `late_hi` hours."""
        if late and self.rng.random() < late:
            return timedelta(hours=self.rng.uniform(hi, late_hi))
        return timedelta(hours=self.rng.uniform(lo, hi))

    def maybe_escalate(self, delay: timedelta, limit: timedelta) -> timedelta:
        """When a step runs late, a reminder first (as the nightly job does); the rest of delay."""
        if delay <= limit + DAY:
            return delay
        if not self.emit("escalate", limit + DAY, level="reminder", actor="nightly"):
            return delay
        return delay - limit - DAY

    def assign_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"unit": self.unit, "person": self.person,
                                  "measures": "按规定整改", "actor": "centre-2"}  # fmt: skip
        if self.grade == "major":
            fields["due"] = (self.at + 30 * DAY).isoformat()
        return fields


def plan_case(i: int, rng: random.Random, at: datetime) -> Plan:
    """One case's life: mostly the full loop, with every side path at realistic rates."""
    p = Plan(f"H{i:07d}", rng, at)
    r = rng.random
    fixed = r() < 0.05
    p.emit("discover", timedelta(0), actor=p.member, grid=p.grid,
           category=rng.choice(CATEGORIES), grade=p.grade, title=f"隐患 {i}",
           source=rng.choice(SOURCES), fixed_on_spot=fixed)  # fmt: skip
    stalls = r() < 0.02  # stops at some step for good: long overdue
    if not fixed and r() < 0.03:
        p.emit("reject", p.hours(1, 20), reason="不属于安全生产隐患")
        if r() < 0.2:
            p.emit("reopen", p.hours(24, 200), reason="复核后确属隐患")
        else:
            return p
    if fixed:
        verify_by = "inspector-1"
    else:
        if r() < 0.02:
            p.emit("regrade", p.hours(0.5, 3), grade="major" if p.grade == "general"
                   else "general", reason="复核定级")  # fmt: skip
            p.grade = "major" if p.grade == "general" else "general"
        if stalls and r() < 0.2:
            return p
        if not p.emit("report", p.maybe_escalate(p.hours(1, 20, 0.05, 60), 24 * HOUR),
                      actor=p.member):  # fmt: skip
            return p
        if r() < 0.02:
            if not p.emit("park", p.hours(2, 8), reason="待资金", approved_by="leader-1"):
                return p
            if r() < 0.5 or not p.emit("resume", p.hours(24 * 10, 24 * 60), note="资金到位"):
                return p
        if stalls and r() < 0.25:
            return p
        if not p.emit("assign", p.maybe_escalate(p.hours(1, 20, 0.08, 80), 30 * HOUR),
                      **p.assign_fields()):  # fmt: skip
            return p
        if r() < 0.04:
            p.emit("return", p.hours(2, 30), reason="不属本单位职责", actor=p.person)
            p.unit, p.person = f"U{rng.randrange(150):03d}", f"p-x-{rng.randrange(9)}"
            if not p.emit("assign", p.hours(2, 20), **p.assign_fields()):
                return p
        verify_by = p.member
        rounds = 2 if r() < 0.06 else 1  # rework: the first check fails
        for attempt in range(rounds):
            if r() < 0.04 and not p.emit("reassign", p.hours(24, 72), unit=f"V{rng.randrange(40)}",
                                          person=f"q-{rng.randrange(99)}", reason="调整",
                                          actor="centre-2"):  # fmt: skip
                return p
            if r() < 0.07:
                due = p.at + (60 if p.grade == "major" else 45) * DAY
                if not p.emit("extend", p.hours(48, 200), due=due.isoformat(), reason="工程量大",
                              approved_by="leader-2", actor=p.person):  # fmt: skip
                    return p
            if stalls and r() < 0.4:
                return p
            delay = p.hours(24, 24 * 12, 0.15, 24 * 30)
            if not p.emit("rectify", p.maybe_escalate(delay, 14 * DAY), note="已整改",
                          actor=p.person):  # fmt: skip
                return p
            if attempt + 1 < rounds:
                fields: dict[str, Any] = {"passed": False, "note": "整改不到位", "actor": verify_by}
                if p.grade == "major":
                    fields["due"] = (p.at + 30 * DAY).isoformat()
                if not p.emit("verify", p.hours(4, 60), **fields):
                    return p
    if stalls:
        return p
    if not p.emit("verify", p.maybe_escalate(p.hours(4, 60, 0.08, 24 * 8), 4 * DAY),
                  passed=True, actor=verify_by):  # fmt: skip
        return p
    if not p.emit("close", p.hours(1, 20, 0.05, 72), actor="centre-3"):
        return p
    if r() < 0.01:
        p.emit("reopen", p.hours(24 * 5, 24 * 40), reason="隐患复现")
    return p


def command_stream(hazards: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every case's commands, merged into one stream in business-time order."""
    rng = random.Random(seed)
    span = (LAST - FIRST) / hazards
    pending: list[tuple[datetime, int, dict[str, Any]]] = []
    seq = 0
    for i in range(hazards):
        at = FIRST + span * i
        while pending and pending[0][0] <= at:
            yield heapq.heappop(pending)[2]
        for when, body in plan_case(i, rng, at).commands:
            seq += 1
            heapq.heappush(pending, (when, seq, body))
    while pending:
        yield heapq.heappop(pending)[2]


def build_store(db: str, hazards: int, seed: int, batch: int) -> dict[str, Any]:
    """Write the hazards through the engine; refuse to go on if it refuses a command."""
    app = build_engine(Settings(db=db), clock=lambda: CLOCK)
    started = time.perf_counter()
    commands = refused = 0
    first_error = ""
    try:
        # The engine's cache of cases must hold the cases still in play, or each command would
        # read its case back from the store: a few weeks of discoveries at this rate.
        cache = max(20_000, hazards // 5)
        # As `hazardloop apply FILE` does: on SQLite, batches stored by the bulk writer process.
        results = app.handle_many(map(parse_command, command_stream(hazards, seed)),
                                  batch_size=batch, cache_size=cache,
                                  writer=BulkWriter.factory(app))  # fmt: skip
        for result in results:
            commands += 1
            if not result.ok:
                refused += 1
                if result.error is not None and len(first_error) < 2000:
                    first_error += f"\n{result.hazard_id}: {result.error.message}"
            if commands % 200_000 == 0:
                rate = commands / (time.perf_counter() - started)
                print(f"  … {commands:,} commands, {rate:,.0f}/s", file=sys.stderr, flush=True)
        events = int(app.recorder.max_notification_id() or 0)
    finally:
        app.close()
    seconds = time.perf_counter() - started
    if refused:
        raise SystemExit(f"the engine refused {refused} command(s), e.g. {first_error}")
    return {"commands": commands, "events": events, "seconds": round(seconds, 1),
            "events_per_s": round(events / seconds)}  # fmt: skip


def stored_hazards(db: str) -> int:
    """How many hazards the store at `db` holds (0 when there is no store)."""
    if not Path(db).exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute(
                "SELECT COUNT(*) FROM stored_events WHERE originator_version=1 "
                "AND topic='loop.hazard:Hazard.Discovered'"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


# ------------------------------------------------------------------ measuring


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def raw_read(db: str) -> int:
    """Every row of the event table through sqlite3, nothing else."""
    with sqlite3.connect(db) as conn:
        n = 0
        for _ in conn.execute("SELECT * FROM stored_events ORDER BY rowid"):
            n += 1
    return n


def paged_read(app: HazardLoop, page: int, decode: Callable[[Any], Any] | None) -> int:
    """The event log through the recorder's `select_notifications`, optionally decoded."""
    n, start = 0, 1
    while True:
        notes = app.recorder.select_notifications(start=start, limit=page)
        if not notes:
            return n
        if decode is not None:
            for note in notes:
                decode(note)
        n += len(notes)
        start = notes[-1].id + 1


def drop_views(db: str) -> None:
    """Remove every read model, so a catch-up starts from zero with this code's own schema."""
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for name in ("ledger", "steps", "step_segments", "grids", "post_tenures",
                     "projection_tracking"):  # fmt: skip
            if name in names:
                conn.execute(f"DROP TABLE {name}")
        conn.commit()


def median_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(n):
        seconds, out = timed(fn)
        times.append(seconds)
    return statistics.median(times), out


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(ram, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def measure(db: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    app = build_engine(Settings(db=db), clock=lambda: CLOCK)
    try:
        events = int(app.recorder.max_notification_id() or 0)
        out["events"] = events
        page = args.chunk or 5000
        seconds, _ = timed(lambda: raw_read(db))
        out["raw_sqlite_read"] = round(events / seconds)
        seconds, _ = timed(lambda: paged_read(app, page, None))
        out["select_notifications"] = round(events / seconds)
        seconds, _ = timed(lambda: paged_read(app, page, app.mapper.to_domain_event))
        out["select_and_decode"] = round(events / seconds)

        drop_views(db)
        runner = build_runner(app)
        if args.chunk:  # every transaction, a rebuild's too
            runner.chunk_size = runner.rebuild_chunk_size = args.chunk
        gc.disable()  # stays off after the catch-up: what is left is what a collection finds
        seconds, done = timed(lambda: runner.catch_up(until=args.until))
        out["cyclic_garbage_after_catch_up"] = gc.collect()
        gc.enable()
        out["catch_up_events"] = done
        out["catch_up_seconds"] = round(seconds, 2)
        out["catch_up"] = round(done / seconds)
        out["chunk_size"] = runner.last_chunk_size
        out["refolded_cases"] = getattr(runner.projections[0], "refolded", None)
        out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        out["ratio_to_raw_read"] = round(out["catch_up"] / out["raw_sqlite_read"], 3)
        out["ratio_to_select"] = round(out["catch_up"] / out["select_notifications"], 3)
        out["ratio_to_select_and_decode"] = round(out["catch_up"] / out["select_and_decode"], 3)

        period = parse_period(PERIOD)
        with runner.engine.connect() as conn:
            seconds, report = median_of(args.repeat, lambda: overdue_report(
                conn, AS_OF, app.policy, app.calendar))  # fmt: skip
            out["overdue_report_s"] = round(seconds, 3)
            out["overdue_rows"] = len(report.rows)
            out["open_cases"] = report.open_cases
            out["parked_cases"] = report.parked_cases
            seconds, acc = median_of(args.repeat, lambda: accountability_report(
                conn, period, AS_OF, app.policy, app.calendar))  # fmt: skip
            out["accountability_report_s"] = round(seconds, 3)
            out["accountability_rows"] = len(acc.rows)
            out["accountability_due"] = acc.totals.due
        with sqlite3.connect(db) as conn:
            out["rows"] = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                           for t in ("ledger", "steps", "step_segments")}  # fmt: skip
        out["db_mib"] = round(Path(db).stat().st_size / 2**20)
    finally:
        app.close()
    return out


def print_table(result: dict[str, Any]) -> None:
    m, r = result["machine"], result["measured"]
    print(
        f"\nmachine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}, "
        f"SQLite {m['sqlite']}, load {m['load_avg']}"
    )
    build = result.get("build")
    if build:
        print(
            f"built {result['hazards']:,} hazards: {build['commands']:,} commands -> "
            f"{build['events']:,} events in {build['seconds']:,} s "
            f"({build['events_per_s']:,} events/s through HazardLoop.handle_many)"
        )
    else:
        print(f"reused the store of {result['hazards']:,} hazards ({r['events']:,} events)")
    rows = [
        ("raw read of stored_events (sqlite3)", f"{r['raw_sqlite_read']:,} ev/s", ""),
        ("recorder.select_notifications, pages", f"{r['select_notifications']:,} ev/s", ""),
        ("  … and decoded by the app's mapper", f"{r['select_and_decode']:,} ev/s", ""),
        (f"projection catch-up from zero ({r['catch_up_events']:,} events, "
         f"chunk {r['chunk_size']:,})", f"{r['catch_up']:,} ev/s",
         f"{r['catch_up_seconds']} s; x{r['ratio_to_raw_read']} raw read, "
         f"x{r['ratio_to_select_and_decode']} select+decode"),
        (f"overdue report as of {AS_OF:%Y-%m-%d %H:%M} (median of {result['repeat']})",
         f"{r['overdue_report_s']} s",
         f"{r['overdue_rows']:,} overdue rows, {r['open_cases']:,} open, "
         f"{r['parked_cases']:,} parked"),
        (f"accountability report {PERIOD} (median of {result['repeat']})",
         f"{r['accountability_report_s']} s",
         f"{r['accountability_rows']:,} rows, {r['accountability_due']:,} steps due"),
    ]  # fmt: skip
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:>14}  {c}")
    print(
        f"  view rows: {r['rows']}, store {r['db_mib']:,} MiB, peak RSS {r['peak_rss_mib']:,} "
        f"MiB, cases folded again from the store: {r['refolded_cases']}, cyclic garbage "
        f"left by the catch-up: {r['cyclic_garbage_after_catch_up']} objects"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hazards", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="10,000 hazards")
    parser.add_argument(
        "--db",
        help="the store to build or reuse (default: a temporary file); its read models "
        "are dropped and rebuilt",
    )
    parser.add_argument("--keep", action="store_true", help="keep a store this run built")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--batch", type=int, default=2000, help="commands per transaction")
    parser.add_argument("--chunk", type=int, help="events per catch-up transaction")
    parser.add_argument("--until", type=int, help="catch up only to this position")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each report (median)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--build-only", action="store_true", help="only build the store")
    args = parser.parse_args(argv)
    hazards = 10_000 if args.quick else args.hazards
    tmp = None
    if args.db:
        db = args.db
    else:
        tmp = tempfile.mkdtemp(prefix="bench-projections-")
        db = str(Path(tmp) / f"hazards-{hazards}.db")
    result: dict[str, Any] = {"hazards": hazards, "db": db, "seed": args.seed,
                              "repeat": args.repeat, "machine": machine()}  # fmt: skip
    folder = Path(db).parent
    folder.mkdir(parents=True, exist_ok=True)
    existed = set(folder.iterdir())
    built = False
    try:
        have = stored_hazards(db)
        if have and have != hazards:
            raise SystemExit(f"{db} holds {have:,} hazards, not {hazards:,}: give another --db")
        if not have:
            print(f"building {hazards:,} hazards in {db} …", file=sys.stderr, flush=True)
            built = True
            result["build"] = build_store(db, hazards, args.seed, args.batch)
        if args.build_only:
            print(json.dumps(result, indent=2))
            return 0
        result["measured"] = measure(db, args)
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif built and not args.keep:  # what this run made: the store and the files beside it
            for path in set(folder.iterdir()) - existed:
                if path.name.startswith(Path(db).name):
                    path.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
