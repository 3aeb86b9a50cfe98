"""Benchmark: `audit verify` throughput beside raw SHA-256 over the same stored bytes.

Builds a store through the real engine (or reuses one with --db), reads every event's frame
(its exact stored bytes, as hashed) into memory once, then runs --repeat rounds; each round
times, back to back:
  1. reading the event table (the read rate of the store through Python's sqlite3);
  2. raw SHA-256: hashlib's SHA-256 of each event's frame, once, in one process (the raw rate);
  3. `audit verify` as shipped: both chains, from the file, split across processes;
  4. the same verification in one process (`workers=1`: one range interpreter, APSW);
  5. (SQLite) the same range check in this process with the standard library's `sqlite3`
     reader instead of APSW: what the range interpreters read with before (the reader's share).
Rates are medians over the rounds; each ratio is the median of the rounds' own ratios (raw and
verify timed seconds apart, under the same load). Target (issue 4): verify ≥ 40 % of raw.
CPU seconds per event (this process and the verifier's worker processes) are printed beside
the rates: what the work costs, whatever else the machine was running.

    .venv/bin/python scripts/bench_audit.py --hazards 150000 --db /tmp/audit150k.db
    .venv/bin/python scripts/bench_audit.py --db existing.db --repeat 5
    .venv/bin/python scripts/bench_audit.py --hazards 20000 --db postgresql://USER@HOST:PORT/DB
(a throwaway PostgreSQL server for the last: `python -m tests.pgserver`; on PostgreSQL one
process verifies, and the database server shares the machine.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.audit import verify
from adapters.audit_scan import check_range, readonly_uri
from adapters.bootstrap import Settings, build_engine
from adapters.store import frame, parse_db
from loop.commands import CommandBase, parse_command

START = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)


#: The tipsters' master key for a PostgreSQL store built here (a SQLite store keeps a key file).
PG_KEY = "A" * 43 + "="


def build(store: str, hazards: int) -> float:
    """Write `hazards` cases (1–6 steps each) through the engine; return seconds taken."""
    key = PG_KEY if parse_db(store).pg is not None else None
    settings = Settings(db=store, cipher_key=key)
    app = build_engine(settings, clock=lambda: START + timedelta(days=400))
    started = time.perf_counter()
    batch: list[CommandBase] = []

    def flush() -> None:
        for result in app.handle_many(batch, batch_size=500):
            if not result.ok:
                raise SystemExit(f"build failed: {result.to_dict()}")
        batch.clear()

    for i in range(hazards):
        hid = f"B-{i:07d}"
        at = START + timedelta(minutes=i % 50_000)
        steps = [
            {"command": "discover", "actor": "patrol", "grid": f"G{i % 40}", "category": "fire",
             "grade": "major" if i % 10 == 0 else "general", "title": f"hazard {i}",
             "location": "building 3, floor 2", "source": "patrol"},
            {"command": "report", "actor": "patrol"},
            {"command": "assign", "actor": "centre", "unit": f"U{i % 97}", "person": f"P{i % 13}",
             "due": (at + timedelta(days=30)).isoformat()},
            {"command": "rectify", "actor": f"P{i % 13}", "note": "replaced the extinguisher"},
            {"command": "verify", "actor": "patrol", "passed": True},
            {"command": "close", "actor": "centre"},
        ]  # fmt: skip
        for n, step in enumerate(steps[: 1 + i % 6]):
            at_n = (at + timedelta(hours=n)).isoformat()
            batch.append(parse_command(step | {"hazard_id": hid, "at": at_n}))
        if len(batch) >= 5000:
            flush()
    flush()
    app.close()
    return time.perf_counter() - started


def read_frames(store: str) -> list[bytes]:
    """Every event's frame, in log order: the exact stored bytes the chains hash."""
    location = parse_db(store)
    sql = "SELECT originator_id, originator_version, topic, state FROM stored_events ORDER BY {}"
    if location.pg is None:
        conn = sqlite3.connect(readonly_uri(location.path), uri=True)
        rows = conn.execute(sql.format("rowid")).fetchall()
        conn.close()
        return [frame(o, v, t, s) for o, v, t, s in rows]
    import psycopg

    with psycopg.connect(**location.psycopg_kwargs()) as pg:
        rows = pg.execute(sql.format("notification_id")).fetchall()  # type: ignore[arg-type]
    return [frame(o.hex, v, t, s) for o, v, t, s in rows]  # a UUID id: its 32 hex digits


def holds_events(store: str) -> bool:
    location = parse_db(store)
    if location.pg is None:
        return location.path.exists()
    import psycopg

    with psycopg.connect(**location.psycopg_kwargs()) as pg:
        found = pg.execute("SELECT to_regclass('stored_events') IS NOT NULL").fetchone()
        return bool(found and found[0] and read_frames(store))


def raw_sha256(frames: list[bytes]) -> None:
    sha256 = hashlib.sha256
    for f in frames:
        sha256(f).digest()


def measured(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this process and of the processes it waited for."""

    def cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    started, used = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - started, cpu() - used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--hazards", type=int, default=50_000, help="cases to build")
    parser.add_argument(
        "--db", help="reuse (or keep) this store: a SQLite file or a postgresql:// URL"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians are reported)")
    parser.add_argument("--workers", type=int, help="processes for verify (default: as shipped)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    path = args.db or str(Path(tempfile.mkdtemp(prefix="bench-audit-")) / "bench.db")
    build_seconds = None
    if not holds_events(path):
        print(f"building {args.hazards} cases in {path} …", file=sys.stderr)
        build_seconds = build(path, args.hazards)
    frames = read_frames(path)
    events = len(frames)
    total_bytes = sum(len(f) for f in frames)
    outcome = verify(path, workers=args.workers)
    if not outcome.ok:
        raise SystemExit(f"the store does not verify: {outcome.to_dict()}")
    load_before = os.getloadavg()
    rounds: list[dict[str, float]] = []
    cpu_rounds: list[dict[str, float]] = []
    for _ in range(args.repeat):
        m = {
            "read": measured(lambda: read_frames(path)),
            "raw": measured(lambda: raw_sha256(frames)),
            "verify": measured(lambda: verify(path, workers=args.workers)),
            "verify_1": measured(lambda: verify(path, workers=1)),
        }
        if not path.startswith("postgresql"):
            m["sqlite3_1"] = measured(lambda: check_range(path, 1, events, "sqlite3"))
        t = {k: wall for k, (wall, _) in m.items()}
        rounds.append(t)
        cpu_rounds.append({k: used for k, (_, used) in m.items()})
        if not args.json:
            print(
                "  round: "
                + ", ".join(f"{k} {events / v:,.0f} ev/s" for k, v in t.items())
                + f"; verify/raw {t['raw'] / t['verify']:.1%}",
                file=sys.stderr,
            )

    def rate(key: str) -> int:
        return round(events / statistics.median(r[key] for r in rounds))

    def ratio(key: str) -> float:
        return round(statistics.median(r["raw"] / r[key] for r in rounds), 3)

    def cpu_us(key: str) -> float:
        """CPU microseconds per event (all processes), median over the rounds."""
        return round(statistics.median(r[key] for r in cpu_rounds) / events * 1e6, 2)

    figures = {
        "events": events,
        "mean_event_bytes": round(total_bytes / events, 1) if events else 0,
        "build_seconds": round(build_seconds, 2) if build_seconds else None,
        "rounds": args.repeat,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "read_events_per_s": rate("read"),
        "raw_sha256_events_per_s": rate("raw"),
        "verify_events_per_s": rate("verify"),
        "verify_one_process_events_per_s": rate("verify_1"),
        "sqlite3_one_process_events_per_s": rate("sqlite3_1") if "sqlite3_1" in rounds[0] else None,
        "read_vs_raw_sha256": ratio("read"),
        "verify_vs_raw_sha256": ratio("verify"),
        "verify_one_process_vs_raw_sha256": ratio("verify_1"),
        "sqlite3_one_process_vs_raw_sha256": ratio("sqlite3_1")
        if "sqlite3_1" in rounds[0]
        else None,
        "cpu_us_per_event": {k: cpu_us(k) for k in rounds[0]},
        "head": str(outcome.head),
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    f = figures
    load = f"load {f['load_average'][0]} → {f['load_average'][3]}"
    lines = [
        ("events", f"{events:>12,}  (mean {f['mean_event_bytes']} B)"),
        ("rounds", f"{args.repeat:>12}  ({f['cpus']} CPUs, {load})"),
        ("read the event table", f"{f['read_events_per_s']:>12,} events/s  ", "read_vs"),
        ("raw SHA-256 over the same bytes", f"{f['raw_sha256_events_per_s']:>12,} events/s"),
        ("audit verify (both chains)", f"{f['verify_events_per_s']:>12,} events/s  ", "verify_vs"),
        (
            "  the same, one process",
            f"{f['verify_one_process_events_per_s']:>12,} events/s  ",
            "verify_one_process_vs",
        ),
        (
            "  range check with sqlite3, one",
            f"{f['sqlite3_one_process_events_per_s'] or 0:>12,} events/s  ",
            "sqlite3_one_process_vs",
        ),
        ("CPU per event (µs)", "  ".join(f"{k} {v}" for k, v in f["cpu_us_per_event"].items())),
        ("head", str(outcome.head)),
    ]
    for label, text, *share in lines:
        if share and f[share[0] + "_raw_sha256"] is None:
            continue
        if share:
            text += f"{f[share[0] + '_raw_sha256']:6.1%} of raw"
        print(f"{label:<32}{text}")
    print("target (issue 4): audit verify ≥ 40 % of raw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
