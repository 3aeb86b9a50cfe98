"""The Python API for systems that embed the engine in their own process: one entry point.

`open_engine(Settings(db=...))` builds the engine through the composition root and gives an
`EmbeddedEngine`: handle commands of the contract (optionally as a `Principal`, under the same
rules as the HTTP API), read views (a hazard, the ledger, the reports, the audit head) and pull
the event feed. The HTTP API (adapters.http) is a thin shell over exactly this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import ColumnElement, Connection, Engine, false, func, or_, select, true
from sqlalchemy.exc import SQLAlchemyError

from adapters.bootstrap import Settings, build_engine, build_runner, views_engine
from adapters.bulk_writer import BulkWriter
from adapters.logs import get_logger
from adapters.store import location_of
from adapters.storesql import db_error
from adapters.tipsters import CONFIDENTIAL, ERASED, is_confidential, shown_reporter
from adapters.tokens import TokenStore
from loop import commands as c
from loop.application import Authority, Clock, HazardLoop, Result
from loop.authorization import (
    CASE_READERS,
    Principal,
    decide_case_read,
    decide_feed,
    decide_reports,
    decide_tipster,
)
from loop.errors import Forbidden, HazardLoopError, HazardNotFound, InvalidCommand, StoreError
from loop.hazard import Hazard
from projections.model import AccountabilityReport, OverdueReport
from projections.tables import ledger

if TYPE_CHECKING:
    from adapters.timetravel import KnownAt

__all__ = [
    "CONFIDENTIAL",
    "ERASED",
    "LEDGER_FIELDS",
    "EmbeddedEngine",
    "KnownAtArg",
    "LedgerPage",
    "open_engine",
]

#: `known_at` as the API takes it: a record time, or a printed chain head `COUNT:HASH`
#: (checked against the store, then read as the first COUNT events of the log).
KnownAtArg = datetime | str

#: The ledger's columns a page of the ledger shows, in order.
LEDGER_FIELDS = (
    "hazard_id", "title", "grid", "category", "grade", "source", "status", "step", "holder",
    "unit", "person", "due", "due_limit", "provisional", "rework_count", "extension_count",
    "reopen_count", "discovered_at", "last_at", "version",
)  # fmt: skip
_TIMES = {"due", "discovered_at", "last_at"}


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: date-times as RFC 3339 strings, sets and tuples as lists."""

    def default(value: Any) -> Any:
        if isinstance(value, set | frozenset | tuple):
            return list(value)
        raise TypeError(f"cannot serialise {type(value).__name__}")

    return orjson.loads(orjson.dumps(obj, default=default))


def _check(verdict: Any) -> None:
    if isinstance(verdict, Forbidden):
        raise verdict


@dataclasses.dataclass(frozen=True)
class LedgerPage:
    """One page of the ledger (隐患台账): its rows, and how many rows match in all."""

    items: list[dict[str, Any]]
    total: int
    page: int
    page_size: int

    @property
    def next_page(self) -> int | None:
        return self.page + 1 if self.page * self.page_size < self.total else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "total": self.total,
            "page": self.page,
            "page_size": self.page_size,
            "next_page": self.next_page,
        }


class EmbeddedEngine:
    """The engine, its read models and its API tokens, for use in-process.

    Thread-safe: writes and catching the read models up are serialised by one lock; reads run
    side by side. Close it (or use it as a context manager) when done.
    """

    def __init__(self, app: HazardLoop) -> None:
        self.app = app
        #: Where the store is (a SQLite file or a PostgreSQL database).
        self.location = location_of(app)
        #: One SQLAlchemy engine on the store for the read models and the API tokens.
        self._tables = views_engine(app)
        try:
            #: The API tokens, and who holds which roles (approvers are found here).
            self.tokens = TokenStore(self._tables)
        except BaseException:
            self._tables.dispose()
            raise
        self._lock = threading.RLock()
        self._runner: Any = None

    # -------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release the store and the read models."""
        self._tables.dispose()
        self.app.close()

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- writes

    def authenticate(self, token: str | None) -> Principal:
        """The principal an API token stands for; Unauthorized if none, unknown or revoked."""
        return self.tokens.authenticate(token)

    def authority(
        self, principal: Principal | None, expected_version: int | None = None
    ) -> Authority:
        """What the service needs to authorize commands of `principal`."""
        directory = self.tokens.principal_of if principal is not None else None
        return Authority(principal, directory, expected_version)

    def handle(
        self,
        command: c.CommandBase | Mapping[str, Any],
        *,
        principal: Principal | None = None,
        expected_version: int | None = None,
    ) -> Result:
        """Apply one command (a model, or a mapping of the contract); raise what refuses it.

        As a `principal`, the command must name them as `actor` and be theirs to give
        (loop.authorization), or Forbidden is raised and nothing changes. `expected_version`:
        refuse (ConcurrencyConflict) unless the hazard is still at that version.
        """
        cmd = command if isinstance(command, c.CommandBase) else _parse(command)
        with self._lock:
            return self.app.handle(cmd, authority=self.authority(principal, expected_version))

    def handle_many(
        self,
        commands: Iterable[c.CommandBase | Mapping[str, Any] | HazardLoopError],
        *,
        principal: Principal | None = None,
        batch_size: int = 500,
        expected_version: int | None = None,
        bulk_writer: bool = False,
    ) -> list[Result]:
        """Apply commands in order; one Result each (a refused or malformed one says why: an
        item that is not a mapping is `malformed_json`, as a JSON line that is no object).

        `expected_version` (for one command): as in `handle`. `bulk_writer`: for a large load
        on a SQLite file, store each batch in a writer process while the next is decided
        (adapters.bulk_writer: the same results and stored events; on PostgreSQL or one CPU it
        does nothing).
        """

        def parsed() -> Iterator[c.CommandBase | HazardLoopError]:
            for item in commands:
                if isinstance(item, c.CommandBase | HazardLoopError):
                    yield item
                    continue
                try:
                    yield _parse(item)
                except HazardLoopError as exc:
                    hazard_id = item.get("hazard_id") if isinstance(item, Mapping) else None
                    if isinstance(hazard_id, str):
                        exc.details.setdefault("hazard_id", hazard_id)
                    yield exc

        with self._lock:
            return list(
                self.app.handle_many(
                    parsed(),
                    batch_size=batch_size,
                    authority=self.authority(principal, expected_version),
                    writer=BulkWriter.factory(self.app) if bulk_writer else None,
                )
            )

    # ------------------------------------------------------------------ cases

    def resolve_known_at(self, known_at: KnownAtArg | None) -> KnownAt | None:
        """`known_at` as the engine reads it: a record time as it is; a printed chain head
        `COUNT:HASH` checked against this store (`adapters.timetravel.position_of_head`:
        InvalidCommand with `details.reason` `beyond_log` or `rewritten` if it is not this
        store's) and read as its position, the first COUNT events of the log."""
        if known_at is None or isinstance(known_at, datetime):
            return known_at
        if isinstance(known_at, str):
            from adapters.audit import parse_head
            from adapters.timetravel import position_of_head

            return position_of_head(self.app, parse_head(known_at))
        raise InvalidCommand(
            f"`known_at` is a date-time or a chain head COUNT:HASH, not {known_at!r}",
            fields=[{"field": "known_at", "problem": "expected a date-time or COUNT:HASH"}],
        )

    def _hazard(
        self,
        hazard_id: str,
        principal: Principal | None,
        as_of: datetime | None = None,
        known_at: KnownAtArg | None = None,
    ) -> Hazard:
        now = self.app.get_hazard(hazard_id)
        if principal is not None:  # judged on the case as it stands now
            _check(decide_case_read(principal, now))
        if as_of is None and known_at is None:
            return now
        from adapters.timetravel import hazard_at

        known = self.resolve_known_at(known_at)
        return hazard_at(self.app, hazard_id, as_of=as_of, known_at=known)

    def _reporter(
        self, hazard_id: str, value: str, sealed: bool, reveal: bool, principal: Principal | None
    ) -> str:
        """A public tip's reporter as the caller may see it."""
        if not reveal:
            return shown_reporter(self.app.vault, hazard_id, value, sealed=sealed, reveal=False)
        if principal is not None:
            _check(decide_tipster(principal))
        get_logger().info(
            "tipster revealed",
            hazard_id=hazard_id,
            actor=principal.actor if principal else None,
        )
        return shown_reporter(self.app.vault, hazard_id, value, sealed=sealed, reveal=True)

    def hazard(
        self,
        hazard_id: str,
        *,
        as_of: datetime | None = None,
        known_at: KnownAtArg | None = None,
        principal: Principal | None = None,
        reveal_tipster: bool = False,
    ) -> dict[str, Any]:
        """A case's state as JSON-ready data: now, as of business time `as_of`, or as known at
        `known_at` (both: as it had happened by then, as known then): a record time, or a
        printed chain head `COUNT:HASH`, checked against the store (`resolve_known_at`).

        A public tip's reporter reads `(confidential)` unless `reveal_tipster` is asked (and, as a
        principal, allowed: role `tipster_officer`); every reveal is logged.
        """
        hazard = self._hazard(hazard_id, principal, as_of, known_at)
        state: dict[str, Any] = _jsonable(hazard.to_state())
        if is_confidential(state):
            state["reporter"] = self._reporter(
                hazard_id,
                state["reporter"],
                bool(state.get("reporter_sealed")),
                reveal_tipster,
                principal,
            )
        return state

    def history(
        self,
        hazard_id: str,
        *,
        known_at: KnownAtArg | None = None,
        principal: Principal | None = None,
        reveal_tipster: bool = False,
    ) -> list[dict[str, Any]]:
        """Every event of a case (as known at `known_at`: a record time or a chain head, as in
        `hazard`): both times, actor, payload, position in the log and case hash; a public tip's
        reporter as in `hazard`."""
        from adapters.timetravel import case_chain, describe_known, event_record, is_known

        hazard = self._hazard(hazard_id, principal)
        known = self.resolve_known_at(known_at)
        chain = {entry.version: entry for entry in case_chain(self.app, hazard_id)}
        events: list[dict[str, Any]] = []
        for event in self.app.history(hazard_id):
            record = event_record(event)
            payload = record["payload"]
            entry = chain.get(event.originator_version)
            if entry is not None:
                if known is not None and not is_known(entry, known):
                    continue
                record["position"] = entry.position
                record["stored_at"] = entry.recorded_at
                record["log_hash"] = entry.log_hash.hex()
            if "reporter" in payload and is_confidential(payload, hazard.source):
                payload["reporter"] = self._reporter(
                    hazard_id,
                    payload["reporter"],
                    bool(payload.get("reporter_sealed")),
                    reveal_tipster,
                    principal,
                )
            events.append(record)
        if known is not None and not events:
            raise HazardNotFound(
                f"hazard {hazard_id!r} was not known at {describe_known(known)}",
                hazard_id=hazard_id,
            )
        out: list[dict[str, Any]] = _jsonable(events)
        return out

    def dossier(
        self,
        hazard_id: str,
        *,
        known_at: KnownAtArg | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        """The case's dossier (adapters.dossier) as JSON-ready data, as known at `known_at` (a
        record time or a chain head, as in `hazard`); tipsters stay confidential."""
        from adapters.dossier import build_dossier

        self._hazard(hazard_id, principal)
        known = self.resolve_known_at(known_at)
        out: dict[str, Any] = _jsonable(build_dossier(self.app, hazard_id, known_at=known))
        return out

    # ----------------------------------------------------------- read models

    def _views(self) -> Engine:
        """The read models, caught up with every event stored so far."""
        with self._lock:
            if self._runner is None:
                self._runner = build_runner(self.app, self._tables)
            try:
                self._runner.catch_up()
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot catch the read models up: {db_error(exc)}") from exc
            engine: Engine = self._runner.engine
            return engine

    def ledger(
        self,
        *,
        grid: str | None = None,
        status: str | None = None,
        step: str | None = None,
        unit: str | None = None,
        grade: str | None = None,
        overdue: bool | None = None,
        page: int = 1,
        page_size: int = 50,
        principal: Principal | None = None,
    ) -> LedgerPage:
        """A page of the ledger (隐患台账), filtered, oldest discovery first.

        `overdue`: only cases whose current step is past its deadline now (False: only those
        that are not). As a principal, only the cases they may read (their grids, their unit's).
        """
        if page < 1 or not 1 <= page_size <= 1000:
            raise InvalidCommand("`page` starts at 1; `page_size` is from 1 to 1000")
        t = ledger.c
        where: list[ColumnElement[bool]] = []
        for column, value in (
            (t.grid, grid),
            (t.status, status),
            (t.step, step),
            (t.unit, unit),
            (t.grade, grade),
        ):
            if value is not None:
                where.append(column == value)
        now = self.app.clock()
        if overdue is True:
            where.append(t.due < now)
        elif overdue is False:
            where.append(or_(t.due.is_(None), t.due >= now))
        if principal is not None:
            where.append(_ledger_scope(principal))
        views = self._views()
        columns = [t[name] for name in LEDGER_FIELDS]
        tz = self.app.policy.tz
        try:
            with views.connect() as conn:
                total = conn.execute(select(func.count()).select_from(ledger).where(*where))
                rows = conn.execute(
                    select(*columns)
                    .where(*where)
                    .order_by(t.discovered_at, _by_code_point(t.hazard_id, views))
                    .limit(page_size)
                    .offset((page - 1) * page_size)
                ).all()
                count = int(total.scalar_one())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the ledger: {db_error(exc)}") from exc
        items = []
        for row in rows:
            item = dict(zip(LEDGER_FIELDS, row, strict=True))
            for name in _TIMES:
                if item[name] is not None:
                    item[name] = item[name].astimezone(tz).isoformat()
            item["provisional"] = bool(item["provisional"])
            item["overdue"] = row.due is not None and row.due < now
            items.append(item)
        return LedgerPage(items, count, page, page_size)

    @contextlib.contextmanager
    def _report_views(self, known: KnownAt | None) -> Iterator[tuple[Connection, int]]:
        """A connection to report from and the log position it reflects: the store's read
        models, caught up, read in one snapshot with their tracked position (so the report
        prints the head of exactly the events it was computed from, while another catch-up
        moves them on); or a scratch copy over the events known at `known` (a record time or a
        chain head's position), as the CLI's reports (`adapters.cli._views`)."""
        from adapters.timetravel import views_known_at, views_snapshot

        if known is not None:
            with views_known_at(self.app, known) as (views, position), views.connect() as conn:
                yield conn, position
            return
        self._views()  # caught up under the lock; read side by side with other readers
        with views_snapshot(self._runner) as found:
            yield found

    def _head_at(self, position: int) -> str | None:
        from adapters.audit import printed_head

        return printed_head(self.location, position)

    def _check_years(self, **moments: datetime | None) -> None:
        """A report's `as_of`/`known_at` lies in the years a report can be about (1980–2099,
        local time), as the CLI's: anything else is `invalid_command`, never an overflow."""
        from projections.reports import FIRST_YEAR, LAST_YEAR

        for name, moment in moments.items():
            if moment is None:
                continue
            # Its own year first: converting a moment at the edge of year 9999 would overflow.
            inside = FIRST_YEAR <= moment.year <= LAST_YEAR
            if inside and moment.tzinfo is not None:
                inside = FIRST_YEAR <= moment.astimezone(self.app.policy.tz).year <= LAST_YEAR
            if not inside:
                years = f"{FIRST_YEAR}-{LAST_YEAR}"
                raise InvalidCommand(
                    f"`{name}` {moment.isoformat()} lies outside the years {years}",
                    fields=[{"field": name, "problem": f"outside {FIRST_YEAR}-{LAST_YEAR}"}],
                )

    def overdue(
        self,
        *,
        as_of: datetime | None = None,
        known_at: KnownAtArg | None = None,
        principal: Principal | None = None,
    ) -> OverdueReport:
        """Every open, unparked step past its deadline as of `as_of`, from every event recorded
        (or only those known at `known_at`: recorded by that time, or the first COUNT events
        of a printed chain head `COUNT:HASH`, checked against the store). `as_of` by default:
        the `known_at` time, the record time of the head's last event, or now to the minute.
        Its `chain_head` is the head of exactly the events it was computed from: with its
        `as_of`, `known_at=<chain_head>` gives the same report later."""
        from adapters.timetravel import report_moment
        from projections.reports import overdue_report

        if principal is not None:
            _check(decide_reports(principal))
        known = self.resolve_known_at(known_at)
        self._check_years(as_of=as_of, known_at=known if isinstance(known, datetime) else None)
        moment = report_moment(self.app, as_of, known)
        with self._report_views(known) as (conn, position):
            return overdue_report(
                conn,
                moment,
                self.app.policy,
                self.app.calendar,
                chain_head=self._head_at(position),
            )

    def accountability(
        self,
        period: str,
        *,
        as_of: datetime | None = None,
        known_at: KnownAtArg | None = None,
        principal: Principal | None = None,
    ) -> AccountabilityReport:
        """Per unit, person and grid over `period` (`2026-09`, `2026-Q3`, `2026-H2`, `2026`);
        `as_of` and `known_at` as in `overdue`."""
        from adapters.timetravel import report_moment
        from projections.reports import accountability_report, parse_period

        if principal is not None:
            _check(decide_reports(principal))
        chosen = parse_period(period)
        known = self.resolve_known_at(known_at)
        self._check_years(as_of=as_of, known_at=known if isinstance(known, datetime) else None)
        moment = report_moment(self.app, as_of, known)
        with self._report_views(known) as (conn, position):
            return accountability_report(
                conn,
                chosen,
                moment,
                self.app.policy,
                self.app.calendar,
                chain_head=self._head_at(position),
            )

    def audit_head(self) -> dict[str, Any]:
        """The head the store records, `COUNT:HASH` (verify it with `hazardloop audit verify`)."""
        from adapters.audit import head

        found = head(self.location)
        return {"head": str(found), "count": found.count}

    # ------------------------------------------------------------------ feed

    def feed(
        self, after: int = 0, limit: int = 100, *, principal: Principal | None = None
    ) -> dict[str, Any]:
        """Pull the event feed: up to `limit` events after position `after`, with `next_after`
        (where to resume) and the log's `head` (see docs/subscriptions.md)."""
        from adapters.feed import feed_page

        if principal is not None:
            _check(decide_feed(principal))
        return feed_page(self.app, after, limit).to_dict()


def _by_code_point(column: ColumnElement[str], engine: Engine) -> ColumnElement[str]:
    """`column` ordered as SQLite orders text, by code point, on PostgreSQL too (whose
    database collation may be a locale's: ICU en-US puts `a-1` before `B-1`)."""
    return column.collate("C") if engine.dialect.name == "postgresql" else column


def _ledger_scope(principal: Principal) -> ColumnElement[bool]:
    """The ledger rows `principal` may read (loop.authorization.decide_case_read, in SQL)."""
    if principal.has("auditor"):
        return true()
    t = ledger.c
    allowed: list[ColumnElement[bool]] = []
    if principal.roles & CASE_READERS:
        for pattern in principal.grids:
            if pattern == "*":
                return true()
            if pattern.endswith("*"):
                # A prefix compared exactly, as grid_in_scope does (LIKE ignores ASCII case on
                # SQLite, not on PostgreSQL: never LIKE here).
                prefix = pattern[:-1]
                allowed.append(func.substr(t.grid, 1, len(prefix)) == prefix)
            else:
                allowed.append(t.grid == pattern)
    if principal.has("unit") and principal.unit is not None:
        allowed.append(t.unit == principal.unit)
    return or_(*allowed) if allowed else false()


def open_engine(settings: Settings | None = None, *, clock: Clock | None = None) -> EmbeddedEngine:
    """Build the engine from settings (HAZARDLOOP_* by default) for use in this process."""
    return EmbeddedEngine(build_engine(settings or Settings(), clock=clock))


def _parse(item: object) -> c.Command:
    """A command of the contract from a mapping; anything else is refused as HTTP refuses a
    body that is no JSON object (`malformed_json`), never with a TypeError half-way through."""
    return c.parse_command(dict(item) if isinstance(item, Mapping) else item)
