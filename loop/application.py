"""The service layer: an eventsourcing Application that takes commands of the contract.

It loads cases (and grids, units, people), lets the aggregate decide, and saves the new events,
together with the results of idempotent submissions, in one transaction; many commands may share
a transaction (bulk loads). Rules that span two aggregates (a grid's parent exists, the person
appointed is registered, `duplicate_of` names a known case) are checked here.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import Environment

from loop import commands as c
from loop.authorization import Directory, Principal, authorize, check_actor
from loop.commands import Subject
from loop.encoding import FastJSONTranscoder, Row, to_rows
from loop.errors import (
    ConcurrencyConflict,
    Forbidden,
    GridExists,
    HazardAlreadyExists,
    HazardLoopError,
    HazardNotFound,
    IdempotencyKeyReused,
    InvalidCommand,
    InvalidDuplicate,
    PersonExists,
    StoreError,
    UnitExists,
    UnknownGrid,
    UnknownPerson,
    UnknownUnit,
)
from loop.gc_pause import PausedForRun, no_cyclic_gc
from loop.hazard import Context, Hazard, Vault, hazard_uuid
from loop.organisation import PARENT_LEVEL, Grid, Person, Unit, grid_uuid, person_uuid, unit_uuid
from loop.policy import Policy, WorkCalendar

__all__ = [
    "EXPECTED_VERSION_IS_FOR_HAZARDS",
    "KEY_SCOPE",
    "Authority",
    "BatchWriter",
    "HazardLoop",
    "IdempotencyRecorder",
    "Result",
    "Subject",
    "WriterLost",
    "scoped_key",
]

#: Why an expected version (HTTP `If-Match`, the Python API's `expected_version`) is refused on
#: an organisation command: the same words over both.
EXPECTED_VERSION_IS_FOR_HAZARDS = "If-Match applies to hazard commands only"

A = TypeVar("A", bound=Aggregate)

#: Each kind of subject: its aggregate class, how its id is made, and what "not found" raises.
_KINDS: dict[str, tuple[type[Aggregate], Callable[[str], UUID], type[HazardLoopError], str]] = {
    "hazard": (Hazard, hazard_uuid, HazardNotFound, "hazard_id"),
    "grid": (Grid, grid_uuid, UnknownGrid, "grid"),
    "unit": (Unit, unit_uuid, UnknownUnit, "unit"),
    "person": (Person, person_uuid, UnknownPerson, "person"),
}
_KIND_OF: dict[type[Aggregate], str] = {cls: kind for kind, (cls, *_) in _KINDS.items()}


def _not_found(subject: Subject) -> HazardLoopError:
    _, _, error, key = _KINDS[subject.kind]
    return error(f"no {subject.kind} {subject.id!r}", **{key: subject.id})


def _already_exists(subject: Subject) -> HazardLoopError:
    """The refusal of a command that creates an aggregate whose id is taken."""
    if subject.kind == "hazard":
        return HazardAlreadyExists(
            f"hazard {subject.id!r} has already been discovered", hazard_id=subject.id
        )
    if subject.kind == "grid":
        return GridExists(f"grid {subject.id!r} has already been established", grid=subject.id)
    if subject.kind == "unit":
        return UnitExists(f"unit {subject.id!r} has already been registered", unit=subject.id)
    return PersonExists(f"person {subject.id!r} has already been registered", person=subject.id)


#: The commands that create their subject (refused when it exists already).
_CREATES = (c.Discover, c.EstablishGrid, c.RegisterUnit, c.RegisterPerson)
#: After a `discover` of a taken id failed at the insert, this many batches read first.
_READ_DISCOVERS_FOR = 20

Clock = Callable[[], datetime]


def _batches(
    items: Iterable[c.CommandBase | HazardLoopError], size: int
) -> Iterator[list[c.CommandBase | HazardLoopError]]:
    batch: list[c.CommandBase | HazardLoopError] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def utc_now() -> datetime:
    """The engine's default clock."""
    return datetime.now(UTC)


#: Between the actor and the key in a stored idempotency key: keys are per actor. An actor
#: (loop.commands.Name) holds no control character, so `actor + KEY_SCOPE + key` is unambiguous.
KEY_SCOPE = "\x1f"


def scoped_key(actor: str, key: str) -> str:
    """The idempotency key as stored: the actor's own (`actor` US `key`)."""
    return f"{actor}{KEY_SCOPE}{key}"


@runtime_checkable
class IdempotencyRecorder(Protocol):
    """A recorder that keeps the first result of each idempotency key in the events' transaction.

    `insert_events(..., idempotency=[(key, fingerprint, result_json), ...])` stores the rows with
    the events, atomically; `select_idempotency(key)` returns `(fingerprint, result_json)`. The
    service gives keys scoped by actor (`scoped_key`); a store written before that holds bare
    keys, which the service still reads (`HazardLoop._stored_result`).
    """

    def select_idempotency(self, key: str) -> tuple[str, bytes] | None: ...


@dataclass
class Result:
    """What one command came to: the event it recorded, or the error that refused it.

    `subject` names what the command wrote to (kind and id). A hazard's result keeps the shape
    it always had (`hazard_id`, `status`, `due`); an organisation command's carries `subject`.
    """

    ok: bool
    hazard_id: str | None
    event: str | None = None
    version: int | None = None
    status: str | None = None
    due: datetime | None = None
    replayed: bool = False
    error: HazardLoopError | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    subject: Subject | None = None

    def __post_init__(self) -> None:
        if self.subject is None and self.hazard_id is not None:
            self.subject = Subject("hazard", self.hazard_id)

    @property
    def is_hazard(self) -> bool:
        """Whether the result is a hazard's (or of a line that named no subject)."""
        return self.subject is None or self.subject.kind == "hazard"

    def to_dict(self, line: int | None = None) -> dict[str, Any]:
        """The result in the contract's JSON shape."""
        out: dict[str, Any] = {"ok": self.ok}
        if line is not None:
            out["line"] = line
        if self.is_hazard:
            out["hazard_id"] = self.hazard_id  # the shape hazard results always had
        else:
            assert self.subject is not None
            out["subject"] = self.subject.to_dict()
        if self.ok:
            out["event"] = self.event
            out["version"] = self.version
            if self.is_hazard:
                out["status"] = self.status
                out["due"] = self.due.isoformat() if self.due else None
            if self.replayed:
                out["replayed"] = True
        else:
            assert self.error is not None
            out["error"] = self.error.to_dict()
        return out

    @classmethod
    def succeeded(
        cls,
        hazard_id: str,
        event: str,
        version: int,
        status: str,
        due: datetime | None,
        subject: Subject,
        extra: dict[str, Any],
    ) -> Result:
        """`Result(ok=True, hazard_id=…, event=…, version=…, status=…, due=…, extra=…)` of a
        hazard command whose `subject` is given, made without the dataclass's generated
        `__init__` and `__post_init__` (half the cost: one per bulk command). A test holds it
        equal to the dataclass's own, field by field and in order."""
        made = object.__new__(cls)
        made.__dict__ = {
            "ok": True,
            "hazard_id": hazard_id,
            "event": event,
            "version": version,
            "status": status,
            "due": due,
            "replayed": False,
            "error": None,
            "extra": extra,
            "subject": subject,
        }
        return made

    @classmethod
    def failed(
        cls, hazard_id: str | None, error: HazardLoopError, subject: Subject | None = None
    ) -> Result:
        return cls(ok=False, hazard_id=hazard_id, error=error, subject=subject)

    def stored_form(self) -> bytes:
        """The result as kept for an idempotency key."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_stored(cls, data: bytes) -> Result:
        d = orjson.loads(data)
        due = datetime.fromisoformat(d["due"]) if d.get("due") else None
        stored = d.get("subject")  # hazard results name their subject by `hazard_id`
        subject = Subject(stored["kind"], stored["id"]) if stored else None
        return cls(
            ok=True,
            hazard_id=d.get("hazard_id"),
            event=d["event"],
            version=d["version"],
            status=d.get("status"),
            due=due,
            replayed=True,
            subject=subject,
        )


@dataclass(frozen=True)
class Authority:
    """Who gives the commands, and what they expect (loop.authorization decides each command).

    `principal`: the authenticated caller, whose roles and scope must allow each command and
    whose actor each command must name. `directory`: finds the principal an extension's or a
    parking's `approved_by` names. `expected_version`: the version the caller last saw of the
    hazard it writes to (HTTP `If-Match`); another version refuses the command as a conflict,
    and an organisation command is refused (`invalid_command`) as HTTP refuses its If-Match.
    """

    principal: Principal | None = None
    directory: Directory | None = None
    expected_version: int | None = None


class WriterLost(PersistenceError):
    """A batch writer's process ended before it said whether it stored the batch."""


class BatchWriter(Protocol):
    """Stores a batch's encoded events in another process (adapters.bulk_writer) while the
    engine decides the next batch: what `handle_many` is given a factory of.

    `submit` hands one batch over, as rows (`loop.encoding.Row`: marshal writes them as they
    are, so the engine does nothing more per event to send them); `wait` returns the positions
    it was stored at, or raises eventsourcing's `IntegrityError` (another writer came first:
    nothing of it is stored), another `PersistenceError` (nothing of it is stored), or
    `WriterLost` (unknown: the engine looks in the store). `ready` says, without waiting,
    whether it can take a batch yet.
    """

    def ready(self) -> bool: ...

    def submit(self, rows: Sequence[Row], kwargs: dict[str, Any]) -> None: ...

    def wait(self) -> Sequence[int]: ...

    def close(self) -> None: ...


@dataclass
class _InFlight:
    """A batch decided and handed to the writer, its results not yet given out."""

    batch: Sequence[c.CommandBase | HazardLoopError]
    results: list[Result]
    last: StoredEvent  # its last event: looked for in the store if the writer is lost
    uow: _UnitOfWork  # its cases and keys: not yet in the store


class _UnitOfWork:
    """The aggregates touched by one transaction, and the idempotency rows to store with them."""

    def __init__(
        self,
        known: OrderedDict[Subject, Aggregate] | None = None,
        authority: Authority | None = None,
        pending: _UnitOfWork | None = None,
    ) -> None:
        #: The batch in flight (being stored by the writer): read before the store.
        self.pending = pending
        self.aggregates: dict[Subject, Aggregate] = {}
        self.known = known
        self.authority = authority or Authority()
        self.cached = False  # whether an aggregate came from the cache, not from the store
        self.keys: dict[str, tuple[str, bytes]] = {}
        self.rows: list[tuple[str, str, bytes]] = []

    def dirty(self) -> list[Aggregate]:
        return [a for a in self.aggregates.values() if a.pending_events]


class HazardLoop(Application):  # type: ignore[type-arg]
    """The engine: handles commands of the contract against an event store."""

    name = "HazardLoop"
    env: ClassVar[dict[str, str]] = {"IS_SNAPSHOTTING_ENABLED": "n"}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        policy: Policy | None = None,
        calendar: WorkCalendar | None = None,
        clock: Clock | None = None,
        vault: Vault | None = None,
    ) -> None:
        try:
            super().__init__(env)
        except PersistenceError as exc:
            raise StoreError(f"cannot open the event store: {exc}") from exc
        self.policy = policy if policy is not None else Policy.load()
        if calendar is None:
            from loop.policy import WeekdayCalendar

            calendar = WeekdayCalendar()
        self.calendar: WorkCalendar = calendar
        self.clock: Clock = clock or utc_now
        #: Commands refused so far (read by a bulk run's `PausedForRun`, to collect their
        #: tracebacks' cyclic garbage after the batch).
        self._refused = 0
        #: Seals a public tip's reporter (adapters.tipsters); None stores it in clear.
        self.vault = vault
        #: For how many more batches a `discover` reads the store first (see `_discovered`).
        self._read_discovers = 0

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        """The library's settings: as eventsourcing builds them, minus our own HAZARDLOOP_* ones.

        eventsourcing reads each setting first under the application's name (`HAZARDLOOP_` +
        key), so the operator's HAZARDLOOP_CIPHER_KEY (the tipsters' master key, read by our
        Settings) would turn on the library's AES for every stored event, readable only by
        processes given the same variable. The process environment's HAZARDLOOP_* variables are
        ours; the library gets its settings from `env` (adapters.store.StoreLocation.env).
        """
        base = super().construct_env(name, None)
        ours = f"{name.upper()}_"
        for key in [k for k in os.environ if k.startswith(ours)]:
            base.pop(key, None)
        if env is not None:
            base.update(env)
        return base

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder, encoding with orjson to the same bytes
        (loop.encoding); a transcoder chosen in the environment is kept as chosen."""
        transcoder = super().construct_transcoder()
        if type(transcoder) is JSONTranscoder:
            fast = FastJSONTranscoder()
            self.register_transcodings(fast)
            return fast
        return transcoder

    # ------------------------------------------------------------------ reads

    def get_hazard(self, hazard_id: str, version: int | None = None) -> Hazard:
        """The case as it stands now (or at `version`); HazardNotFound if never discovered."""
        return self._get(Hazard, hazard_id, version)

    def get_grid(self, code: str, version: int | None = None) -> Grid:
        """The grid as it stands now (or at `version`); UnknownGrid if never established."""
        return self._get(Grid, code, version)

    def get_unit(self, code: str, version: int | None = None) -> Unit:
        """The unit as registered; UnknownUnit if never registered."""
        return self._get(Unit, code, version)

    def get_person(self, person: str, version: int | None = None) -> Person:
        """The person as registered; UnknownPerson if never registered."""
        return self._get(Person, person, version)

    def _get(self, cls: type[A], ident: str, version: int | None = None) -> A:
        subject = Subject(_KIND_OF[cls], ident)
        _, make_id, _, _ = _KINDS[subject.kind]
        try:
            aggregate: object = self.repository.get(make_id(ident), version=version)
        except AggregateNotFoundError:
            raise _not_found(subject) from None
        except PersistenceError as exc:
            raise StoreError(f"cannot read {subject.kind} {ident!r}: {exc}") from exc
        if not isinstance(aggregate, cls):  # a uuid5 collision across namespaces: never seen
            raise StoreError(f"{subject.kind} {ident!r} is stored as {type(aggregate).__name__}")
        return aggregate

    def history(self, hazard_id: str) -> list[Hazard.Event]:
        """Every event of the case, in order."""
        try:
            events = list(self.events.get(hazard_uuid(hazard_id)))
        except PersistenceError as exc:
            raise StoreError(f"cannot read hazard {hazard_id!r}: {exc}") from exc
        if not events:
            raise HazardNotFound(f"no hazard {hazard_id!r}", hazard_id=hazard_id)
        return [e for e in events if isinstance(e, Hazard.Event)]

    def exists(self, hazard_id: str) -> bool:
        """Whether a hazard with this id has been discovered."""
        return self._exists(Subject("hazard", hazard_id))

    def _exists(self, subject: Subject) -> bool:
        _, make_id, _, _ = _KINDS[subject.kind]
        try:
            return bool(self.recorder.select_events(make_id(subject.id), limit=1))
        except PersistenceError as exc:
            raise StoreError(f"cannot read the event store: {exc}") from exc

    # ----------------------------------------------------------------- writes

    def handle(self, command: c.CommandBase, *, authority: Authority | None = None) -> Result:
        """Apply one command in its own transaction; raise the error that refuses it.

        With an `authority` naming a principal, the command must be theirs to give
        (loop.authorization); a command they may not give raises Forbidden and changes nothing.
        """
        result = next(self.handle_many([command], batch_size=1, authority=authority))
        if result.error is not None:
            raise result.error
        return result

    def handle_many(
        self,
        items: Iterable[c.CommandBase | HazardLoopError],
        *,
        batch_size: int = 500,
        cache_size: int = 20_000,
        authority: Authority | None = None,
        writer: Callable[[], BatchWriter | None] | None = None,
    ) -> Iterator[Result]:
        """Apply commands in order, `batch_size` to a transaction; yield one Result each.

        With a `writer` factory (adapters.bulk_writer.BulkWriter.factory), a bulk load is a
        pipeline: once a second batch comes, the factory starts a writer process, and from when
        it is ready each batch is decided while the one before is being stored (its results are
        given out once it is). The results and the stored events are the same as without it.

        An item that is already an error (a line that did not parse) yields a failed Result and
        changes nothing. A refused command changes nothing; the others in its batch still apply.
        If a batch's transaction fails (another writer got there first), the batch is applied
        again one command per transaction, on fresh state, so each command gets its own verdict
        (a one-command batch decided on a copy cached by an earlier batch is decided again too).
        With an `authority`, each command is authorized as in `handle`.
        """
        known: OrderedDict[Subject, Aggregate] = OrderedDict()
        auth = authority or Authority()
        with PausedForRun() as pause:  # till the run ends, or its iterator is closed or dropped
            if writer is not None:
                yield from self._pipelined(
                    items, batch_size, known, cache_size, auth, writer, pause
                )
                return
            for batch in _batches(items, batch_size):
                yield from self._run_batch(batch, known, cache_size, auth)
                pause.batch_done(self._refused)

    def _run_batch(
        self,
        batch: Sequence[c.CommandBase | HazardLoopError],
        known: OrderedDict[Subject, Aggregate],
        cache_size: int,
        authority: Authority,
    ) -> list[Result]:
        uow = _UnitOfWork(known, authority)
        if self._read_discovers:
            self._read_discovers -= 1
        try:
            with no_cyclic_gc():
                results = [self._execute(item, uow) for item in batch]
                self._commit(uow)
        except (ConcurrencyConflict, StoreError) as exc:
            known.clear()
            if len(batch) == 1 and uow.cached and isinstance(exc, ConcurrencyConflict):
                # Decided on a copy cached by an earlier batch, which another writer has
                # since moved on: decide again on fresh state, as a larger batch would.
                return self._run_batch(batch, known, cache_size, authority)
            if len(batch) == 1:
                item = batch[0]
                assert isinstance(item, c.CommandBase)
                result = self._after_failed_commit(item, exc)
                result.extra = {**results[0].extra, **result.extra}  # command, actor, duration
                return [result]
            return [
                r for item in batch for r in self._run_batch([item], known, cache_size, authority)
            ]
        self._remember(known, uow, cache_size)
        return results

    def _pipelined(
        self,
        items: Iterable[c.CommandBase | HazardLoopError],
        batch_size: int,
        known: OrderedDict[Subject, Aggregate],
        cache_size: int,
        authority: Authority,
        factory: Callable[[], BatchWriter | None],
        pause: PausedForRun,
    ) -> Iterator[Result]:
        """`handle_many` with a writer process: batch N+1 is decided while batch N is stored.

        Batch N+1 is decided on top of batch N's cases and idempotency keys (kept in the cache,
        and looked for in batch N before the store, which does not have them yet: its
        `_UnitOfWork` is the new one's `pending`), so if N is not stored, N+1's decisions are
        dropped with the cache and both are applied again by
        `_run_batch` (a failed batch command by command, each with its own verdict). Until the
        writer is ready, and once it is lost, batches are applied here as without one.
        """
        writer: BatchWriter | None = None
        flight: _InFlight | None = None
        batches = enumerate(_batches(items, batch_size))
        try:
            while True:
                try:
                    n, batch = next(batches)
                except StopIteration:
                    break
                except BaseException:  # reading was interrupted: give out what is stored
                    yield from self._settle(flight, writer)
                    raise
                if n:
                    pause.batch_done(self._refused)
                if n == 1:
                    writer = factory()  # None: no writer for this store
                if writer is None or (flight is None and not writer.ready()):
                    yield from self._run_batch(batch, known, cache_size, authority)
                    continue
                uow = _UnitOfWork(known, authority, flight.uow if flight else None)
                if self._read_discovers:
                    self._read_discovers -= 1
                try:
                    with no_cyclic_gc():
                        results = [self._execute(item, uow) for item in batch]
                        events = [e for a in uow.dirty() for e in a.collect_events()]
                        rows = to_rows(self.mapper, events)
                except BaseException:  # deciding was interrupted: as above
                    yield from self._settle(flight, writer)
                    raise
                if flight is not None:
                    landed, usable = self._landed(flight, writer)
                    if not usable:
                        writer.close()
                        writer = None
                    if not landed:
                        known.clear()  # this batch was decided on top of one not stored
                        yield from self._run_batch(flight.batch, known, cache_size, authority)
                        flight = None
                        yield from self._run_batch(batch, known, cache_size, authority)
                        continue
                    yield from flight.results
                    flight = None
                    if writer is None:
                        known.clear()
                        yield from self._run_batch(batch, known, cache_size, authority)
                        continue
                self._remember(known, uow, cache_size)
                if not rows:  # every command refused or replayed: nothing to write
                    yield from results
                    continue
                kwargs: dict[str, Any] = {
                    # The writer reads the default clock itself once it holds the write lock,
                    # as the recorder here does; another clock (a test's) is read now.
                    "recorded_at": None if self.clock is utc_now else self._now(),
                }
                if uow.rows:
                    kwargs["idempotency"] = uow.rows
                writer.submit(rows, kwargs)
                uow.pending = None
                _, version, topic, state = rows[-1]
                last = StoredEvent(events[-1].originator_id, version, topic, state)
                flight = _InFlight(batch, results, last, uow)
            if flight is not None:
                assert writer is not None
                landed, _ = self._landed(flight, writer)
                if landed:
                    yield from flight.results
                else:
                    known.clear()
                    yield from self._run_batch(flight.batch, known, cache_size, authority)
                flight = None
        finally:
            if writer is not None:
                writer.close()

    def _settle(self, flight: _InFlight | None, writer: BatchWriter | None) -> Iterator[Result]:
        """The results of the batch in flight, if it is stored: given out before an exception
        (an interrupt, say) ends the load, so that every stored command has its result."""
        if flight is not None and writer is not None:
            landed, _ = self._landed(flight, writer)
            if landed:
                yield from flight.results

    def _landed(self, flight: _InFlight, writer: BatchWriter) -> tuple[bool, bool]:
        """Whether the batch in flight was stored, and whether the writer can go on."""
        try:
            writer.wait()
            return True, True
        except WriterLost:
            last = flight.last
            try:
                found = self.recorder.select_events(
                    last.originator_id,
                    gt=last.originator_version - 1,
                    lte=last.originator_version,
                    limit=1,
                )
            except PersistenceError as exc:
                raise StoreError(
                    f"the batch writer ended and the store cannot say whether it stored the "
                    f"batch: {exc}"
                ) from exc
            stored = bool(found) and (found[0].topic, found[0].state) == (last.topic, last.state)
            return stored, False
        except PersistenceError:  # IntegrityError included: nothing of the batch is stored
            return False, True

    @staticmethod
    def _remember(
        known: OrderedDict[Subject, Aggregate], uow: _UnitOfWork, cache_size: int
    ) -> None:
        for subject, aggregate in uow.aggregates.items():
            known[subject] = aggregate
            known.move_to_end(subject)
        while len(known) > cache_size:
            known.popitem(last=False)

    def _after_failed_commit(self, cmd: c.CommandBase, exc: HazardLoopError) -> Result:
        """Name the real reason a single command's transaction failed."""
        if isinstance(exc, ConcurrencyConflict):
            try:
                if cmd.idempotency_key:
                    fp = self._fingerprint(cmd)
                    stored = self._stored_result(cmd, fp, None)
                    if stored is not None:
                        # The same command committed first: its result; another command under
                        # the key: IdempotencyKeyReused, as this command's refusal (a Result).
                        return self._replay(cmd, stored, fp)
                if isinstance(cmd, _CREATES) and self._exists(cmd.subject):
                    self._read_discovers = _READ_DISCOVERS_FOR
                    return self._failed(cmd, _already_exists(cmd.subject))
            except HazardLoopError as reason:
                return self._failed(cmd, reason)
        return self._failed(cmd, exc)

    @staticmethod
    def _failed(cmd: c.CommandBase, exc: HazardLoopError) -> Result:
        hazard_id = cmd.hazard_id if isinstance(cmd, c.HazardCommand) else None
        return Result.failed(hazard_id, exc, subject=cmd.subject)

    def _commit(self, uow: _UnitOfWork) -> None:
        dirty = uow.dirty()
        if not dirty:
            return
        kwargs: dict[str, Any] = {}
        if uow.rows:
            kwargs["idempotency"] = uow.rows
        # The record time on the hash chain (docs/audit.md): the clock itself, read by the
        # recorder once it holds the write lock, not now (a writer may wait for the lock).
        kwargs["recorded_at"] = self._now
        try:
            self._save(dirty, kwargs)
        except IntegrityError as exc:
            for aggregate in dirty:
                aggregate.collect_events()  # drop what was not stored
            subjects = [s for s, a in uow.aggregates.items() if any(a is d for d in dirty)]
            details: dict[str, Any] = {
                "hazard_ids": [s.id for s in subjects if s.kind == "hazard"][:20]
            }
            if any(s.kind != "hazard" for s in subjects):
                details["subjects"] = [s.to_dict() for s in subjects][:20]
            raise ConcurrencyConflict(
                "another writer recorded a step on the same case first; reload and retry",
                **details,
            ) from exc
        except PersistenceError as exc:
            for aggregate in dirty:
                aggregate.collect_events()
            raise StoreError(f"cannot write to the event store: {exc}") from exc

    def _save(self, aggregates: list[Aggregate], kwargs: dict[str, Any]) -> None:
        """`Application.save` of aggregates: the same steps, without its protocol checks.

        eventsourcing 9.5.6's `ProcessingEvent.collect_events` asks `isinstance` of two
        runtime-checkable protocols for each object, about 25 µs per aggregate on Python 3.11
        (a fifth of a bulk command); ours are all `Aggregate`s, so the events are collected
        directly. Recording, snapshots and notification are the library's own calls.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in aggregates:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # deprecated in the library, still called by it

    def _execute(self, item: c.CommandBase | HazardLoopError, uow: _UnitOfWork) -> Result:
        if isinstance(item, HazardLoopError):
            self._refused += 1
            return Result.failed(item.details.get("hazard_id"), item)
        cmd = item
        started = time.perf_counter()
        try:
            result = self._decide(cmd, uow)
        except HazardLoopError as exc:
            self._refused += 1  # its traceback is cyclic garbage (PausedForRun)
            result = self._failed(cmd, exc)
        result.extra["command"] = cmd.command
        result.extra["actor"] = cmd.actor
        result.extra["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _decide(self, cmd: c.CommandBase, uow: _UnitOfWork) -> Result:
        if uow.authority.expected_version is not None and not isinstance(cmd, c.HazardCommand):
            # As HTTP refuses an If-Match on an organisation command: a version is expected of
            # a hazard only, never silently ignored.
            raise InvalidCommand(EXPECTED_VERSION_IS_FOR_HAZARDS)
        principal = uow.authority.principal
        if principal is not None:
            verdict = check_actor(principal, cmd)  # before a replay: keys are per actor too
            if isinstance(verdict, Forbidden):
                raise verdict
        fp: str | None = None
        if cmd.idempotency_key:
            fp = self._fingerprint(cmd)
            stored = self._stored_result(cmd, fp, uow)
            if stored is not None:
                return self._replay(cmd, stored, fp)
        if isinstance(cmd, c.HazardCommand):
            result = self._decide_hazard(cmd, uow)
        else:
            result = self._decide_organisation(cmd, uow)
        if cmd.idempotency_key and fp is not None:
            row = (fp, result.stored_form())
            key = scoped_key(cmd.actor, cmd.idempotency_key)
            uow.keys[key] = row
            uow.rows.append((key, *row))
        return result

    def _decide_hazard(self, cmd: c.HazardCommand, uow: _UnitOfWork) -> Result:
        ctx = Context(  # now, policy, calendar, seal: by position, a third cheaper
            self._now(), self.policy, self.calendar, self.vault.seal if self.vault else None
        )
        # The command's name first: a negative isinstance of a pydantic class costs an ABC
        # check (0.1 µs), twice or thrice a command.
        if cmd.command == "discover" and isinstance(cmd, c.Discover):
            self._authorize(cmd, None, uow)
            if self._discovered(cmd, uow):
                raise _already_exists(cmd.subject)
            self._expect(cmd, 0, uow)
            hazard = Hazard.discover(cmd, ctx)
            uow.aggregates[cmd.subject] = hazard
            event = "Discovered"
        else:
            hazard = self._require(Hazard, cmd.hazard_id, uow)
            self._authorize(cmd, hazard, uow)
            self._expect(cmd, hazard.version, uow)
            if (
                cmd.command == "reject"
                and isinstance(cmd, c.Reject)
                and cmd.duplicate_of not in (None, cmd.hazard_id)
            ):
                assert cmd.duplicate_of is not None
                if self._load(Hazard, cmd.duplicate_of, uow) is None:
                    raise InvalidDuplicate(
                        f"`duplicate_of` names no known hazard: {cmd.duplicate_of!r}",
                        duplicate_of=cmd.duplicate_of,
                    )
            event = hazard.execute(cmd, ctx)
        return Result.succeeded(
            cmd.hazard_id, event, hazard.version, hazard.status._value_, hazard.due, cmd.subject, {}
        )

    def _authorize(self, cmd: c.CommandBase, hazard: Hazard | None, uow: _UnitOfWork) -> None:
        """Refuse (Forbidden) a command its principal may not give to the case as it stands."""
        authority = uow.authority
        if authority.principal is not None:

            def parent_of(grid: str) -> str | None:
                found = self._load(Grid, grid, uow)
                return found.parent if found is not None else None

            authorize(authority.principal, cmd, hazard, authority.directory, parent_of)

    @staticmethod
    def _expect(cmd: c.HazardCommand, version: int, uow: _UnitOfWork) -> None:
        """Refuse a command whose caller expected the case at another version (`If-Match`)."""
        expected = uow.authority.expected_version
        if expected is not None and expected != version:
            raise ConcurrencyConflict(
                f"hazard {cmd.hazard_id!r} is at version {version}, not the expected {expected}; "
                "reload and retry",
                hazard_ids=[cmd.hazard_id],
                expected_version=expected,
                version=version,
            )

    def _decide_organisation(self, cmd: c.CommandBase, uow: _UnitOfWork) -> Result:
        self._authorize(cmd, None, uow)
        now = self._now()
        aggregate: Aggregate
        if isinstance(cmd, c.EstablishGrid):
            if self._load(Grid, cmd.grid, uow) is not None:
                raise _already_exists(cmd.subject)
            parent_level: str | None = None
            if cmd.parent is not None and cmd.parent != cmd.grid and PARENT_LEVEL[cmd.level]:
                parent = self._load(Grid, cmd.parent, uow)
                if parent is None:
                    raise UnknownGrid(
                        f"the parent grid {cmd.parent!r} has not been established",
                        grid=cmd.parent,
                        field="parent",
                    )
                parent_level = parent.level
            aggregate = Grid.establish(cmd, now, parent_level)
            uow.aggregates[cmd.subject] = aggregate
            event = "Established"
        elif isinstance(cmd, c.RegisterUnit):
            if self._load(Unit, cmd.unit, uow) is not None:
                raise _already_exists(cmd.subject)
            self._require(Grid, cmd.grid, uow)
            aggregate = Unit.register(cmd, now)
            uow.aggregates[cmd.subject] = aggregate
            event = "Registered"
        elif isinstance(cmd, c.RegisterPerson):
            if self._load(Person, cmd.person, uow) is not None:
                raise _already_exists(cmd.subject)
            if cmd.unit is not None:
                self._require(Unit, cmd.unit, uow)
            if cmd.grid is not None:
                self._require(Grid, cmd.grid, uow)
            aggregate = Person.register(cmd, now)
            uow.aggregates[cmd.subject] = aggregate
            event = "Registered"
        elif isinstance(cmd, c.Appoint):
            grid = self._require(Grid, cmd.grid, uow)
            self._require(Person, cmd.person, uow)
            grid.appoint(cmd, now)
            aggregate, event = grid, "Appointed"
        elif isinstance(cmd, c.Relieve):
            grid = self._require(Grid, cmd.grid, uow)
            grid.relieve(cmd, now)
            aggregate, event = grid, "Relieved"
        else:  # pragma: no cover - every command of the contract is handled above
            raise TypeError(f"no handler for {type(cmd).__name__}")
        return Result(
            ok=True, hazard_id=None, event=event, version=aggregate.version, subject=cmd.subject
        )

    def _fingerprint(self, cmd: c.CommandBase) -> str:
        """The command's fingerprint; a public tip's reporter only as the vault's keyed digest."""
        return c.fingerprint(cmd, self.vault.digest if self.vault else None)

    def _replay(self, cmd: c.CommandBase, stored: tuple[str, bytes], fp: str) -> Result:
        """The first result stored for the command's key, if `fp` says it is the same command."""
        first, data = stored
        if first != fp:
            raise IdempotencyKeyReused(
                f"idempotency key {cmd.idempotency_key!r} was first used for a different command",
                idempotency_key=cmd.idempotency_key,
            )
        return Result.from_stored(data)

    def _stored_result(
        self, cmd: c.CommandBase, fp: str, uow: _UnitOfWork | None
    ) -> tuple[str, bytes] | None:
        """What is stored for the command's key: its actor's own (in this transaction, then in
        the store), else a row of a store written before keys were kept per actor.

        Such a legacy row is under the bare key (a batch line's under `KEY#n`, see
        `c.legacy_batch_line_key`) and is taken for this command's only when its actor recorded
        it: the same command (its fingerprint names the actor), or, under the bare key itself,
        another command of the same actor (refused as `idempotency_key_reused`, as before). Any
        other actor's row is not theirs: their command is new.
        """
        key = cmd.idempotency_key
        assert key is not None
        scoped = scoped_key(cmd.actor, key)
        stored = uow.keys.get(scoped) if uow is not None else None
        if stored is None and uow is not None and uow.pending is not None:
            stored = uow.pending.keys.get(scoped)
        if stored is None:
            stored = self._select_idempotency(scoped)
        if stored is not None:
            return stored
        legacy = self._select_idempotency(key)
        if legacy is not None and (legacy[0] == fp or self._recorded_actor(legacy[1]) == cmd.actor):
            return legacy
        old_line = c.legacy_batch_line_key(key)
        if old_line is not None:
            legacy = self._select_idempotency(old_line)
            if legacy is not None and legacy[0] == fp:
                return legacy
        return None

    def _recorded_actor(self, stored_result: bytes) -> str | None:
        """The actor of the event a stored result names (its subject at its version)."""
        found = orjson.loads(stored_result)
        subject = found.get("subject") or {"kind": "hazard", "id": found.get("hazard_id")}
        version = found.get("version")
        if subject.get("kind") not in _KINDS or not subject.get("id") or not version:
            return None
        _, make_id, _, _ = _KINDS[subject["kind"]]
        try:
            events = list(self.events.get(make_id(subject["id"]), gt=version - 1, lte=version))
        except PersistenceError as exc:
            raise StoreError(f"cannot read the event store: {exc}") from exc
        actor = getattr(events[0], "actor", None) if events else None
        return actor if isinstance(actor, str) else None

    def _select_idempotency(self, key: str) -> tuple[str, bytes] | None:
        recorder = self.recorder
        if not isinstance(recorder, IdempotencyRecorder):
            raise StoreError(
                f"the event store's recorder {type(recorder).__name__} keeps no idempotency keys"
            )
        try:
            return recorder.select_idempotency(key)
        except PersistenceError as exc:
            raise StoreError(f"cannot read the event store: {exc}") from exc

    def _load(self, cls: type[A], ident: str, uow: _UnitOfWork) -> A | None:
        """The aggregate from this transaction, the cache or the store; None if there is none."""
        subject = Subject.of(_KIND_OF[cls], ident)
        aggregate = uow.aggregates.get(subject)
        if aggregate is None and uow.known is not None:
            aggregate = uow.known.get(subject)
            uow.cached = uow.cached or aggregate is not None
        if aggregate is None and uow.pending is not None:
            aggregate = uow.pending.aggregates.get(subject)
            uow.cached = uow.cached or aggregate is not None
        if aggregate is None:
            try:
                aggregate = self._get(cls, ident)
            except (HazardNotFound, UnknownGrid, UnknownUnit, UnknownPerson):
                return None
        assert isinstance(aggregate, cls)
        uow.aggregates[subject] = aggregate
        return aggregate

    def _discovered(self, cmd: c.Discover, uow: _UnitOfWork) -> bool:
        """Whether the hazard a `discover` names exists already, as `_load` would find it.

        The store is not read when nothing else would depend on the answer: the new case's
        first event then goes to the store's primary key, which refuses a taken id (the
        batch is then decided again command by command and the discover is refused as
        `hazard_already_exists` by `_after_failed_commit`, as it would have been here). It is read
        when the caller expects a version (the refusal must be `hazard_already_exists`, not a
        conflict), when deciding would seal a tipster in the vault (a write), and for the
        next batches after a taken id was met (a file applied twice), so that such input
        is refused by reads rather than by failed transactions.
        """
        subject = cmd.subject
        aggregate = uow.aggregates.get(subject)
        if aggregate is None and uow.known is not None:
            aggregate = uow.known.get(subject)
            uow.cached = uow.cached or aggregate is not None
        if aggregate is None and uow.pending is not None:
            aggregate = uow.pending.aggregates.get(subject)
        if aggregate is not None:
            uow.aggregates[subject] = aggregate
            return True
        seals = cmd.source == "public_tip" and bool(cmd.reporter) and self.vault is not None
        if uow.authority.expected_version is None and not seals and not self._read_discovers:
            return False
        return self._load(Hazard, cmd.hazard_id, uow) is not None

    def _require(self, cls: type[A], ident: str, uow: _UnitOfWork) -> A:
        aggregate = self._load(cls, ident, uow)
        if aggregate is None:
            raise _not_found(Subject(_KIND_OF[cls], ident))
        return aggregate

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the engine's clock must return aware date-times")
        return now
