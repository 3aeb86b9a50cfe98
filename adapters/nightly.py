"""The nightly overdue report: catch up, compute, write every format atomically, escalate once.

Unattended and idempotent: the same date gives byte-identical files; escalations are recorded at
most once per hazard, late step (with its deadline) and level; any failure is one clear line and
a non-zero exit status. A progress bar shows only when stderr is a terminal.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import sqlite3
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

from eventsourcing.persistence import PersistenceError
from sqlalchemy.exc import SQLAlchemyError

from adapters.bootstrap import build_runner
from adapters.reports import render_overdue
from adapters.store import location_of
from loop.application import HazardLoop
from loop.commands import Escalate
from loop.errors import HazardLoopError, InvalidCommand, StoreError
from projections.model import OverdueReport
from projections.reports import FIRST_YEAR, LAST_YEAR, overdue_report

__all__ = [
    "NightlyResult",
    "Progress",
    "end_of_day",
    "escalate_overdue",
    "estimate_warning",
    "parse_date",
    "parse_day",
    "parse_moment",
    "run_nightly",
    "write_atomically",
]

NIGHTLY_FORMATS = ("csv", "xlsx", "html", "json")

#: Told what a run is doing: (stage, done so far, total), e.g. ("writing", 2, 4).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class NightlyResult:
    """What a nightly run did."""

    as_of: datetime
    files: list[Path]
    overdue: int
    escalations: list[dict[str, Any]]
    caught_up: int
    chain_head: str | None = None
    #: The first day past the working-day calendar that a count took in (None: every count is
    #: on the calendar); those counts are estimates, marked provisional, never escalated.
    estimated_from: date | None = None


def end_of_day(day: date, app: HazardLoop) -> datetime:
    """The report moment of a date: its last second, local time."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=app.policy.tz)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`.

    The file gets the permissions an ordinary new file would (0666 less the umask), not the
    private 0600 of a temporary file: reports are meant to be read by others.
    """
    f, tmp = _temporary_beside(path)
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _temporary_beside(path: Path) -> tuple[BinaryIO, Path]:
    """A new temporary file in `path`'s folder (renamed over `path` once written), opened for
    writing, with an ordinary new file's permissions (0666 less the umask)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return os.fdopen(fd, "wb"), Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_nightly(
    app: HazardLoop,
    day: date,
    out: Path,
    *,
    escalate: bool = False,
    lang: str = "zh",
    actor: str = "nightly-overdue-report",
    progress: Progress | None = None,
) -> NightlyResult:
    """Write overdue-DAY.{csv,xlsx,html,json} into `out`; with `escalate`, record escalations."""
    tell: Progress = progress or (lambda stage, done, total: None)
    as_of = end_of_day(day, app)
    report, position, caught_up = _read_report(app, as_of, tell)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the output folder {out}: {exc.strerror}") from exc
    targets = [out / f"overdue-{day.isoformat()}.{fmt}" for fmt in NIGHTLY_FORMATS]
    for path in targets:
        if path.is_dir() or not os.access(out, os.W_OK):
            raise StoreError(f"cannot write {path}: not a writable file location")
    # Every file is rendered, and room for it reserved in a temporary file beside its target,
    # before anything is recorded: a report that cannot be rendered or written (a full disk, a
    # folder that refuses the files) records no escalation and leaves no file, new or partial.
    # The head of exactly the events the report was computed from (the read models' position,
    # read in the report's snapshot): `report overdue --as-of DAY --known-at HEAD` reproduces
    # these files byte for byte (docs/auditors-guide.md).
    rendered = dataclasses.replace(report, chain_head=_chain_head(app, position))
    data = _render_all(rendered, lang)
    reserved: list[_Reserved] = []
    escalations: list[dict[str, Any]] = []
    try:
        for path, blob in zip(targets, data, strict=True):
            reserved.append(_reserve(path, len(blob) + len(blob) // 50 + 4096))
        if escalate:
            tell("escalating", 0, 1)
            escalations = escalate_overdue(app, report, actor=actor)
            tell("escalating", 1, 1)
            if escalations:
                # Read again, so the report takes in what this run recorded, and so its head
                # pins everything the run saw and did: a second run for the same date (which
                # adds nothing) prints the same head and writes the same bytes.
                report, position, more = _read_report(app, as_of, tell)
                caught_up += more
                rendered = dataclasses.replace(report, chain_head=_chain_head(app, position))
                data = _render_all(rendered, lang)
        for i, (spot, blob) in enumerate(zip(reserved, data, strict=True)):
            tell("writing", i, len(NIGHTLY_FORMATS))
            spot.fill(blob)
        for spot in reserved:
            spot.rename()
    finally:
        for spot in reserved:
            spot.file.close()
            spot.tmp.unlink(missing_ok=True)  # gone already once renamed
    report = rendered
    files = list(targets)
    tell("writing", len(NIGHTLY_FORMATS), len(NIGHTLY_FORMATS))
    return NightlyResult(
        as_of,
        files,
        len(report.rows),
        escalations,
        caught_up,
        chain_head=report.chain_head,
        estimated_from=report.estimated_from,
    )


def _render_all(report: OverdueReport, lang: str) -> list[bytes]:
    """Every nightly format of the report, or an error naming the format that failed."""
    out = []
    for fmt in NIGHTLY_FORMATS:
        try:
            out.append(render_overdue(report, fmt, lang))
        except (ValueError, OverflowError, struct.error) as exc:
            raise HazardLoopError(f"cannot render the {fmt} report: {exc}", format=fmt) from exc
    return out


@dataclass
class _Reserved:
    """A temporary file beside its target, with room on disk for the target's bytes."""

    file: BinaryIO
    tmp: Path
    path: Path

    def fill(self, data: bytes) -> None:
        """Write the final bytes, cut the file to their size, flush it to disk."""
        try:
            self.file.seek(0)
            self.file.write(data)
            self.file.truncate(len(data))
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from exc

    def rename(self) -> None:
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from exc


def _reserve(path: Path, size: int) -> _Reserved:
    """A temporary file beside `path` with `size` bytes of disk reserved (the space the final
    file will take, with slack for a longer chain head), opened for writing."""
    try:
        file, tmp = _temporary_beside(path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
    spot = _Reserved(file, tmp, path)
    fd = file.fileno()
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            spot.file.write(bytes(size))  # a file system that cannot allocate: write the room
            spot.file.flush()
        os.fsync(fd)
    except OSError as exc:
        spot.file.close()
        spot.tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
    return spot


def _read_report(
    app: HazardLoop, as_of: datetime, tell: Progress
) -> tuple[OverdueReport, int, int]:
    """The overdue report from the store's read models, caught up; the log position they
    reflect; how many events the catch-up read."""
    from adapters.timetravel import current_views

    runner = None
    try:
        runner = build_runner(app)
        lag = max((r.lag for r in runner.status()), default=0)
        seen = 0

        def advance(n: int) -> None:
            nonlocal seen
            seen += n
            tell("catching up", seen, max(lag, seen))

        tell("catching up", 0, lag)
        with current_views(runner, advance) as (conn, position):
            report = overdue_report(conn, as_of, app.policy, app.calendar)
        return report, position, seen
    except (SQLAlchemyError, PersistenceError, sqlite3.Error) as exc:
        # The read models share the store's database: a SQLite file that is not a database (read
        # through the driver on the fast path) or a server that went away fails here.
        raise StoreError(f"cannot read the store: {type(exc).__name__}: {exc}") from exc
    finally:
        if runner is not None:
            runner.engine.dispose()  # its connections (a pool, on PostgreSQL) are not kept


def _chain_head(app: HazardLoop, position: int) -> str | None:
    """The event log's head COUNT:HASH after `position` events (see docs/audit.md); None for a
    store written before the hash chains, as the CLI's and the API's reports print it."""
    from adapters.audit import printed_head

    return printed_head(location_of(app), position)


def escalate_overdue(app: HazardLoop, report: OverdueReport, *, actor: str) -> list[dict[str, Any]]:
    """Record the policy's escalation steps for overdue cases, each once per late step and level.

    A row is escalated only while the case, as it stands now, is still at that step with that
    deadline and the deadline has passed: a report for a past date names steps the case may have
    left since (or whose deadline was extended), and those are not late any more.

    A row whose working days late took in days the calendar does not know (`estimated`: counted
    Monday–Friday) is not escalated, and is logged: a supervision letter never rests on a guess.
    """
    from adapters.logs import get_logger

    commands: list[Escalate] = []
    now = app.clock()
    for row in report.rows:
        due_levels = [
            r.level
            for r in app.policy.escalation
            if row.overdue_working_days >= r.after_working_days_late
        ]
        if not due_levels:
            continue
        if row.estimated:
            get_logger("nightly").warning(
                "not escalated: working days late are estimated past the calendar",
                hazard_id=row.hazard_id,
                step=row.step,
                due=row.due.isoformat(),
                overdue_working_days=row.overdue_working_days,
                levels=due_levels,
            )
            continue
        hazard = app.get_hazard(row.hazard_id)
        if hazard.step != row.step or hazard.due is None or hazard.due != row.due:
            continue  # the case moved on (or its deadline moved) since the report's moment
        if not hazard.due < now:
            continue  # not late any more: the report's moment lies before its deadline's end
        # Once per late step and level: a case late again at a later step (or at the same step
        # after a failed verification, with a new deadline) is escalated again.
        done = {
            e["level"]
            for e in hazard.escalations
            if e.get("step") == row.step and e.get("due") == row.due
        }
        for level in due_levels:
            if level in done:
                continue
            commands.append(
                Escalate(
                    hazard_id=row.hazard_id,
                    actor=actor,
                    level=level,  # type: ignore[arg-type]
                    note=f"{row.step} overdue since {row.due.date().isoformat()}",
                    idempotency_key=_escalation_key(row.hazard_id, row.step, row.due, level),
                )
            )
    recorded = []
    for result in app.handle_many(commands):
        if not result.ok:
            assert result.error is not None
            if isinstance(result.error, StoreError):
                raise result.error
            continue
        if not result.replayed:
            recorded.append({"hazard_id": result.hazard_id, "version": result.version})
    return recorded


def estimate_warning(first: date) -> str:
    """The one line telling an operator that a report's working days were guessed from `first`."""
    return (
        f"the working-day calendar does not know {first.isoformat()}: working days from then on "
        "are counted Monday–Friday and the counts that take them in are marked estimated; add "
        f"{first.year} to the calendar file named by HAZARDLOOP_CALENDAR (docs/time.md)"
    )


def _escalation_key(hazard_id: str, step: str, due: datetime, level: str) -> str:
    """The idempotency key of one escalation: per hazard, late step (its deadline) and level."""
    stamp = due.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return f"escalate:{hazard_id}:{step}:{stamp}:{level}"


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?",
    re.ASCII,
)


def parse_date(text: str, what: str = "date") -> date:
    """A date written YYYY-MM-DD in ASCII digits, in the years a report can be about.

    Not Python's wider ISO 8601 (`20261120`, `2026-W47-5`): a date means one thing everywhere.
    Raises InvalidCommand naming the text.
    """
    if not _DATE.fullmatch(text):
        raise InvalidCommand(f"bad {what} {text!r}: expected YYYY-MM-DD", date=text)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidCommand(f"bad {what} {text!r}: no such date", date=text) from None
    _check_year(day, text, what)
    return day


def parse_moment(text: str, tz: tzinfo, what: str = "date-time") -> datetime:
    """A date (its last second, local time) or an RFC 3339 date-time (local time when it has no
    offset); raises InvalidCommand naming the text."""
    if _DATE.fullmatch(text):
        return datetime.combine(parse_date(text, what), time(23, 59, 59), tzinfo=tz)
    if not _DATE_TIME.fullmatch(text):
        raise InvalidCommand(
            f"bad {what} {text!r}: use YYYY-MM-DD or an RFC 3339 date-time "
            "(2026-11-20T18:00:00+08:00)",
            date=text,
        )
    try:
        moment = datetime.fromisoformat(f"{text[:10]}T{text[11:]}".upper())
    except ValueError:
        raise InvalidCommand(f"bad {what} {text!r}: no such date-time", date=text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    # Its own year first: turning a moment at the edge of year 1 or 9999 into local time would
    # overflow (and the local year is the one that counts: 2099-12-31T20:00Z is 2100 in Beijing).
    _check_year(moment.date(), text, what)
    _check_year(moment.astimezone(tz).date(), text, what)
    return moment


def _check_year(day: date, text: str, what: str) -> None:
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidCommand(
            f"bad {what} {text!r}: the year must be from {FIRST_YEAR} to {LAST_YEAR}", date=text
        )


def parse_day(text: str | None, app: HazardLoop) -> date:
    """A report date: YYYY-MM-DD, or today in the policy's timezone (when `text` is None; an
    empty text is an error, not today)."""
    if text is None:
        return app.clock().astimezone(app.policy.tz).date()
    return parse_date(text)


def main(argv: list[str] | None = None) -> int:
    """`scripts/nightly_overdue_report.py`, `hazardloop nightly`: exit 0, or 1/2 with one line."""
    import argparse
    import sys

    from adapters.bootstrap import Settings, build_engine
    from adapters.logs import configure_logging, get_logger

    parser = argparse.ArgumentParser(
        prog="nightly_overdue_report",
        description="Write overdue-DATE.{csv,xlsx,html,json}; optionally record escalations.",
    )
    parser.add_argument("--as-of", help="report date YYYY-MM-DD (default: today, local time)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the report files")
    parser.add_argument("--db", help="store (default: $HAZARDLOOP_DB)")
    parser.add_argument("--escalate", action="store_true", help="record escalation steps")
    parser.add_argument("--lang", choices=("zh", "en"), default="zh")
    args = parser.parse_args(argv)
    configure_logging(json=True)
    log = get_logger("nightly")
    bar = _ProgressBar() if sys.stderr.isatty() else None
    app = None
    try:
        app = build_engine(Settings(db=args.db) if args.db else Settings(), existing=True)
        day = parse_day(args.as_of, app)
        if bar is not None:
            bar.start()
        result = run_nightly(
            app,
            day,
            args.out,
            escalate=args.escalate,
            lang=args.lang,
            progress=bar.tell if bar is not None else None,
        )
    except InvalidCommand as exc:
        sys.stderr.write(f"nightly_overdue_report: {exc.code}: {exc.message}\n")
        return 2
    except (HazardLoopError, OSError) as exc:
        message = exc.message if isinstance(exc, HazardLoopError) else str(exc)
        code = exc.code if isinstance(exc, HazardLoopError) else "os_error"
        sys.stderr.write(f"nightly_overdue_report: {code}: {message}\n")
        return 1
    finally:
        if bar is not None:
            bar.stop()
        if app is not None:
            app.close()
    if result.chain_head:
        sys.stdout.write(f"chain head {result.chain_head}\n")
        sys.stdout.flush()
    if result.estimated_from is not None:
        # A guessed count is not a failure (exit 0), but it is never silent.
        sys.stderr.write(
            f"nightly_overdue_report: warning: {estimate_warning(result.estimated_from)}\n"
        )
        log.warning(
            "working days estimated past the calendar",
            estimated_from=result.estimated_from.isoformat(),
        )
    log.info(
        "nightly overdue report",
        as_of=result.as_of.isoformat(),
        overdue=result.overdue,
        files=[str(f) for f in result.files],
        escalations=len(result.escalations),
        caught_up=result.caught_up,
        chain_head=result.chain_head,
    )
    return 0


class _ProgressBar:
    """A rich progress bar on stderr, for a person watching a run by hand."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=None)

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def tell(self, stage: str, done: int, total: int) -> None:
        self.progress.update(self.task, description=stage, completed=done, total=total)
