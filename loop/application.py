"""The service layer: an eventsourcing Application that takes commands of the contract.

It loads cases, lets the aggregate decide, and saves the new events, together with the results of
idempotent submissions, in one transaction; many commands may share a transaction (bulk loads).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import orjson
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, PersistenceError

from loop import commands as c
from loop.errors import (
    ConcurrencyConflict,
    HazardAlreadyExists,
    HazardLoopError,
    HazardNotFound,
    IdempotencyKeyReused,
    InvalidDuplicate,
    StoreError,
)
from loop.hazard import Context, Hazard, hazard_uuid
from loop.policy import Policy, WorkCalendar

__all__ = ["HazardLoop", "IdempotencyRecorder", "Result"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The engine's default clock."""
    return datetime.now(UTC)


@runtime_checkable
class IdempotencyRecorder(Protocol):
    """A recorder that keeps the first result of each idempotency key in the events' transaction.

    `insert_events(..., idempotency=[(key, fingerprint, result_json), ...])` stores the rows with
    the events, atomically; `select_idempotency(key)` returns `(fingerprint, result_json)`.
    """

    def select_idempotency(self, key: str) -> tuple[str, bytes] | None: ...


@dataclass
class Result:
    """What one command came to: the event it recorded, or the error that refused it."""

    ok: bool
    hazard_id: str | None
    event: str | None = None
    version: int | None = None
    status: str | None = None
    due: datetime | None = None
    replayed: bool = False
    error: HazardLoopError | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, line: int | None = None) -> dict[str, Any]:
        """The result in the contract's JSON shape."""
        out: dict[str, Any] = {"ok": self.ok}
        if line is not None:
            out["line"] = line
        out["hazard_id"] = self.hazard_id
        if self.ok:
            out["event"] = self.event
            out["version"] = self.version
            out["status"] = self.status
            out["due"] = self.due.isoformat() if self.due else None
            if self.replayed:
                out["replayed"] = True
        else:
            assert self.error is not None
            out["error"] = self.error.to_dict()
        return out

    @classmethod
    def failed(cls, hazard_id: str | None, error: HazardLoopError) -> Result:
        return cls(ok=False, hazard_id=hazard_id, error=error)

    def stored_form(self) -> bytes:
        """The result as kept for an idempotency key."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_stored(cls, data: bytes) -> Result:
        d = orjson.loads(data)
        due = datetime.fromisoformat(d["due"]) if d.get("due") else None
        return cls(
            ok=True,
            hazard_id=d["hazard_id"],
            event=d["event"],
            version=d["version"],
            status=d["status"],
            due=due,
            replayed=True,
        )


class _UnitOfWork:
    """The cases touched by one transaction, and the idempotency rows to store with them."""

    def __init__(self, known: OrderedDict[str, Hazard] | None = None) -> None:
        self.hazards: dict[str, Hazard] = {}
        self.known = known
        self.keys: dict[str, tuple[str, bytes]] = {}
        self.rows: list[tuple[str, str, bytes]] = []

    def dirty(self) -> list[Hazard]:
        return [h for h in self.hazards.values() if h.pending_events]


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

    # ------------------------------------------------------------------ reads

    def get_hazard(self, hazard_id: str, version: int | None = None) -> Hazard:
        """The case as it stands now (or at `version`); HazardNotFound if never discovered."""
        try:
            hazard: object = self.repository.get(hazard_uuid(hazard_id), version=version)
        except AggregateNotFoundError:
            raise HazardNotFound(f"no hazard {hazard_id!r}", hazard_id=hazard_id) from None
        except PersistenceError as exc:
            raise StoreError(f"cannot read hazard {hazard_id!r}: {exc}") from exc
        assert isinstance(hazard, Hazard)
        return hazard

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
        try:
            return bool(self.recorder.select_events(hazard_uuid(hazard_id), limit=1))
        except PersistenceError as exc:
            raise StoreError(f"cannot read the event store: {exc}") from exc

    # ----------------------------------------------------------------- writes

    def handle(self, command: c.CommandBase) -> Result:
        """Apply one command in its own transaction; raise the error that refuses it."""
        result = next(self.handle_many([command], batch_size=1))
        if result.error is not None:
            raise result.error
        return result

    def handle_many(
        self,
        items: Iterable[c.CommandBase | HazardLoopError],
        *,
        batch_size: int = 500,
        cache_size: int = 20_000,
    ) -> Iterator[Result]:
        """Apply commands in order, `batch_size` to a transaction; yield one Result each.

        An item that is already an error (a line that did not parse) yields a failed Result and
        changes nothing. A refused command changes nothing; the others in its batch still apply.
        If a batch's transaction fails (another writer got there first), the batch is applied
        again one command per transaction, on fresh state, so each command gets its own verdict.
        """
        known: OrderedDict[str, Hazard] = OrderedDict()
        batch: list[c.CommandBase | HazardLoopError] = []
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                yield from self._run_batch(batch, known, cache_size)
                batch = []
        if batch:
            yield from self._run_batch(batch, known, cache_size)

    def _run_batch(
        self,
        batch: Sequence[c.CommandBase | HazardLoopError],
        known: OrderedDict[str, Hazard],
        cache_size: int,
    ) -> list[Result]:
        uow = _UnitOfWork(known)
        results = [self._execute(item, uow) for item in batch]
        try:
            self._commit(uow)
        except (ConcurrencyConflict, StoreError) as exc:
            known.clear()
            if len(batch) == 1:
                item = batch[0]
                assert isinstance(item, c.CommandBase)
                return [self._after_failed_commit(item, exc)]
            return [r for item in batch for r in self._run_batch([item], known, cache_size)]
        for hazard in uow.hazards.values():
            known[hazard.hazard_id] = hazard
            known.move_to_end(hazard.hazard_id)
        while len(known) > cache_size:
            known.popitem(last=False)
        return results

    def _after_failed_commit(self, cmd: c.CommandBase, exc: HazardLoopError) -> Result:
        """Name the real reason a single command's transaction failed."""
        if isinstance(exc, ConcurrencyConflict):
            if cmd.idempotency_key:
                stored = self._select_idempotency(cmd.idempotency_key)
                if stored is not None:
                    return self._replay(cmd, stored)
            if isinstance(cmd, c.Discover) and self.exists(cmd.hazard_id):
                return Result.failed(
                    cmd.hazard_id,
                    HazardAlreadyExists(
                        f"hazard {cmd.hazard_id!r} has already been discovered",
                        hazard_id=cmd.hazard_id,
                    ),
                )
        return Result.failed(cmd.hazard_id, exc)

    def _commit(self, uow: _UnitOfWork) -> None:
        dirty = uow.dirty()
        if not dirty:
            return
        kwargs: dict[str, Any] = {}
        if uow.rows:
            kwargs["idempotency"] = uow.rows
        try:
            self.save(*dirty, **kwargs)
        except IntegrityError as exc:
            for hazard in dirty:
                hazard.collect_events()  # drop what was not stored
            raise ConcurrencyConflict(
                "another writer recorded a step on the same case first; reload and retry",
                hazard_ids=[h.hazard_id for h in dirty][:20],
            ) from exc
        except PersistenceError as exc:
            for hazard in dirty:
                hazard.collect_events()
            raise StoreError(f"cannot write to the event store: {exc}") from exc

    def _execute(self, item: c.CommandBase | HazardLoopError, uow: _UnitOfWork) -> Result:
        if isinstance(item, HazardLoopError):
            return Result.failed(item.details.get("hazard_id"), item)
        cmd = item
        started = time.perf_counter()
        try:
            result = self._decide(cmd, uow)
        except HazardLoopError as exc:
            result = Result.failed(cmd.hazard_id, exc)
        result.extra["command"] = cmd.command
        result.extra["actor"] = cmd.actor
        result.extra["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _decide(self, cmd: c.CommandBase, uow: _UnitOfWork) -> Result:
        fp: str | None = None
        if cmd.idempotency_key:
            fp = c.fingerprint(cmd)
            stored = uow.keys.get(cmd.idempotency_key) or self._select_idempotency(
                cmd.idempotency_key
            )
            if stored is not None:
                return self._replay(cmd, stored)
        ctx = Context(now=self._now(), policy=self.policy, calendar=self.calendar)
        if isinstance(cmd, c.Discover):
            if self._load(cmd.hazard_id, uow) is not None:
                raise HazardAlreadyExists(
                    f"hazard {cmd.hazard_id!r} has already been discovered",
                    hazard_id=cmd.hazard_id,
                )
            hazard = Hazard.discover(cmd, ctx)
            uow.hazards[cmd.hazard_id] = hazard
            event = "Discovered"
        else:
            loaded = self._load(cmd.hazard_id, uow)
            if loaded is None:
                raise HazardNotFound(f"no hazard {cmd.hazard_id!r}", hazard_id=cmd.hazard_id)
            hazard = loaded
            if isinstance(cmd, c.Reject) and cmd.duplicate_of not in (None, cmd.hazard_id):
                assert cmd.duplicate_of is not None
                if self._load(cmd.duplicate_of, uow) is None:
                    raise InvalidDuplicate(
                        f"`duplicate_of` names no known hazard: {cmd.duplicate_of!r}",
                        duplicate_of=cmd.duplicate_of,
                    )
            event = hazard.execute(cmd, ctx)
        result = Result(
            ok=True,
            hazard_id=cmd.hazard_id,
            event=event,
            version=hazard.version,
            status=hazard.status.value,
            due=hazard.due,
        )
        if cmd.idempotency_key and fp is not None:
            row = (fp, result.stored_form())
            uow.keys[cmd.idempotency_key] = row
            uow.rows.append((cmd.idempotency_key, *row))
        return result

    def _replay(self, cmd: c.CommandBase, stored: tuple[str, bytes]) -> Result:
        fp, data = stored
        if fp != c.fingerprint(cmd):
            raise IdempotencyKeyReused(
                f"idempotency key {cmd.idempotency_key!r} was first used for a different command",
                idempotency_key=cmd.idempotency_key,
            )
        return Result.from_stored(data)

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

    def _load(self, hazard_id: str, uow: _UnitOfWork) -> Hazard | None:
        hazard = uow.hazards.get(hazard_id)
        if hazard is not None:
            return hazard
        if uow.known is not None:
            hazard = uow.known.get(hazard_id)
        if hazard is None:
            try:
                hazard = self.get_hazard(hazard_id)
            except HazardNotFound:
                return None
        uow.hazards[hazard_id] = hazard
        return hazard

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the engine's clock must return aware date-times")
        return now
