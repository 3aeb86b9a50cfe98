"""The `hazardloop` command line: a thin shell over the engine built by the composition root.

Machine output (JSON) on stdout, logs and progress on stderr; rich tables only on a terminal.
Exit status: 0 all done, 1 something refused (or not found), 2 usage or store error.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from adapters.bootstrap import Settings, build_engine
from adapters.cli_options import DbOption
from adapters.logs import configure_logging, get_logger, log_result
from adapters.store import StoreLocation
from adapters.tipsters import is_confidential
from loop import commands as c
from loop.application import HazardLoop
from loop.errors import HazardLoopError, StoreError

__all__ = ["app", "main"]

app = typer.Typer(
    name="hazardloop",
    help="Event-sourced engine for the six-step closed loop of work-safety hazards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON even on a terminal.")]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _fail(exc: HazardLoopError, status: int) -> typer.Exit:
    sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
    return typer.Exit(status)


def _engine(db: str | None, *, existing: bool = True) -> HazardLoop:
    """The engine over `db`; unless `existing` is False (a command that writes), the store must
    already exist: a read never creates one."""
    try:
        return build_engine(Settings(db=db) if db else Settings(), existing=existing)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=_default).decode()


def _default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


# ------------------------------------------------------------------ apply


def _read_commands(
    stream: IO[bytes], lines: deque[int], progress: Any | None
) -> Iterator[c.CommandBase | HazardLoopError]:
    for number, raw in enumerate(stream, start=1):
        if progress is not None:
            progress(len(raw))
        if not raw.strip():
            continue
        lines.append(number)
        try:
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield c.parse_command_json(raw)
        except HazardLoopError as exc:
            try:
                data = orjson.loads(raw)
                if isinstance(data, dict) and isinstance(data.get("hazard_id"), str):
                    exc.details.setdefault("hazard_id", data["hazard_id"])
            except orjson.JSONDecodeError:
                pass
            yield exc


@app.command("apply")
def apply_cmd(
    file: Annotated[str, typer.Argument(help="JSON Lines of commands, or - for stdin.")],
    db: DbOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Commands per transaction.")
    ] = 500,
    writer: Annotated[
        bool,
        typer.Option(
            "--writer/--no-writer",
            help="With a file on a SQLite store, store each batch in a writer process while "
            "the next is decided (the same results and stored events; faster on a large "
            "file). Not used for stdin.",
        ),
    ] = True,
) -> None:
    """Apply commands (one JSON object per line); print one JSON result per line."""
    configure_logging()
    log = get_logger()
    if file == "-":
        stream: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        path = Path(file)
        try:
            stream = path.open("rb")
        except OSError as exc:
            sys.stderr.write(f"UsageError: cannot read {file}: {exc.strerror}\n")
            raise typer.Exit(EXIT_USAGE) from None
        total = path.stat().st_size
    from adapters.bulk_writer import BulkWriter

    engine = _engine(db, existing=False)
    lines: deque[int] = deque()
    refused = 0
    out = sys.stdout
    show_progress = sys.stderr.isatty() and total is not None
    progress_ctx: Any = None
    advance = None
    if show_progress:
        from rich.progress import BarColumn, Progress, TransferSpeedColumn

        progress_ctx = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            "{task.percentage:>3.0f}%",
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task = progress_ctx.add_task("applying", total=total)

        def advance(n: int) -> None:
            progress_ctx.advance(task, n)

        progress_ctx.start()
    try:
        commands = _read_commands(stream, lines, advance)
        # From stdin (a stream that may trickle) each batch's results are printed as soon as
        # it is stored: a writer would hold them back until the next batch is read.
        factory = BulkWriter.factory(engine) if writer and file != "-" else None
        for result in engine.handle_many(commands, batch_size=batch_size, writer=factory):
            line = lines.popleft()
            out.write(_dumps(result.to_dict(line=line)) + "\n")
            log_result(log, result, line)
            if not result.ok:
                refused += 1
                if isinstance(result.error, StoreError):
                    out.flush()
                    raise _fail(result.error, EXIT_USAGE)
    finally:
        if progress_ctx is not None:
            progress_ctx.stop()
        if file != "-":
            stream.close()
        out.flush()
    raise typer.Exit(EXIT_REFUSED if refused else EXIT_OK)


# ------------------------------------------------------------- show, history


def _jsonable_state(
    engine: HazardLoop,
    hazard_id: str,
    as_of: datetime | None = None,
    known_at: datetime | int | None = None,
) -> dict[str, Any]:
    from adapters.timetravel import hazard_at

    if as_of is None and known_at is None:
        hazard = engine.get_hazard(hazard_id)
    else:
        hazard = hazard_at(engine, hazard_id, as_of=as_of, known_at=known_at)
    state: dict[str, Any] = orjson.loads(_dumps(hazard.to_state()))
    return state


AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="As it had happened by then (business time): date or RFC 3339."),
]
KnownAtOption = Annotated[
    str | None,
    typer.Option(
        "--known-at",
        help="As the engine knew it then: a record time (date or RFC 3339), or a printed "
        "chain head COUNT:HASH (the first COUNT events).",
    ),
]


def _parse_known(text: str | None, engine: HazardLoop) -> datetime | int | None:
    """--known-at: a printed chain head `COUNT:HASH` (checked against this store: the log
    position COUNT), else a record time as `_parse_moment` reads it."""
    from adapters.audit import is_head_text, parse_head
    from adapters.timetravel import position_of_head

    if text is None:
        return None
    if not is_head_text(text):
        return _parse_moment(text, engine, "--known-at")
    try:
        return position_of_head(engine, parse_head(text))
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None


@app.command("show")
def show_cmd(
    hazard_id: Annotated[str, typer.Argument(help="The hazard's id.")],
    db: DbOption = None,
    json: JsonOption = False,
    as_of: AsOfOption = None,
    known_at: KnownAtOption = None,
    reveal: RevealOption = False,
) -> None:
    """Show a hazard's state (now, as of a past moment, or as known then): status, step, due…"""
    engine = _engine(db)
    as_of_moment = _parse_moment(as_of, engine, "--as-of") if as_of is not None else None
    known_moment = _parse_known(known_at, engine)
    try:
        state = _jsonable_state(engine, hazard_id, as_of_moment, known_moment)
        if is_confidential(state):
            state["reporter"] = _reporter(engine, hazard_id, state, reveal)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE if isinstance(exc, StoreError) else EXIT_REFUSED) from None
    if json or not sys.stdout.isatty():
        sys.stdout.write(_dumps(state) + "\n")
        return
    console = Console()
    table = Table(title=f"hazard {hazard_id}", show_header=False)
    for key in (
        "status", "step", "holder", "due", "grade", "category", "grid", "title", "unit",
        "person", "rework_count", "extension_count", "reopen_count", "version",
    ):  # fmt: skip
        table.add_row(key, "" if state.get(key) is None else str(state[key]))
    console.print(table)
    deadlines = Table(title="deadlines decided")
    columns = ("decided_at", "event", "step", "due", "limit", "provisional", "policy_version")
    for col in columns:
        deadlines.add_column(col)
    for d in state["deadlines"]:
        deadlines.add_row(*(str(d.get(k, "")) for k in columns))
    console.print(deadlines)


def _reporter(engine: HazardLoop, hazard_id: str, fields: dict[str, Any], reveal: bool) -> str:
    """A confidential reporter (`is_confidential`) as shown: the name only with
    --reveal-tipster, and that reveal logged (without the name), as the API logs it."""
    from adapters.tipsters import shown_reporter

    shown = shown_reporter(
        engine.vault,
        hazard_id,
        fields["reporter"],
        sealed=bool(fields.get("reporter_sealed")),
        reveal=reveal,
    )
    if reveal:
        get_logger().info("tipster revealed", hazard_id=hazard_id, actor=None)
    return shown


RevealOption = Annotated[
    bool,
    typer.Option("--reveal-tipster", help="Show a public tip's confidential reporter."),
]


@app.command("history")
def history_cmd(
    hazard_id: Annotated[str, typer.Argument(help="The hazard's id.")],
    db: DbOption = None,
    json: JsonOption = False,
    known_at: KnownAtOption = None,
    reveal: RevealOption = False,
) -> None:
    """Every event of a hazard: business and record time, actor, deadlines, log position, hash."""
    from adapters.timetravel import case_chain, event_record, is_known

    engine = _engine(db)
    known_moment = _parse_known(known_at, engine)
    try:
        chain = {entry.version: entry for entry in case_chain(engine, hazard_id)}
        events = []
        source = engine.get_hazard(hazard_id).source
        for event in engine.history(hazard_id):
            record = event_record(event)
            payload = record["payload"]
            if "reporter" in payload and is_confidential(payload, source):
                payload["reporter"] = _reporter(engine, hazard_id, payload, reveal)
            entry = chain.get(record["version"])
            if entry is not None:
                if known_moment is not None and not is_known(entry, known_moment):
                    continue
                record["position"] = entry.position
                record["stored_at"] = entry.recorded_at
                record["log_hash"] = entry.log_hash.hex()
            events.append(record)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE if isinstance(exc, StoreError) else EXIT_REFUSED) from None
    if json or not sys.stdout.isatty():
        for e in events:
            sys.stdout.write(_dumps(e) + "\n")
        return
    table = Table(title=f"history of {hazard_id}")
    for col in ("v", "pos", "event", "at (business)", "recorded", "actor", "details"):
        table.add_column(col)
    for e in events:
        details = ", ".join(
            f"{k}={_short(v)}" for k, v in e["payload"].items() if v not in (None, [], "")
        )
        table.add_row(
            str(e["version"]),
            str(e.get("position", "")),
            e["event"],
            _fmt_time(e["at"]),
            _fmt_time(e["recorded_at"]),
            e["actor"],
            details,
        )
    Console().print(table)


def _short(value: Any) -> str:
    if isinstance(value, dict) and "due" in value:
        return f"due {_fmt_time(value['due'])} ({value.get('limit')})"
    if isinstance(value, datetime):
        return _fmt_time(value)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _fmt_time(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


# ------------------------------------------------------------------ demo


@app.command("demo")
def demo_cmd(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="Where to build the demo: a SQLite file, or an empty PostgreSQL database's URL.",
        ),
    ] = "demo.db",
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete the SQLite file first (never a database).")
    ] = False,
    hazards: Annotated[int, typer.Option("--hazards", min=10, max=100_000)] = 400,
    seed: Annotated[int, typer.Option("--seed")] = 2026,
) -> None:
    """Build a realistic district deterministically, then show what the engine knows."""
    from adapters import demo
    from adapters.store import parse_db

    configure_logging("warning")
    try:
        location = parse_db(db)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None
    if location.pg is not None:
        if fresh:
            sys.stderr.write(
                "UsageError: --fresh deletes a SQLite file; for PostgreSQL, give the URL of an "
                "empty database (the demo never deletes a database's data)\n"
            )
            raise typer.Exit(EXIT_USAGE)
        if _holds_events(location):
            sys.stderr.write(
                f"UsageError: {location.display} already holds events; give the URL of an "
                "empty database\n"
            )
            raise typer.Exit(EXIT_USAGE)
        store, folder = db, Path("demo-reports")
    else:
        path = location.path
        if fresh:
            for suffix in ("", "-wal", "-shm", ".key"):  # .key: its tipster master key
                Path(str(path) + suffix).unlink(missing_ok=True)
        elif path.exists():
            sys.stderr.write(f"UsageError: {path} exists; pass --fresh to rebuild it\n")
            raise typer.Exit(EXIT_USAGE)
        store, folder = str(path), path.parent / "demo-reports"
    started = time.perf_counter()
    try:
        summary = demo.build_district(db=store, hazards=hazards, seed=seed)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None
    summary["seconds"] = round(time.perf_counter() - started, 2)
    console = Console()
    demo.print_summary(summary, console)
    _demo_reports(store, folder, console)


def _holds_events(location: StoreLocation) -> bool:
    """Whether a PostgreSQL database already holds an event store with events in it."""
    import psycopg

    try:
        with psycopg.connect(**location.psycopg_kwargs()) as conn:
            found = conn.execute("SELECT to_regclass('stored_events') IS NOT NULL").fetchone()
            if not (found and found[0]):
                return False
            return conn.execute("SELECT EXISTS (SELECT 1 FROM stored_events)").fetchone() == (True,)
    except psycopg.Error as exc:
        raise _fail(StoreError(f"cannot open {location.display}: {exc}"), EXIT_USAGE) from None


def _demo_reports(store: str, folder: Path, console: Console) -> None:
    """End the demo with its reports: overdue as of the demo's clock, and the quarter it played
    (as rich tables), both also as HTML files in `folder` (demo-reports/ beside a SQLite store,
    in the current folder for PostgreSQL)."""
    from adapters import demo, reports
    from adapters.bootstrap import build_runner
    from adapters.nightly import write_atomically
    from projections.reports import accountability_report, overdue_report, parse_period

    first = demo.QUARTER[0]
    quarter = parse_period(f"{first.year}-Q{(first.month - 1) // 3 + 1}")
    engine = build_engine(Settings(db=store), clock=lambda: demo.AS_OF)
    try:
        runner = build_runner(engine)
        runner.catch_up()
        with runner.engine.connect() as conn:
            overdue = overdue_report(conn, demo.AS_OF, engine.policy, engine.calendar)
            accountability = accountability_report(
                conn, quarter, demo.AS_OF, engine.policy, engine.calendar
            )
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None
    finally:
        engine.close()
    console.print()
    reports.print_overdue(overdue, console, "zh", limit=15)
    console.print()
    reports.print_accountability(accountability, console, "zh", dimensions=("unit",))
    files = [
        (folder / f"overdue-{overdue.as_of.date().isoformat()}.html",
         reports.render_overdue(overdue, "html")),
        (folder / f"accountability-{quarter.label}.html",
         reports.render_accountability(accountability, "html")),
    ]  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file, data in files:
            write_atomically(file, data)
    except OSError as exc:
        sys.stderr.write(f"UsageError: cannot write the demo reports in {folder}: {exc}\n")
        raise typer.Exit(EXIT_USAGE) from None
    console.print("[bold]Reports[/bold] (open in a browser, or print):")
    for file, _ in files:
        console.print(f"  {file}", markup=False, highlight=False)


# ------------------------------------------------------------ projections

projections_app = typer.Typer(
    help="Read models: lag, catch-up, a worker that follows the log, rebuild.",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")


def _runner(db: str | None) -> tuple[HazardLoop, Any]:
    from adapters.bootstrap import build_runner

    engine = _engine(db)
    try:
        return engine, build_runner(engine)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None


@projections_app.command("status")
def projections_status(db: DbOption = None, json: JsonOption = False) -> None:
    """Each projection's position and lag behind the event log."""
    _, runner = _runner(db)
    rows = [{"name": r.name, "position": r.position, "head": r.head, "lag": r.lag}
            for r in runner.status()]  # fmt: skip
    if json or not sys.stdout.isatty():
        sys.stdout.write(_dumps(rows) + "\n")
        return
    table = Table(title="projections")
    for col in ("name", "position", "head", "lag"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("name", "position", "head", "lag")))
    Console().print(table)


@projections_app.command("catch-up")
def projections_catch_up(
    db: DbOption = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            min=1,
            max=1_000_000,
            help="Events per transaction (default: the runner's, 100,000; for a rebuild "
            "over a long log, HAZARDLOOP_REBUILD_CHUNK_SIZE, 500,000).",
        ),
    ] = None,
) -> None:
    """Follow every event not yet projected."""
    configure_logging()
    _, runner = _runner(db)
    if chunk_size is not None:
        runner.chunk_size = runner.rebuild_chunk_size = chunk_size
    started = time.perf_counter()
    n = runner.catch_up()
    get_logger().info("caught up", events=n, seconds=round(time.perf_counter() - started, 3))
    sys.stdout.write(_dumps({"events": n, "status": [r.__dict__ for r in runner.status()]}) + "\n")


@projections_app.command("run")
def projections_run(
    db: DbOption = None,
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.01, max=3600.0,
                     help="Seconds to wait between polls when there is nothing new."),
    ] = 0.5,
    chunk_size: Annotated[
        int,
        typer.Option("--chunk-size", min=1, max=1_000_000,
                     help="Events per transaction (small: writers wait less for the lock)."),
    ] = 10_000,
) -> None:  # fmt: skip
    """Keep the read models following the event log until SIGTERM or SIGINT (then exit 0).

    Reconnects with back-off when the database goes away; a first signal finishes the chunk in
    progress, a second rolls it back.
    """
    from adapters.bootstrap import build_runner
    from projections.runner import StopRequest, is_connection_error

    configure_logging()
    log = get_logger("hazardloop.projections")
    stop = StopRequest()
    stop.install()
    runner, attempt = None, 0
    while runner is None and not stop.requested:  # the database may not be up yet
        try:
            runner = build_runner(build_engine(Settings(db=db) if db else Settings()))
        except HazardLoopError as exc:
            if not is_connection_error(exc):
                raise _fail(exc, EXIT_USAGE) from None
            attempt += 1
            log.warning("store unreachable, reconnecting", attempt=attempt, error=exc.message)
            stop.wait(min(5.0, 0.1 * 2 ** min(attempt, 16)))
    if runner is None:
        return
    runner.chunk_size = chunk_size
    n = runner.run(interval=interval, stop=stop, log=log)
    sys.stdout.write(_dumps({"events": n, "positions": runner.committed}) + "\n")


@projections_app.command("rebuild")
def projections_rebuild(
    db: DbOption = None,
    name: Annotated[list[str] | None, typer.Option("--name", help="Only this projection.")] = None,
) -> None:
    """Drop the read models and rebuild them from the first event."""
    configure_logging()
    _, runner = _runner(db)
    started = time.perf_counter()
    n = runner.rebuild(name or None)
    seconds = round(time.perf_counter() - started, 3)
    get_logger().info("rebuilt", events=n, seconds=seconds)
    sys.stdout.write(_dumps({"events": n, "seconds": seconds}) + "\n")


# ---------------------------------------------------------------- reports

report_app = typer.Typer(help="Overdue and accountability reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")

FormatOption = Annotated[str, typer.Option("--format", help="table | json | csv | xlsx | html")]
LangOption = Annotated[str, typer.Option("--lang", help="zh (default) or en")]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Write the report file into this folder.")
]


def _parse_moment(text: str | None, engine: HazardLoop, option: str = "--as-of") -> datetime:
    """--as-of / --known-at: a date YYYY-MM-DD (its last second, local time) or an RFC 3339
    date-time; anything else (an empty text too) is a usage error in one line."""
    from adapters.nightly import parse_moment

    if text is None:
        return engine.clock()
    try:
        return parse_moment(text, engine.policy.tz, option)
    except HazardLoopError as exc:
        sys.stderr.write(f"UsageError: {exc.message}\n")
        raise typer.Exit(EXIT_USAGE) from None


def _emit(data: bytes, fmt: str, out: Path | None, filename: str) -> None:
    from adapters.nightly import write_atomically

    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = out / filename
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)  # a temporary file, removed if anything fails
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _fail(
            StoreError(f"cannot write {path}: {reason}", path=str(path)), EXIT_USAGE
        ) from None
    sys.stderr.write(f"wrote {path}\n")


def _check_format(fmt: str, lang: str) -> str:
    from adapters.reports import FORMATS

    if fmt not in FORMATS:
        sys.stderr.write(f"UsageError: --format must be one of {', '.join(FORMATS)}\n")
        raise typer.Exit(EXIT_USAGE)
    if lang not in ("zh", "en"):
        sys.stderr.write("UsageError: --lang must be zh or en\n")
        raise typer.Exit(EXIT_USAGE)
    return fmt


KnownAtReportOption = Annotated[
    str | None,
    typer.Option(
        "--known-at",
        help="Exactly as the report run then: only events recorded by then (date or RFC 3339), "
        "or only the first COUNT events of a printed chain head COUNT:HASH.",
    ),
]
DiffOption = Annotated[
    bool,
    typer.Option("--diff", help="With --known-at: JSON of what changed since (then vs now)."),
]


@contextlib.contextmanager
def _views(engine: HazardLoop, runner: Any, known_at: datetime | int | None) -> Iterator[Any]:
    """A connection on the read models to report from, and the log position they reflect: the
    store's, caught up, in one snapshot; or a scratch copy as known then (a record time or a
    log position)."""
    from adapters.timetravel import current_views, views_known_at

    if known_at is None:
        with current_views(runner) as found:
            yield found
        return
    with views_known_at(engine, known_at) as (views, position), views.connect() as conn:
        yield conn, position


def _report_moments(
    as_of: str | None, known_at: str | None, engine: HazardLoop
) -> tuple[datetime | int | None, datetime]:
    """A report's --known-at (a record time, or a chain head's position) and its moment
    (`adapters.timetravel.report_moment`)."""
    from adapters.timetravel import report_moment

    known = _parse_known(known_at, engine)
    moment = _parse_moment(as_of, engine) if as_of is not None else None
    return known, report_moment(engine, moment, known)


def _check_diff(diff: bool, known: datetime | int | None) -> None:
    if diff and known is None:
        sys.stderr.write("UsageError: --diff compares with --known-at: give both\n")
        raise typer.Exit(EXIT_USAGE)


def _report(
    kind: str,
    engine: HazardLoop,
    runner: Any,
    moment: datetime,
    known_at: datetime | int | None,
    period: Any = None,
) -> Any:
    from adapters.audit import printed_head
    from adapters.store import location_of
    from projections.reports import accountability_report, overdue_report

    with _views(engine, runner, known_at) as (conn, position):
        head = printed_head(location_of(engine), position)
        if kind == "overdue":
            return overdue_report(conn, moment, engine.policy, engine.calendar, chain_head=head)
        return accountability_report(
            conn, period, moment, engine.policy, engine.calendar, chain_head=head
        )


def _warn_estimated(report: Any) -> None:
    """One line on stderr (and a log warning) when working days were counted past the calendar:
    a guessed count is not a failure (exit 0), but never silent."""
    from adapters.nightly import estimate_warning

    first = report.estimated_from
    if first is None:
        return
    sys.stderr.write(f"warning: {estimate_warning(first)}\n")
    sys.stderr.flush()
    get_logger().warning("working days estimated past the calendar", estimated_from=str(first))


def _diff(then: Any, now: Any, key: Any) -> dict[str, Any]:
    """Rows only in the report as known then, only in the report as known now, and changed."""
    import dataclasses

    old = {key(r): dataclasses.asdict(r) for r in then.rows}
    new = {key(r): dataclasses.asdict(r) for r in now.rows}
    changed = [
        {"key": list(k), "then": old[k], "now": new[k],
         "fields": sorted(f for f in old[k] if old[k][f] != new[k][f])}
        for k in sorted(old.keys() & new.keys()) if old[k] != new[k]
    ]  # fmt: skip
    return {
        "as_of": then.as_of,
        "known_then": then.chain_head,
        "known_now": now.chain_head,
        "only_then": [old[k] for k in sorted(old.keys() - new.keys())],
        "only_now": [new[k] for k in sorted(new.keys() - old.keys())],
        "changed": changed,
    }


@report_app.command("overdue")
def report_overdue(
    db: DbOption = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Date or date-time.")] = None,
    fmt: FormatOption = "table",
    out: OutOption = None,
    lang: LangOption = "zh",
    known_at: KnownAtReportOption = None,
    diff: DiffOption = False,
) -> None:
    """Every open, unparked step past its deadline, as of a moment (default now)."""
    from adapters import reports

    _check_format(fmt, lang)
    engine, runner = _runner(db)
    known, moment = _report_moments(as_of, known_at, engine)
    _check_diff(diff, known)
    report = _report("overdue", engine, runner, moment, known)
    _warn_estimated(report)
    if diff:
        now = _report("overdue", engine, runner, moment, None)
        sys.stdout.write(_dumps(_diff(report, now, lambda r: (r.hazard_id, r.step))) + "\n")
        return
    if fmt == "table" and out is None and sys.stdout.isatty():
        reports.print_overdue(report, Console(), lang)
        return
    day = report.as_of.date().isoformat()
    _emit(reports.render_overdue(report, fmt, lang), fmt, out, f"overdue-{day}.{_ext(fmt)}")


@report_app.command("accountability")
def report_accountability(
    period: Annotated[str, typer.Option("--period", help="2026-09, 2026-Q3, 2026-H2 or 2026")],
    db: DbOption = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Date or date-time.")] = None,
    fmt: FormatOption = "table",
    out: OutOption = None,
    lang: LangOption = "zh",
    known_at: KnownAtReportOption = None,
    diff: DiffOption = False,
) -> None:
    """Per unit, person and grid over a period: due, handled, on time, late, the indicators."""
    from adapters import reports
    from projections.reports import parse_period

    _check_format(fmt, lang)
    try:
        chosen = parse_period(period)
    except HazardLoopError as exc:
        raise _fail(exc, EXIT_USAGE) from None
    engine, runner = _runner(db)
    known, moment = _report_moments(as_of, known_at, engine)
    _check_diff(diff, known)
    report = _report("accountability", engine, runner, moment, known, chosen)
    _warn_estimated(report)
    if diff:
        now = _report("accountability", engine, runner, moment, None, chosen)
        key = lambda r: (r.dimension, r.key)  # noqa: E731
        sys.stdout.write(_dumps(_diff(report, now, key)) + "\n")
        return
    if fmt == "table" and out is None and sys.stdout.isatty():
        reports.print_accountability(report, Console(), lang)
        return
    name = f"accountability-{chosen.label}.{_ext(fmt)}"
    _emit(reports.render_accountability(report, fmt, lang), fmt, out, name)


def _ext(fmt: str) -> str:
    return "txt" if fmt == "table" else fmt


@app.command("nightly")
def nightly_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the report files.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="YYYY-MM-DD (default today).")
    ] = None,
    db: DbOption = None,
    escalate: Annotated[bool, typer.Option("--escalate", help="Record escalation steps.")] = False,
    lang: LangOption = "zh",
) -> None:
    """The nightly overdue report (cron-ready): four files, atomically; optional escalation."""
    from adapters.nightly import main as nightly_main

    args = ["--out", str(out)]
    if as_of is not None:  # an empty --as-of is an error, not today
        args += ["--as-of", as_of]
    if db:
        args += ["--db", db]
    if escalate:
        args.append("--escalate")
    args += ["--lang", lang]
    raise typer.Exit(nightly_main(args))


# ------------------------------------------------------------------ audit

from adapters.audit_cli import audit_app, dossier_cmd, tipster_app  # noqa: E402
from adapters.webhooks_cli import feed_cmd, webhooks_app  # noqa: E402

app.add_typer(audit_app, name="audit")
app.add_typer(tipster_app, name="tipster")
app.command("dossier")(dossier_cmd)
app.add_typer(webhooks_app, name="webhooks")
app.command("feed")(feed_cmd)

from adapters.http_cli import serve_cmd, tokens_app  # noqa: E402

app.add_typer(tokens_app, name="tokens")
app.command("serve")(serve_cmd)

from adapters.db_cli import db_app  # noqa: E402

app.add_typer(db_app, name="db")


def main() -> None:
    """Entry point of the `hazardloop` console script.

    A database error no command turned into one of ours (a right the database role lacks, a
    server that refuses a statement) is a store error too: one line and exit status 2, not a
    traceback."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import DBAPIError

    try:
        app()
    except (DBAPIError, psycopg.Error, sqlite3.Error) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        text = " ".join(str(cause).split()) or type(cause).__name__
        sys.stderr.write(f"StoreError: store_error: {type(cause).__name__}: {text}\n")
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
