"""The same demo district on SQLite and on PostgreSQL: build rate and read-model rebuild rate.

    .venv/bin/python scripts/compare_stores.py --hazards 3000
    .venv/bin/python scripts/compare_stores.py --hazards 3000 --pg postgresql://me@host/db

Without --pg a throwaway PostgreSQL server is started (tests/pgserver.py). Each store gets the
district built by `adapters.demo.build_district` (the engine's bulk path), then its read models
are rebuilt (rows deleted, caught up from zero) three times; the best is printed. Both stores
run in this one process, one after the other, so the machine's load is shared alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.bootstrap import Settings, build_engine, build_runner
from adapters.demo import AS_OF, build_district


@contextlib.contextmanager
def _server(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    from tests.pgserver import PostgresServer

    with PostgresServer() as pg:
        yield pg.create_database("compare")


def measure(location: str, hazards: int, repeat: int) -> dict[str, float]:
    started = time.perf_counter()
    build_district(location, hazards=hazards, seed=5)
    build = time.perf_counter() - started
    app = build_engine(Settings(db=location), clock=lambda: AS_OF)
    try:
        events = int(app.recorder.max_notification_id() or 0)
        runner = build_runner(app)
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            runner.rebuild()
            best = min(best, time.perf_counter() - started)
        runner.engine.dispose()
    finally:
        app.close()
    return {"events": events, "build_s": round(build, 2), "build_ev_s": round(events / build),
            "rebuild_s": round(best, 2), "rebuild_ev_s": round(events / best)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hazards", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", help="an empty PostgreSQL database's URL (default: throwaway)")
    args = parser.parse_args()
    os.environ.setdefault("HAZARDLOOP_CIPHER_KEY", "A" * 43 + "=")
    out: dict[str, object] = {"hazards": args.hazards, "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as folder, _server(args.pg) as url:
        out["sqlite"] = measure(str(Path(folder) / "compare.db"), args.hazards, args.repeat)
        out["postgres"] = measure(url, args.hazards, args.repeat)
    out["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
