"""The HTTP API: FastAPI over the embedded engine, the same contract and results as `apply`.

Every request but `/healthz` and `/openapi.json` carries `Authorization: Bearer <token>`; the
token's principal is authorized by loop.authorization. Every error is `{"error": {"code",
"message", "details"}}` with the status of `STATUS` (docs/contract.md, "HTTP").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import orjson
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.audit import is_head_text
from adapters.bootstrap import Settings
from adapters.embed import EmbeddedEngine, open_engine
from adapters.logs import get_logger, log_result
from loop import commands as c
from loop.application import EXPECTED_VERSION_IS_FOR_HAZARDS, Clock, Result
from loop.authorization import Principal
from loop.errors import (
    CalendarError,
    ConcurrencyConflict,
    Forbidden,
    GridExists,
    HazardAlreadyExists,
    HazardLoopError,
    HazardNotFound,
    InvalidCommand,
    InvalidPolicy,
    MalformedJSON,
    PersonExists,
    RuleViolation,
    StoreError,
    Unauthorized,
    UnitExists,
    UnknownCommand,
    UnknownGrid,
    UnknownPerson,
    UnknownUnit,
)

__all__ = ["MAX_BATCH", "STATUS", "create_app", "error_body", "status_of"]

#: The most commands one request may carry.
MAX_BATCH = 1000

#: The HTTP status of each branch of the error tree (the most specific class listed wins).
STATUS: dict[type[HazardLoopError], int] = {
    InvalidCommand: 422,  # and MalformedJSON, UnknownCommand: the request is malformed
    HazardNotFound: 404,
    UnknownGrid: 404,
    UnknownUnit: 404,
    UnknownPerson: 404,
    HazardAlreadyExists: 409,
    GridExists: 409,
    UnitExists: 409,
    PersonExists: 409,
    RuleViolation: 409,  # every refusal by a rule of the loop
    ConcurrencyConflict: 409,  # another writer first, or If-Match names an older version
    Unauthorized: 401,
    Forbidden: 403,
    StoreError: 503,  # the store is locked, full or unreadable: try again later
    InvalidPolicy: 500,
    CalendarError: 500,
    HazardLoopError: 500,
}

#: HTTP-level codes for requests that reach no endpoint.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def status_of(error: HazardLoopError) -> int:
    """The HTTP status for an error of the tree."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500  # pragma: no cover - HazardLoopError is in the table


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def _error(exc: HazardLoopError) -> Response:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _json(error_body(exc.code, exc.message, exc.details), status, headers)


def _result(result: Result, line: int | None = None) -> dict[str, Any]:
    """A command's result as `apply` prints it (an error's `details` always present)."""
    out = result.to_dict(line=line)
    if "error" in out:
        out["error"].setdefault("details", {})
    return out


# ------------------------------------------------------------ OpenAPI models


class ErrorDetail(BaseModel):
    """An error: its stable code, a message for people, and details for machines."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorResponse(BaseModel):
    """Every error the API answers (a refused command's result has this `error` too)."""

    error: ErrorDetail


class SubjectOut(BaseModel):
    kind: Literal["hazard", "grid", "unit", "person"]
    id: str


class CommandResult(BaseModel):
    """One command's result, exactly as `hazardloop apply` prints it."""

    ok: bool
    line: int | None = Field(None, description="the command's position in a batch (from 1)")
    hazard_id: str | None = None
    subject: SubjectOut | None = None
    event: str | None = None
    version: int | None = None
    status: str | None = None
    # A string, not `date-time`: a deadline decided from an ancient `at` keeps its zone's local
    # mean time offset (+08:05:43), which RFC 3339 cannot spell; the contract allows such `at`.
    due: str | None = Field(None, description="RFC 3339 date-time of the step's deadline")
    replayed: bool | None = None
    error: ErrorDetail | None = None


class BatchResult(BaseModel):
    """A batch's results, in the order of its commands, and how many were refused."""

    results: list[CommandResult]
    refused: int


class LedgerPageOut(BaseModel):
    """A page of the ledger (隐患台账)."""

    items: list[dict[str, Any]]
    total: int
    page: int
    page_size: int
    next_page: int | None


class HistoryOut(BaseModel):
    hazard_id: str
    events: list[dict[str, Any]]


class HeadOut(BaseModel):
    head: str = Field(description="COUNT:HASH, the log hash after COUNT events")
    count: int


class FeedOut(BaseModel):
    events: list[dict[str, Any]]
    next_after: int
    head: int


class Health(BaseModel):
    ok: bool


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "no API token, or one unknown or revoked",
        403: "the token's roles or scope do not allow it",
        404: "no such hazard (or grid, unit, person)",
        409: "refused by a rule of the loop, or a concurrency conflict",
        422: "malformed: a bad field, parameter or header",
        503: "the store cannot be read or written now",
    }
    return {s: {"model": ErrorResponse, "description": described[s]} for s in statuses}


_READ = (401, 403, 422, 503)
_CASE = (401, 403, 404, 422, 503)

_MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
}


def _formats(*names: str) -> dict[int | str, dict[str, Any]]:
    content: dict[str, Any] = {}
    for name in names:
        media = _MEDIA[name].split(";")[0]
        if name == "json":
            content[media] = {"schema": {"type": "object"}}
        elif name == "xlsx":
            content[media] = {"schema": {"type": "string", "format": "binary"}}
        else:
            content[media] = {"schema": {"type": "string"}}
    return {200: {"description": "the report, in the format asked", "content": content}}


# ------------------------------------------------------------- parameters


def _moment(text: str | None, engine: EmbeddedEngine, name: str) -> datetime | None:
    """`as_of`/`known_at`: read as every command reads a moment (`adapters.nightly.parse_moment`:
    YYYY-MM-DD in ASCII digits, its last second local time, or an RFC 3339 date-time, no offset
    meaning local time; the years 1980–2099); a bad one is `invalid_command` naming the field."""
    from adapters.nightly import parse_moment

    if text is None:
        return None
    try:
        return parse_moment(text, engine.app.policy.tz, f"`{name}`")
    except InvalidCommand as exc:
        raise InvalidCommand(
            exc.message, fields=[{"field": name, "problem": exc.message}]
        ) from None


def _known(text: str | None, engine: EmbeddedEngine) -> datetime | str | None:
    """`known_at`: a printed chain head `COUNT:HASH`, passed on as it is (the engine checks it
    against the store: `EmbeddedEngine.resolve_known_at`), or a moment as `_moment` reads it."""
    if text is not None and is_head_text(text):
        return text
    return _moment(text, engine, "known_at")


def _if_match(value: str | None) -> int | None:
    """The version an `If-Match` header names: `3`, `"3"` or `W/"3"`."""
    if value is None:
        return None
    found = re.fullmatch(r'(?:W/)?"?([0-9]{1,9})"?', value)
    if not found:
        raise InvalidCommand(
            f'bad If-Match {value!r}: give the hazard\'s version, e.g. "3"',
            fields=[{"field": "If-Match", "problem": "expected a version number"}],
        )
    return int(found.group(1))


AsOf = Annotated[
    str | None,
    Query(description="as it had happened by then (business time): YYYY-MM-DD or RFC 3339"),
]
KnownAt = Annotated[
    str | None,
    Query(
        description="as the engine knew it then: a record time (YYYY-MM-DD or RFC 3339), or a "
        "printed chain head COUNT:HASH (the first COUNT events; 422 if not this store's)"
    ),
]
Lang = Annotated[Literal["zh", "en"], Query(description="language of a report for people")]

#: The scope key set by `RawHazardIds` when a /hazards/… path's id segment was left encoded.
RAW_ID = "hazardloop.raw_hazard_id"


class RawHazardIds:
    """ASGI middleware: the id segment of a `/hazards/{id}…` path is routed still
    percent-encoded, so an id holding `/` (sent as `%2F`, as any URL builder encodes a path
    segment) is one segment, and `/hazards/A%2Fhistory` is the case `A/history`, not the
    history of `A`. The server decodes the rest of the path as usual; `_hazard_id` decodes the
    id exactly once (`%252F` stays the three characters `%2F`)."""

    PREFIX = b"/hazards/"

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw: bytes = scope.get("raw_path") or b""
            root = str(scope.get("root_path", "")).encode("ascii", "ignore")
            if root and raw.startswith(root):
                raw = raw[len(root) :]
            if raw.startswith(self.PREFIX):
                head, _, rest = raw[len(self.PREFIX) :].partition(b"/")
                path = "/hazards/" + head.decode("ascii", "replace")
                if rest or raw.endswith(b"/"):
                    path += "/" + unquote(rest.decode("ascii", "replace"))
                scope = {**scope, "path": scope.get("root_path", "") + path, RAW_ID: True}
        await self.app(scope, receive, send)


def _hazard_id(
    request: Request,
    hazard_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=64 * 12,  # 64 characters, each up to 4 UTF-8 bytes as %XX
            description="the client's id of the hazard (1–64 characters), percent-encoded as "
            "a path segment: an id holding `/` is sent with `%2F`",
            examples=["JY-2026-0001"],
        ),
    ],
) -> str:
    try:
        value = unquote(hazard_id, errors="strict") if request.scope.get(RAW_ID) else hazard_id
    except UnicodeDecodeError:
        raise InvalidCommand("hazard_id is not percent-encoded UTF-8", field="hazard_id") from None
    if not 1 <= len(value) <= 64:
        raise InvalidCommand(
            f"hazard_id must be 1 to 64 characters, not {len(value)}", field="hazard_id"
        )
    return value


HazardId = Annotated[str, Depends(_hazard_id)]
StatusName = Literal[
    "discovered", "reported", "assigned", "rectified", "verified", "closed", "rejected", "parked"
]
StepName = Literal["report", "assign", "rectify", "verify", "close"]
Format = Annotated[Literal["json", "csv", "xlsx", "html"], Query()]

_BEARER = HTTPBearer(auto_error=False, description="an API token: `hazardloop tokens create`")


def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> Principal:
    engine: EmbeddedEngine = request.app.state.engine
    found = engine.authenticate(credentials.credentials if credentials else None)
    request.state.actor = found.actor
    return found


Caller = Annotated[Principal, Depends(_principal)]


def _known_query(request: Request) -> None:
    """Refuse query parameters the endpoint does not have: a typo must not widen a query."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = {param.alias for param in route.dependant.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidCommand(
            f"unknown query parameters: {', '.join(unknown)}"
            + (f"; this endpoint takes: {', '.join(sorted(known))}" if known else ""),
            fields=[{"field": name, "problem": "unknown parameter"} for name in unknown],
        )


_COMMAND_SCHEMA = TypeAdapter(c.Command).json_schema(ref_template="#/components/schemas/{model}")


def _command_body_schema() -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Command"}
    return {
        "required": True,
        "description": "one command of the contract (docs/contract.md), or a batch of them",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        ref,
                        {"type": "array", "items": ref, "minItems": 1, "maxItems": MAX_BATCH},
                    ]
                },
                "examples": _EXAMPLES,
            }
        },
    }


_FOUND = {
    "command": "discover",
    "hazard_id": "JY-2026-0002",
    "actor": "wang.grid",
    "grid": "D01-S02-C03",
    "category": "fire",
    "grade": "general",
    "title": "Fire exit blocked by goods",
}
_EXAMPLES = {
    "discover": {"summary": "a patrol finds a hazard", "value": _FOUND},
    "batch": {
        "summary": "a patrol upload: found and reported",
        "value": [
            {**_FOUND, "hazard_id": "JY-2026-0003"},
            {"command": "report", "hazard_id": "JY-2026-0003", "actor": "wang.grid"},
        ],
    },
}


# -------------------------------------------------------------------- app


def create_app(
    settings: Settings | None = None,
    *,
    engine: EmbeddedEngine | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The HTTP API over `engine`, or over an engine built from `settings`.

    The engine is `app.state.engine`; whoever created the app closes it when done serving.
    """
    hl = engine if engine is not None else open_engine(settings, clock=clock)
    log = get_logger("hazardloop.http")
    app = FastAPI(
        title="hazard-loop",
        version="1",
        summary="The six-step closed loop of work-safety hazards, over HTTP.",
        description="The command contract of docs/contract.md over HTTP; see "
        "docs/integration.md for authentication and examples.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_known_query)],
    )
    app.state.engine = hl
    app.add_middleware(RawHazardIds)

    # ------------------------------------------------------------ errors

    @app.exception_handler(HazardLoopError)
    async def _on_error(request: Request, exc: HazardLoopError) -> Response:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "problem": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        return _json(
            error_body("invalid_command", f"invalid request: {summary}", {"fields": fields}), 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return _json(error_body(code, str(exc.detail)), exc.status_code, headers)

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> Response:
        log.exception("request failed", method=request.method, path=request.url.path)
        return _json(error_body("internal_error", "the server failed; see its log"), 500)

    @app.middleware("http")
    async def _log_request(request: Request, call_next: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        log.info(
            "request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            actor=getattr(request.state, "actor", None),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    # ---------------------------------------------------------- commands

    def run_commands(
        raw: bytes, caller: Principal, key: str | None, if_match: str | None
    ) -> Response:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(MalformedJSON(f"the body is not valid JSON: {exc}"))
        expected = _if_match(if_match)
        if isinstance(data, list):
            if expected is not None:
                raise InvalidCommand("If-Match applies to one command, not a batch")
            if not 1 <= len(data) <= MAX_BATCH:
                raise InvalidCommand(f"a batch has from 1 to {MAX_BATCH} commands")
            items = [
                _prepare(
                    item,
                    caller,
                    c.batch_line_key(key, n) if key else None,
                    f"{key}#{n}" if key else None,  # the spelling before keys were per actor
                )
                for n, item in enumerate(data, start=1)
            ]
            malformed = [
                {"line": n, "error": error_body(e.code, e.message, e.details)["error"]}
                for n, e in enumerate(items, start=1)
                if isinstance(e, HazardLoopError)
            ]
            if malformed:  # shape is checked for the whole request before anything is applied
                raise InvalidCommand(
                    f"{len(malformed)} of the {len(items)} commands are malformed (the first: "
                    f"line {malformed[0]['line']}, {malformed[0]['error']['message']}); "
                    "nothing was applied",
                    lines=malformed[:100],
                )
            results = hl.handle_many(items, principal=caller)
            for n, result in enumerate(results, start=1):
                log_result(log, result, n)
            body = {
                "results": [_result(r, line=n) for n, r in enumerate(results, start=1)],
                "refused": sum(not r.ok for r in results),
            }
            return _json(body)
        item = _prepare(data, caller, key)
        if (
            expected is not None
            and isinstance(item, c.CommandBase)
            and not isinstance(item, c.HazardCommand)
        ):
            raise InvalidCommand(EXPECTED_VERSION_IS_FOR_HAZARDS)
        (result,) = hl.handle_many([item], principal=caller, expected_version=expected)
        log_result(log, result)
        if result.error is not None:
            status = status_of(result.error)
            return _json(_result(result), status)
        headers = {"ETag": f'"{result.version}"'} if result.is_hazard else None
        return _json(_result(result), headers=headers)

    @app.post(
        "/commands",
        tags=["commands"],
        summary="Apply one command, or a batch",
        description="The body is one command of the contract, or a JSON array of them. "
        "`actor` may be left out (it is the token's); another actor is refused (403). "
        "One command answers its result with the status of its error; a batch answers 200 "
        "with one result per command, in order.",
        openapi_extra={"requestBody": _command_body_schema()},
        responses={
            200: {
                "description": "the result (one command) or the results (a batch)",
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/CommandResult"},
                                {"$ref": "#/components/schemas/BatchResult"},
                            ]
                        }
                    }
                },
            },
            **_responses(401, 403, 404, 409, 422, 503),
        },
    )
    async def post_commands(
        request: Request,
        caller: Caller,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=120,
                pattern=r"^[\x21-\x7e]+$",
                description="the same key again, from the same actor, returns the first result "
                "and records nothing (a batch: `KEY #1`, `KEY #2`… per command)",
            ),
        ] = None,
        if_match: Annotated[
            str | None,
            Header(
                alias="If-Match",
                pattern=r'^(W/)?"?[0-9]{1,9}"?$',
                description='the hazard\'s version you expect (`3` or `"3"`); another answers 409',
            ),
        ] = None,
    ) -> Response:
        raw = await request.body()
        return await run_in_threadpool(run_commands, raw, caller, idempotency_key, if_match)

    # ------------------------------------------------------------- cases

    @app.get(
        "/hazards",
        tags=["cases"],
        summary="The ledger (隐患台账), filtered and paged",
        response_model=LedgerPageOut,
        responses=_responses(*_READ),
    )
    def list_hazards(
        caller: Caller,
        grid: Annotated[str | None, Query(max_length=64)] = None,
        status: Annotated[StatusName | None, Query()] = None,
        step: Annotated[StepName | None, Query()] = None,
        unit: Annotated[str | None, Query(max_length=64)] = None,
        grade: Annotated[Literal["general", "major"] | None, Query()] = None,
        overdue: Annotated[bool | None, Query(description="past the step's deadline now")] = None,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        found = hl.ledger(
            grid=grid,
            status=status,
            step=step,
            unit=unit,
            grade=grade,
            overdue=overdue,
            page=page,
            page_size=page_size,
            principal=caller,
        )
        return _json(found.to_dict())

    @app.get(
        "/hazards/{hazard_id}",
        tags=["cases"],
        summary="A hazard's state: now, as of a moment, or as known then",
        responses={
            200: {
                "description": "the case's state (what `hazardloop show` prints); "
                "ETag: its version",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **_responses(*_CASE),
        },
    )
    def get_hazard(
        hazard_id: HazardId,
        caller: Caller,
        as_of: AsOf = None,
        known_at: KnownAt = None,
        reveal_tipster: Annotated[
            bool, Query(description="show a public tip's reporter (role tipster_officer)")
        ] = False,
    ) -> Response:
        state = hl.hazard(
            hazard_id,
            as_of=_moment(as_of, hl, "as_of"),
            known_at=_known(known_at, hl),
            principal=caller,
            reveal_tipster=reveal_tipster,
        )
        return _json(state, headers={"ETag": f'"{state["version"]}"'})

    @app.get(
        "/hazards/{hazard_id}/history",
        tags=["cases"],
        summary="Every event of a hazard, both times, actor, log position and case hash",
        response_model=HistoryOut,
        responses=_responses(*_CASE),
    )
    def get_history(
        hazard_id: HazardId,
        caller: Caller,
        known_at: KnownAt = None,
        reveal_tipster: Annotated[bool, Query()] = False,
    ) -> Response:
        events = hl.history(
            hazard_id,
            known_at=_known(known_at, hl),
            principal=caller,
            reveal_tipster=reveal_tipster,
        )
        return _json({"hazard_id": hazard_id, "events": events})

    @app.get(
        "/hazards/{hazard_id}/dossier",
        tags=["cases"],
        summary="A hazard's dossier: timeline, steps, extensions, evidence, chain proof",
        responses={**_formats("json", "html"), **_responses(*_CASE)},
    )
    def get_dossier(
        hazard_id: HazardId,
        caller: Caller,
        known_at: KnownAt = None,
        format: Annotated[Literal["json", "html"], Query()] = "json",
    ) -> Response:
        moment = _known(known_at, hl)
        if format == "json":
            return _json(hl.dossier(hazard_id, known_at=moment, principal=caller))
        from adapters.dossier import build_dossier, render_dossier

        hl.dossier(hazard_id, known_at=moment, principal=caller)  # authorizes, checks a head
        known = hl.resolve_known_at(moment)
        data = render_dossier(build_dossier(hl.app, hazard_id, known_at=known), "html")
        return Response(data, media_type=_MEDIA["html"])

    # ----------------------------------------------------------- reports

    @app.get(
        "/reports/overdue",
        tags=["reports"],
        summary="Every open, unparked step past its deadline, as of a moment",
        responses={**_formats("json", "csv", "xlsx", "html"), **_responses(*_READ)},
    )
    def get_overdue(
        caller: Caller,
        as_of: AsOf = None,
        known_at: KnownAt = None,
        format: Format = "json",
        lang: Lang = "zh",
    ) -> Response:
        from adapters.reports import render_overdue

        report = hl.overdue(
            as_of=_moment(as_of, hl, "as_of"),
            known_at=_known(known_at, hl),
            principal=caller,
        )
        return Response(render_overdue(report, format, lang), media_type=_MEDIA[format])

    @app.get(
        "/reports/accountability",
        tags=["reports"],
        summary="Per unit, person and grid over a period: due, handled, on time, indicators",
        responses={**_formats("json", "csv", "xlsx", "html"), **_responses(*_READ)},
    )
    def get_accountability(
        caller: Caller,
        period: Annotated[
            str,
            Query(
                pattern=r"^(19|20|21)\d\d(-(0[1-9]|1[0-2]|Q[1-4]|H[12]))?$",
                description="2026-09, 2026-Q3, 2026-H2 or 2026",
            ),
        ],
        as_of: AsOf = None,
        known_at: KnownAt = None,
        format: Format = "json",
        lang: Lang = "zh",
    ) -> Response:
        from adapters.reports import render_accountability

        report = hl.accountability(
            period,
            as_of=_moment(as_of, hl, "as_of"),
            known_at=_known(known_at, hl),
            principal=caller,
        )
        return Response(render_accountability(report, format, lang), media_type=_MEDIA[format])

    # ------------------------------------------------------ audit, feed

    @app.get(
        "/audit/head",
        tags=["audit"],
        summary="The head of the event log's hash chain, COUNT:HASH (to pin and verify later)",
        response_model=HeadOut,
        responses=_responses(401, 503),
    )
    def get_head(caller: Caller) -> Response:
        return _json(hl.audit_head())

    @app.get(
        "/events",
        tags=["feed"],
        summary="The pull feed: events after a position, in commit order",
        description="See docs/subscriptions.md. Resume with `after` = `next_after`.",
        response_model=FeedOut,
        responses=_responses(*_READ),
    )
    def get_events(
        caller: Caller,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        return _json(hl.feed(after, limit, principal=caller))

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Readiness: the store answers",
        response_model=Health,
        responses=_responses(503),
    )
    def healthz() -> Response:
        hl.audit_head()
        return _json({"ok": True})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            command = dict(_COMMAND_SCHEMA)
            components.update(command.pop("$defs", {}))
            components["Command"] = command
            for model in (CommandResult, BatchResult):
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _prepare(
    item: Any, caller: Principal, key: str | None, old_key: str | None = None
) -> c.CommandBase | HazardLoopError:
    """One command of a request: the token's actor where none is named, the request's key
    (a body may name a batch line's key as it was spelled before, `old_key`: it is `key`)."""
    if not isinstance(item, dict):
        return MalformedJSON(f"a command is a JSON object, not {type(item).__name__}")
    data = dict(item)
    if not isinstance(data.get("command", ""), str):
        return UnknownCommand(
            f"`command` is a name of the contract, not {type(data['command']).__name__}",
            command=repr(data["command"])[:100],
        )
    data.setdefault("actor", caller.actor)
    if key is not None:
        given = data.setdefault("idempotency_key", key)
        if old_key is not None and given == old_key:
            data["idempotency_key"] = given = key
        if given != key:
            error = InvalidCommand(
                "the body's `idempotency_key` differs from the Idempotency-Key header",
                fields=[{"field": "idempotency_key", "problem": "differs from the header"}],
            )
            if isinstance(data.get("hazard_id"), str):
                error.details["hazard_id"] = data["hazard_id"]
            return error
    try:
        return c.parse_command(data)
    except HazardLoopError as exc:
        if isinstance(data.get("hazard_id"), str):
            exc.details.setdefault("hazard_id", data["hazard_id"])
        return exc
