"""`hazardloop webhooks …` and `hazardloop feed`: subscribers, the delivery worker, the pull feed.

Machine output (JSON lines) on stdout, logs on stderr. Exit status: 0 done, 1 refused or not
found (or, for `run --once`, events left pending), 2 usage or store error.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from sqlalchemy import Engine

from adapters.bootstrap import Settings, build_engine, views_engine
from adapters.cli_options import DbOption
from adapters.feed import MAX_LIMIT, feed_head, read_feed
from adapters.logs import configure_logging
from adapters.store import parse_db
from adapters.tipsters import load_master_key
from loop.application import HazardLoop
from loop.errors import HazardLoopError

if TYPE_CHECKING:  # adapters.webhooks (httpx) is imported by the commands that use it
    from adapters.webhooks import SubscriberStore

__all__ = ["feed_cmd", "webhooks_app"]

webhooks_app = typer.Typer(
    help="Push webhooks: register subscribers, and run the worker that delivers to them.",
    no_args_is_help=True,
)


def _fail(exc: HazardLoopError, status: int = 2) -> typer.Exit:
    sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
    return typer.Exit(status)


def _engine(db: str | None, *, existing: bool = False) -> HazardLoop:
    try:
        return build_engine(Settings(db=db) if db else Settings(), existing=existing)
    except HazardLoopError as exc:
        raise _fail(exc) from None


def _open(db: str | None) -> tuple[HazardLoop, SubscriberStore]:
    from adapters.webhooks import SubscriberStore

    settings = Settings(db=db) if db else Settings()
    engine = _engine(db)
    tables: Engine | None = None
    try:
        tables = views_engine(engine)
        location = parse_db(settings.db)
        master = load_master_key(settings.cipher_key, location.file, settings.cipher_key_file)
        assert master is not None  # made when missing: webhooks may create the key
        store = SubscriberStore(tables, master)
    except HazardLoopError as exc:
        _close(engine, tables)
        raise _fail(exc) from None
    return engine, store


def _close(engine: HazardLoop, tables: Engine | None) -> None:
    if tables is not None:
        tables.dispose()
    engine.close()


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


@webhooks_app.command("add")
def add_cmd(
    url: Annotated[str, typer.Argument(help="Where to POST events: an http(s) URL.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", help="Only this event type, e.g. Hazard.Assigned (repeatable)."),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="Only this grid, or pattern like D01-S02* (repeatable)."),
    ] = None,
    major_only: Annotated[
        bool, typer.Option("--major-only", help="Only events of hazards graded major.")
    ] = False,
    secret: Annotated[
        str | None,
        typer.Option("--secret", help="Signing secret (default: a random one, printed once)."),
    ] = None,
    after: Annotated[
        int | None,
        typer.Option(
            "--after", min=0, help="Deliver events after this position (default: from now; 0: all)."
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Register a subscriber; print it with its secret (shown this once only)."""
    from adapters.webhooks import Filters

    engine, store = _open(db)
    try:
        filters = Filters.parse(event or (), grid or (), ("major",) if major_only else ())
        start = feed_head(engine) if after is None else after
        sub, the_secret = store.add(url, filters, after=start, secret=secret)
    except HazardLoopError as exc:
        raise _fail(exc) from None
    finally:
        _close(engine, store.engine)
    _print(sub.to_dict() | {"secret": the_secret})
    sys.stderr.write("keep the secret: it is needed to verify signatures and not shown again\n")


@webhooks_app.command("list")
def list_cmd(db: DbOption = None) -> None:
    """Print every subscriber (never its secret), its position and how far the log is ahead."""
    engine, store = _open(db)
    try:
        head = feed_head(engine)
        subscribers = store.list()
    except HazardLoopError as exc:
        raise _fail(exc) from None
    finally:
        _close(engine, store.engine)
    for sub in subscribers:
        _print(sub.to_dict() | {"behind": max(0, head - sub.position)})


def _by_id(action: Callable[[SubscriberStore, int], bool], name: str) -> Callable[..., None]:
    def command(
        subscriber_id: Annotated[int, typer.Argument(metavar="ID", help="The subscriber's id.")],
        db: DbOption = None,
    ) -> None:
        engine, store = _open(db)
        engine.close()
        try:
            found = action(store, subscriber_id)
        except HazardLoopError as exc:
            raise _fail(exc) from None
        finally:
            store.engine.dispose()
        if not found:
            sys.stderr.write(f"NotFound: not_found: no webhook subscriber {subscriber_id}\n")
            raise typer.Exit(1)
        _print({"id": subscriber_id, name: True})

    return command


webhooks_app.command("remove", help="Delete a subscriber for good (deliveries stop).")(
    _by_id(lambda store, i: store.remove(i), "removed")
)
webhooks_app.command("pause", help="Stop delivering to a subscriber; its position is kept.")(
    _by_id(lambda store, i: store.set_active(i, False), "paused")
)
webhooks_app.command("resume", help="Deliver to a paused subscriber again, from its position.")(
    _by_id(lambda store, i: store.set_active(i, True), "resumed")
)


def _install_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@webhooks_app.command("run")
def run_cmd(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is pending, then exit (tests, cron).")
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", min=0.01, help="Seconds between looks for new events.")
    ] = 1.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds allowed for each HTTP call.")
    ] = 10.0,
    backoff: Annotated[
        float,
        typer.Option(
            "--backoff", min=0.001, help="First retry delay in seconds; doubles per failure."
        ),
    ] = 1.0,
    backoff_max: Annotated[
        float, typer.Option("--backoff-max", min=0.001, help="Longest retry delay in seconds.")
    ] = 300.0,
    attempts: Annotated[
        int,
        typer.Option("--attempts", min=1, help="With --once: attempts per event before leaving."),
    ] = 3,
    db: DbOption = None,
) -> None:
    """Deliver events to every active subscriber, in order, until stopped (SIGTERM/SIGINT)."""
    from adapters.webhooks import DeliveryOptions, WorkerBusy, run_worker

    configure_logging()
    engine, store = _open(db)
    options = DeliveryOptions(
        poll=poll,
        timeout=timeout,
        backoff_base=backoff,
        backoff_max=max(backoff, backoff_max),
        once=once,
        once_attempts=attempts,
    )
    try:
        everything = run_worker(engine, store, options, install_signals=_install_signals)
    except WorkerBusy as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
        raise typer.Exit(1) from None
    except HazardLoopError as exc:
        raise _fail(exc) from None
    finally:
        _close(engine, store.engine)
    if not everything:
        sys.stderr.write("some subscribers still have events pending (see `webhooks list`)\n")
        raise typer.Exit(1)


def feed_cmd(
    after: Annotated[
        int, typer.Option("--after", min=0, help="Print the events after this position.")
    ] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many events.")] = 100,
    db: DbOption = None,
) -> None:
    """The pull feed: events after a position, in commit order, one JSON object per line."""
    engine = _engine(db, existing=True)
    try:
        left = limit
        while left > 0:
            items = read_feed(engine, after, min(left, MAX_LIMIT))
            if not items:
                break
            for item in items:
                _print(item)
            after = items[-1]["position"]
            left -= len(items)
    except HazardLoopError as exc:
        raise _fail(exc) from None
    finally:
        engine.close()
