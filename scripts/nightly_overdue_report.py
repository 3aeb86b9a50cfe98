#!/usr/bin/env python3
r"""Nightly overdue report, cron-ready: `--out DIR [--as-of DATE] [--escalate] [--db STORE]`.

Writes overdue-YYYY-MM-DD.{csv,xlsx,html,json} atomically; exit 0, or non-zero with one line.
A crontab line (01:30 every night, for the day before):

    30 1 * * * cd /srv/hazardloop && .venv/bin/python scripts/nightly_overdue_report.py \
        --as-of "$(date -d yesterday +\%F)" --out /srv/reports --escalate
"""

from __future__ import annotations

import sys

from adapters.nightly import main

if __name__ == "__main__":
    sys.exit(main())
