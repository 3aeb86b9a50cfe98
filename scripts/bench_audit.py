"""Benchmark: `audit verify` throughput beside raw SHA-256 over the same stored bytes.

Builds a store through the real engine (or reuses one with --db), then, in the same run:
  1. reads every stored event's bytes into memory (the read rate of the event table);
  2. hashes each event's exact stored bytes once with hashlib's SHA-256 (the raw rate);
  3. runs the full verification (both chains, from the file) — the figure that matters.
Each timing is the median of --repeat runs. Target (issue 4): verify ≥ 40 % of the raw rate.

    .venv/bin/python scripts/bench_audit.py --hazards 50000
    .venv/bin/python scripts/bench_audit.py --db existing.db
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.audit import verify
from adapters.bootstrap import Settings, build_engine
from adapters.store import frame
from loop.commands import CommandBase, parse_command

START = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)


def build(path: Path, hazards: int) -> float:
    """Write `hazards` cases (1–6 steps each) through the engine; return seconds taken."""
    app = build_engine(Settings(db=str(path)), clock=lambda: START + timedelta(days=400))
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


def read_frames(path: Path) -> list[bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events ORDER BY rowid"
    ).fetchall()
    conn.close()
    return [frame(o, v, t, s) for o, v, t, s in rows]


def raw_sha256(frames: list[bytes]) -> None:
    sha256 = hashlib.sha256
    for f in frames:
        sha256(f).digest()


def timed(fn: object, repeat: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--hazards", type=int, default=50_000, help="cases to build")
    parser.add_argument("--db", type=Path, help="reuse (or keep) this store")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    path = args.db or Path(tempfile.mkdtemp(prefix="bench-audit-")) / "bench.db"
    build_seconds = None
    if not path.exists():
        print(f"building {args.hazards} cases in {path} …", file=sys.stderr)
        build_seconds = build(path, args.hazards)
    frames = read_frames(path)
    events = len(frames)
    total_bytes = sum(len(f) for f in frames)
    read_s = timed(lambda: read_frames(path), args.repeat)
    raw_s = timed(lambda: raw_sha256(frames), args.repeat)
    outcome = verify(path)
    if not outcome.ok:
        raise SystemExit(f"the store does not verify: {outcome.to_dict()}")
    verify_s = timed(lambda: verify(path), args.repeat)
    figures = {
        "events": events,
        "mean_event_bytes": round(total_bytes / events, 1) if events else 0,
        "build_seconds": round(build_seconds, 2) if build_seconds else None,
        "read_events_per_s": round(events / read_s),
        "raw_sha256_events_per_s": round(events / raw_s),
        "verify_events_per_s": round(events / verify_s),
        "verify_vs_raw_sha256": round(raw_s / verify_s, 3),
        "head": str(outcome.head),
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"events                          {events:>12,}  (mean {figures['mean_event_bytes']} B)")
    print(f"read the event table            {figures['read_events_per_s']:>12,} events/s")
    print(f"raw SHA-256 over the same bytes {figures['raw_sha256_events_per_s']:>12,} events/s")
    print(f"audit verify (both chains)      {figures['verify_events_per_s']:>12,} events/s")
    ratio = figures["verify_vs_raw_sha256"]
    print(f"verify / raw SHA-256            {ratio:>12.1%}  (target ≥ 40 %)")
    print(f"head                            {outcome.head}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
