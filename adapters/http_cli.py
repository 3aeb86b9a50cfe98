"""`hazardloop serve` (the HTTP API) and `hazardloop tokens create|list|revoke` (its API tokens).

Exit status: 0 done; 1 `tokens revoke` of an id no live token has; 2 usage or store error.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import orjson
import typer

from adapters.bootstrap import Settings
from adapters.cli_options import DbOption
from adapters.logs import configure_logging, get_logger
from adapters.store import parse_db
from adapters.storesql import store_engine
from adapters.tokens import TokenStore
from loop.authorization import ROLES
from loop.errors import HazardLoopError, StoreError

__all__ = ["serve_cmd", "tokens_app"]


def _fail(exc: HazardLoopError) -> typer.Exit:
    sys.stderr.write(f"{type(exc).__name__}: {exc.code}: {exc.message}\n")
    return typer.Exit(2)


def _settings(db: str | None) -> Settings:
    return Settings(db=db) if db else Settings()


def serve_cmd(
    db: DbOption = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI document at /openapi.json) until stopped (Ctrl-C, SIGTERM)."""
    import uvicorn

    from adapters.http import create_app

    configure_logging()
    try:
        api = create_app(_settings(db))
    except HazardLoopError as exc:
        raise _fail(exc) from None
    log = get_logger()
    log.info("serving", host=host, port=port)
    # uvicorn stops gracefully on SIGTERM or Ctrl-C, then raises the signal again to the handler
    # it found: ours notes it, so a requested stop closes the store and exits with status 0.
    stops: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: stops.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        api.state.engine.close()
    log.info("stopped", signals=[signal.Signals(n).name for n in stops])


tokens_app = typer.Typer(
    help="API tokens: each names an actor, roles, a grid scope and a unit. Stored hashed.",
    no_args_is_help=True,
)


@contextmanager
def _tokens(db: str | None) -> Iterator[TokenStore]:
    try:
        engine = store_engine(parse_db(_settings(db).db))
    except HazardLoopError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(StoreError(f"cannot create the store's folder: {exc}")) from None
    try:
        yield TokenStore(engine)
    except HazardLoopError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()


@tokens_app.command("create")
def tokens_create(
    actor: Annotated[str, typer.Option("--actor", help="Who the token acts as (on events).")],
    role: Annotated[
        list[str], typer.Option("--role", help=f"A role (repeatable): {', '.join(ROLES)}.")
    ],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="Grid scope (repeatable): a code, PREFIX* or *."),
    ] = None,
    unit: Annotated[str | None, typer.Option("--unit", help="The unit's code (role unit).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note: who holds it.")] = None,
    token_only: Annotated[
        bool, typer.Option("--token-only", help="Print only the token (for scripts).")
    ] = False,
    db: DbOption = None,
) -> None:
    """Issue a token; print it once (it is stored only hashed) with its id and scope as JSON."""
    with _tokens(db) as store:
        info, token = store.create(actor, role, grid or (), unit, label)
    if token_only:
        sys.stdout.write(token + "\n")
    else:
        sys.stdout.write(orjson.dumps({**info.to_dict(), "token": token}).decode() + "\n")
    if sys.stderr.isatty():
        sys.stderr.write("Keep the token now: it cannot be shown again.\n")


@tokens_app.command("list")
def tokens_list(
    db: DbOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Revoked tokens too.")] = False,
) -> None:
    """The tokens issued, one JSON object a line (ids and scopes, never the tokens)."""
    with _tokens(db) as store:
        infos = store.list(include_revoked=all_)
    for info in infos:
        sys.stdout.write(orjson.dumps(info.to_dict()).decode() + "\n")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), from `tokens list`.")],
    db: DbOption = None,
) -> None:
    """Revoke a token at once: requests bearing it are refused (401) from now on."""
    with _tokens(db) as store:
        revoked = store.revoke(token_id)
    sys.stdout.write(orjson.dumps({"id": token_id, "revoked": revoked}).decode() + "\n")
    if not revoked:
        sys.stderr.write(f"TokenNotFound: no live token has the id {token_id!r}\n")
        raise typer.Exit(1)
