"""Benchmark: projection catch-up from zero in one process against fold helpers, side by side.

Each round runs every mode once, alternating, on the same store: the views dropped, a fresh
runner, `catch_up` timed. A mode is `0` (one process) or `K[:SLICE]` (K helpers, slices of
SLICE events), then options: `,chunk=N` (events per transaction), `,defer=N` (the runner's
`defer_indexes_from`; `,defer=0` keeps the indexes up row by row). Prints events/s, the
runner's and the helpers' CPU, and checks after every run that the views are those of the
first run (every view table, hashed in key order).

    .venv/bin/python scripts/bench_fold_helpers.py --db /tmp/h10k.db --hazards 10000 \\
        --rounds 3 0 2 2:20000
    .venv/bin/python scripts/bench_fold_helpers.py --pg --hazards 10000 --rounds 3 0 1 2
    .venv/bin/python scripts/bench_fold_helpers.py --db /tmp/hl1m/store.db --until 1500000 \
        --rounds 2 2 2,defer=0 2,chunk=250000

A store that does not exist yet is built first (`scripts/bench_projections.py`'s builder);
`--pg` builds one in a throwaway PostgreSQL server. `--until N` stops at position N.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_projections as bp  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402

from adapters.bootstrap import build_runner  # noqa: E402
from projections.tables import grids, ledger, post_tenures, step_segments, steps  # noqa: E402
from scripts.bench import engine_for, forget_views  # noqa: E402


def views_digest(engine: Engine) -> str:
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in (ledger, steps, step_segments, grids, post_tenures):
            keys = list(table.primary_key.columns)
            for row in conn.execute(select(table).order_by(*keys)):
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(url: str, modes: list[str], rounds: int, until: int | None) -> dict[str, Any]:
    app = engine_for(url)
    rates: dict[str, list[float]] = {m: [] for m in modes}
    first: str | None = None
    for _ in range(rounds):
        for mode in modes:
            head, *options = mode.split(",")
            helpers, _, slice_size = head.partition(":")
            runner = build_runner(app)
            runner.fold_helper_from = 1 if int(helpers) else 0
            runner.fold_helpers = max(1, int(helpers))
            if slice_size:
                runner.fold_slice = int(slice_size)
            for option in options:
                name, _, value = option.partition("=")
                if name not in ("chunk", "defer"):
                    raise SystemExit(f"unknown option {name!r} in mode {mode!r}")
                if name == "chunk":
                    runner.chunk_size = runner.rebuild_chunk_size = int(value)
                else:
                    runner.defer_indexes_from = int(value)
            forget_views(runner)
            helpers_before = children_cpu()
            started, cpu = time.perf_counter(), time.process_time()
            done = runner.catch_up(until=until)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
            rates[mode].append(done / wall)
            digest = views_digest(runner.engine)
            first = first or digest
            print(f"{mode:>8}: {done:,} events, {done / wall:,.0f} ev/s; runner CPU {cpu:.2f} s, "
                  f"helpers' CPU {children_cpu() - helpers_before:.2f} s; load "
                  f"{os.getloadavg()[0]:.2f}; views {'same' if digest == first else 'DIFFER'}",
                  flush=True)  # fmt: skip
            if digest != first:
                raise SystemExit(f"the views of mode {mode} differ from the first run's")
            runner.engine.dispose()
    medians = {m: round(statistics.median(r)) for m, r in rates.items()}
    print("medians (events/s):", medians)
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modes",
        nargs="+",
        help="0 (one process) or K[:SLICE] (K helpers), then any of ,chunk=EVENTS (events per "
        "transaction) and ,defer=N (`defer_indexes_from`; 0: indexes kept up row by row)",
    )
    parser.add_argument("--db", help="a SQLite store (built if missing)")
    parser.add_argument("--pg", action="store_true", help="a throwaway PostgreSQL server")
    parser.add_argument("--hazards", type=int, default=10_000, help="when building a store")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--until", type=int)
    args = parser.parse_args()
    if args.pg == bool(args.db):
        parser.error("give --db or --pg")
    if args.pg:
        from tests.pgserver import PostgresServer

        os.environ.setdefault("HAZARDLOOP_CIPHER_KEY_FILE", "/tmp/hazardloop-bench-fold.key")
        with PostgresServer() as pg:
            url = pg.create_database("bench")
            print(bp.build_store(url, args.hazards, 7, 2000), flush=True)
            run(url, args.modes, args.rounds, args.until)
        return 0
    if not Path(args.db).exists():
        print(bp.build_store(args.db, args.hazards, 7, 2000), flush=True)
    run(args.db, args.modes, args.rounds, args.until)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
