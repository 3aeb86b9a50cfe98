"""The Hazard aggregate: one case going round the six-step closed loop, and its past-tense events.

Command methods check the rule (the transition table first), decide deadlines, then trigger one
event; the events' `apply` methods only assign state, so replaying never re-checks or reads a clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, Self

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from loop import commands as c
from loop.errors import (
    ApproverIsRequester,
    AtBeforePrevious,
    AtInFuture,
    CaseClosed,
    DueNotAfterStart,
    DueRequired,
    ExtensionNeedsHigherApprover,
    ExtensionNotLater,
    InvalidDuplicate,
    InvalidTransition,
    VerifierIsRectifier,
)
from loop.lifecycle import (
    HOLDING_STEP,
    Status,
    Transition,
    allowed_commands,
    find_transition,
)
from loop.policy import Deadline, Policy, WorkCalendar

__all__ = ["Context", "Erasure", "Hazard", "Sealer", "Vault", "hazard_uuid"]

#: Namespace of aggregate ids: uuid5(NAMESPACE, hazard_id). Changing it orphans every case.
NAMESPACE = uuid.UUID("5b0e3a4c-6f1d-4d52-9a7e-6c2b8f1e0d47")

#: How far a command's business time may run ahead of the engine's clock (device clocks drift).
CLOCK_SKEW = timedelta(minutes=5)


def hazard_uuid(hazard_id: str) -> uuid.UUID:
    """The aggregate id of a client's hazard id: `uuid.uuid5(NAMESPACE, hazard_id)`.

    The same arithmetic as `uuid.uuid5` (a test compares the two on generated ids), without
    the checks of `UUID.__init__`, which make up most of its 2.8 µs: one per `discover`.
    """
    digest = _sha1(_NAMESPACE_BYTES + hazard_id.encode("utf-8")).digest()
    value = (int.from_bytes(digest[:16], "big") & _KEEP) | _VERSION_5
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


_NAMESPACE_BYTES = NAMESPACE.bytes
_sha1 = hashlib.sha1
#: RFC 4122's variant (bits 62-63: 10) and version (bits 76-79: 5), as `UUID(version=5)` sets them.
_KEEP = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_VERSION_5 = (0x8000 << 48) | (5 << 76)


#: Seals a confidential value of a case (hazard_id, clear text) -> an opaque token. The domain
#: never holds the key: `adapters.tipsters` does, and can destroy it (docs/audit.md).
Sealer = Callable[[str, str], str]


@dataclass(frozen=True)
class Erasure:
    """What erasing a case's confidential values did.

    `erased`: this call destroyed a key (False when there was none: never sealed, or erased
    before). `final_on_disk`: the store's files no longer hold the key's old bytes; False when
    other connections still read an older snapshot that keeps them (erase again once they end).
    """

    erased: bool
    final_on_disk: bool


class Vault(Protocol):
    """Keeps confidential values of cases: seal, open (None once erased), erase for good."""

    def seal(self, hazard_id: str, text: str) -> str: ...

    def open(self, hazard_id: str, token: str) -> str | None: ...

    def erase(self, hazard_id: str) -> Erasure: ...

    def digest(self, text: str) -> str:
        """A keyed digest of a confidential value (the same for the same value), so that an
        idempotency fingerprint can tell a retry apart without holding a guessable hash of it."""
        ...


class Context(NamedTuple):
    """What a command method needs from outside the aggregate: the clock, the time rules, and
    the sealer that keeps a public tip's reporter confidential. (A named tuple: one is made
    for every command, and a frozen dataclass costs four times as much to make.)"""

    now: datetime
    policy: Policy
    calendar: WorkCalendar
    seal: Sealer | None = None


def _deadline_record(step: str, d: Deadline) -> dict[str, Any]:
    return {
        "step": step,
        "due": d.due,
        "limit": d.limit,
        "provisional": d.provisional,
        "policy_version": d.policy_version,
    }


class Hazard(Aggregate):
    """A work-safety hazard, from discovery to closure."""

    # State (assigned only by the events' apply methods).
    hazard_id: str
    grid: str
    category: str
    grade: str
    title: str
    description: str | None
    location: str | None
    source: str
    reporter: str
    reporter_sealed: bool
    evidence: list[dict[str, str]]
    fixed_on_spot: bool
    discovered_by: str
    discovered_at: datetime
    status: Status
    parked_from: Status | None
    parked_at: datetime | None
    unit: str | None
    person: str | None
    measures: str | None
    rectified_by: str | None
    rework_count: int
    extension_count: int
    #: Who approved each extension of the current step's deadline (reset when a step starts).
    extension_approvers: list[str]
    reopen_count: int
    deadline: dict[str, Any] | None
    deadlines: list[dict[str, Any]]
    escalations: list[dict[str, Any]]
    duplicate_of: str | None
    last_at: datetime

    def __init__(self) -> None:
        """A shell: `Discovered.apply` assigns the state (the annotations above are its types)."""

    # ----------------------------------------------------------------- events

    class Event(Aggregate.Event):
        """Every event: business time `at` (on site) and the actor; `timestamp` is record time."""

        at: datetime
        actor: str
        idempotency_key: str | None

        def _start_step(self, hazard: Hazard, deadline: dict[str, Any] | None) -> None:
            hazard.extension_approvers = []
            if deadline is None:
                hazard.deadline = None
                return
            hazard.deadline = {
                **deadline,
                "started_at": self.at,
                "original_due": deadline["due"],
                "extensions": 0,
            }
            hazard.deadlines.append(
                {**deadline, "decided_at": self.at, "event": type(self).__name__}
            )

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Hazard)
            aggregate.last_at = self.at
            self.apply_to(aggregate)

        def apply_to(self, hazard: Hazard) -> None:
            """Assign the state this event stands for."""

    class Discovered(Event, Aggregate.Created):
        """v2: `reporter_sealed` — a public tip's reporter is stored sealed (see `Context.seal`)."""

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v1 events stored every reporter in clear."""
            state["reporter_sealed"] = False

        hazard_id: str
        grid: str
        category: str
        grade: str
        title: str
        description: str | None
        location: str | None
        source: str
        reporter: str
        reporter_sealed: bool
        evidence: list[dict[str, str]]
        fixed_on_spot: bool
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.hazard_id = self.hazard_id
            hazard.grid = self.grid
            hazard.category = self.category
            hazard.grade = self.grade
            hazard.title = self.title
            hazard.description = self.description
            hazard.location = self.location
            hazard.source = self.source
            hazard.reporter = self.reporter
            hazard.reporter_sealed = self.reporter_sealed
            hazard.evidence = list(self.evidence)
            hazard.fixed_on_spot = self.fixed_on_spot
            hazard.discovered_by = self.actor
            hazard.discovered_at = self.at
            hazard.status = Status.RECTIFIED if self.fixed_on_spot else Status.DISCOVERED
            hazard.parked_from = None
            hazard.parked_at = None
            hazard.unit = None
            hazard.person = None
            hazard.measures = None
            hazard.rectified_by = self.actor if self.fixed_on_spot else None
            hazard.rework_count = 0
            hazard.extension_count = 0
            hazard.reopen_count = 0
            hazard.deadlines = []
            hazard.escalations = []
            hazard.duplicate_of = None
            self._start_step(hazard, self.deadline)

    class Reported(Event):
        note: str | None
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.REPORTED
            self._start_step(hazard, self.deadline)

    class Assigned(Event):
        unit: str
        person: str
        measures: str | None
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.ASSIGNED
            hazard.unit = self.unit
            hazard.person = self.person
            hazard.measures = self.measures
            self._start_step(hazard, self.deadline)

    class Rectified(Event):
        note: str
        evidence: list[dict[str, str]]
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.RECTIFIED
            hazard.rectified_by = self.actor
            hazard.evidence = [*hazard.evidence, *self.evidence]
            self._start_step(hazard, self.deadline)

    class Verified(Event):
        note: str | None
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.VERIFIED
            self._start_step(hazard, self.deadline)

    class VerificationFailed(Event):
        note: str | None
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            # Never assigned (fixed on the spot): back to the centre to assign the rework.
            hazard.status = Status.ASSIGNED if hazard.unit is not None else Status.REPORTED
            hazard.rework_count += 1
            self._start_step(hazard, self.deadline)

    class Closed(Event):
        note: str | None

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.CLOSED
            hazard.deadline = None

    class Rejected(Event):
        reason: str
        duplicate_of: str | None

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.REJECTED
            hazard.duplicate_of = self.duplicate_of
            hazard.deadline = None

    class Returned(Event):
        reason: str
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.REPORTED
            hazard.unit = None
            hazard.person = None
            self._start_step(hazard, self.deadline)

    class Reassigned(Event):
        unit: str
        person: str
        reason: str
        previous_unit: str | None
        previous_person: str | None

        def apply_to(self, hazard: Hazard) -> None:
            hazard.unit = self.unit
            hazard.person = self.person

    class Extended(Event):
        reason: str
        approved_by: str
        previous_due: datetime
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            assert hazard.deadline is not None
            hazard.extension_count += 1
            hazard.extension_approvers = [*hazard.extension_approvers, self.approved_by]
            current = dict(hazard.deadline)
            current.update(self.deadline)
            current["extensions"] = int(current.get("extensions", 0)) + 1
            hazard.deadline = current
            hazard.deadlines.append({**self.deadline, "decided_at": self.at, "event": "Extended"})

    class Parked(Event):
        reason: str
        approved_by: str

        def apply_to(self, hazard: Hazard) -> None:
            hazard.parked_from = hazard.status
            hazard.parked_at = self.at
            hazard.status = Status.PARKED

    class Resumed(Event):
        note: str | None
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            assert hazard.parked_from is not None
            hazard.status = hazard.parked_from
            hazard.parked_from = None
            hazard.parked_at = None
            current = dict(hazard.deadline or {})
            current.update(self.deadline)
            hazard.deadline = current
            hazard.deadlines.append({**self.deadline, "decided_at": self.at, "event": "Resumed"})

    class Reopened(Event):
        reason: str
        deadline: dict[str, Any]

        def apply_to(self, hazard: Hazard) -> None:
            hazard.status = Status.REPORTED if hazard.status == Status.CLOSED else Status.DISCOVERED
            hazard.reopen_count += 1
            hazard.duplicate_of = None
            if hazard.status == Status.REPORTED:
                hazard.unit = None
                hazard.person = None
            self._start_step(hazard, self.deadline)

    class Regraded(Event):
        grade: str
        previous_grade: str
        reason: str

        def apply_to(self, hazard: Hazard) -> None:
            hazard.grade = self.grade

    class Escalated(Event):
        level: str
        note: str | None
        step: str | None
        due: datetime | None

        def apply_to(self, hazard: Hazard) -> None:
            hazard.escalations = [
                *hazard.escalations,
                {"level": self.level, "at": self.at, "step": self.step, "due": self.due},
            ]

    # ---------------------------------------------------------------- queries

    @property
    def step(self) -> str | None:
        """The step that holds the ball, or None when the case is closed, rejected or parked."""
        return HOLDING_STEP.get(self.status)

    @property
    def due(self) -> datetime | None:
        """The deadline of the current step (after extensions and pauses), if one runs."""
        if self.deadline is None or self.status not in HOLDING_STEP:
            return None
        due = self.deadline["due"]
        assert isinstance(due, datetime)
        return due

    @property
    def holder(self) -> str | None:
        """Who holds the ball: the discoverer, the centre, the unit, the verifier."""
        step = self.step
        if step == "report":
            return self.discovered_by
        if step in ("assign", "close"):
            return "command_centre"
        if step == "rectify":
            return self.unit
        if step == "verify":
            # 谁发现谁督促 — but whoever fixed it on the spot cannot pass their own fix.
            if self.rectified_by == self.discovered_by:
                return "command_centre"
            return self.discovered_by
        return None

    # --------------------------------------------------------------- commands

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        """eventsourcing's `trigger_event`, the same event made without its generic steps.

        The library's version copies the arguments, builds the frozen dataclass through its
        generated `__init__` (one `object.__setattr__` per field) and `__post_init__`, then
        `mutate` checks the id and version it has just set: about a tenth of a bulk command's
        cost. Here the event's fields are set in the dataclass's own order (its state, and so
        its stored bytes, are the same: `tests/integration/test_lean_events.py`), applied, and
        counted as `mutate` counts them. Anything but exactly the event's fields is refused
        with the library's `TypeError`.
        """
        # The library's attributes behind its `id`, `version` and `modified_on` properties,
        # read and set directly (as its own `__base_init__` does).
        kwargs["originator_id"] = self._id
        kwargs["originator_version"] = next_version = self._version + 1
        event = _new_event(event_class, kwargs)
        event.apply(self)
        self._version = next_version
        self._modified_on = event.timestamp
        self._pending_events.append(event)

    @classmethod
    def _create(cls, event_class: type[Any], *, id: Any = None, **kwargs: Any) -> Self:
        """eventsourcing's `_create` of a case from its `Discovered` event, made as
        `trigger_event` makes the others (the same event and the same aggregate: the library's
        base initialiser, the shell `__init__`, the event's `apply`). Anything else, the
        library's own."""
        if cls is not Hazard or event_class is not Hazard.Discovered or type(id) is not uuid.UUID:
            return super()._create(event_class, id=id, **kwargs)
        kwargs["originator_topic"] = _HAZARD_TOPIC
        kwargs["originator_id"] = id
        kwargs["originator_version"] = cls.INITIAL_VERSION
        event = _new_event(event_class, kwargs)
        hazard = object.__new__(cls)
        hazard.__base_init__(id, cls.INITIAL_VERSION, event.timestamp)
        hazard.__init__()  # type: ignore[misc]
        event.apply(hazard)
        hazard._pending_events.append(event)
        return hazard

    @staticmethod
    def create_id(hazard_id: str) -> uuid.UUID:
        return hazard_uuid(hazard_id)

    @classmethod
    def discover(cls, cmd: c.Discover, ctx: Context) -> Hazard:
        """Record a newly found hazard; one fixed on the spot goes straight to verification."""
        at = _business_time(cmd, ctx)
        step = "verify" if cmd.fixed_on_spot else "report"
        deadline = ctx.policy.deadline(cmd.grade, step, at, ctx.calendar)
        reporter, sealed = cmd.reporter or cmd.actor, False
        if cmd.source == "public_tip" and cmd.reporter and ctx.seal is not None:
            reporter, sealed = ctx.seal(cmd.hazard_id, cmd.reporter), True
        return cls._create(
            cls.Discovered,
            id=hazard_uuid(cmd.hazard_id),
            timestamp=ctx.now,
            at=at,
            actor=cmd.actor,
            idempotency_key=cmd.idempotency_key,
            hazard_id=cmd.hazard_id,
            grid=cmd.grid,
            category=cmd.category,
            grade=cmd.grade,
            title=cmd.title,
            description=cmd.description,
            location=cmd.location,
            source=cmd.source,
            reporter=reporter,
            reporter_sealed=sealed,
            evidence=[e.model_dump() for e in cmd.evidence],
            fixed_on_spot=cmd.fixed_on_spot,
            deadline=_deadline_record(step, deadline),
        )

    def execute(self, cmd: c.CommandBase, ctx: Context) -> str:
        """Apply any command but `discover`; return the name of the event it recorded."""
        # (The name first: see HazardLoop._decide_hazard.)
        if cmd.command == "discover" and isinstance(cmd, c.Discover):
            raise InvalidTransition(
                f"hazard {self.hazard_id!r} has already been discovered",
                hazard_id=self.hazard_id,
                status=self.status.value,
                command="discover",
            )
        condition = ""
        if cmd.command == "verify" and isinstance(cmd, c.Verify):
            condition = "passed=true" if cmd.passed else "passed=false"
            if not cmd.passed and self.unit is None:
                condition += ",never_assigned"
        row = self._check(cmd.command, condition)
        at = _business_time(cmd, ctx)
        if cmd.at is None and at < self.last_at:
            # Defaulted to "now", but another writer's clock ran slightly ahead.
            at = self.last_at
        if at < self.last_at:
            raise AtBeforePrevious(
                f"`at` {at.isoformat()} is earlier than the case's latest step "
                f"({self.last_at.isoformat()})",
                at=at.isoformat(),
                latest=self.last_at.isoformat(),
            )
        handler = getattr(self, "_" + cmd.command)
        common = {
            "timestamp": ctx.now,
            "at": at,
            "actor": cmd.actor,
            "idempotency_key": cmd.idempotency_key,
        }
        handler(cmd, ctx, at, common)
        return row.event

    def _check(self, command: str, condition: str) -> Transition:
        row = find_transition(self.status, command, condition)
        if row is not None:
            return row
        allowed = allowed_commands(self.status)
        if self.status in (Status.CLOSED, Status.REJECTED):
            raise CaseClosed(
                f"hazard {self.hazard_id!r} is {self.status.value}: it takes nothing but `reopen`",
                hazard_id=self.hazard_id,
                status=self.status.value,
                command=command,
                allowed=allowed,
            )
        raise InvalidTransition(
            f"cannot {command} hazard {self.hazard_id!r} while it is {self.status.value}; "
            f"allowed now: {', '.join(allowed)}",
            hazard_id=self.hazard_id,
            status=self.status.value,
            command=command,
            allowed=allowed,
        )

    def _policy_deadline(self, step: str, at: datetime, ctx: Context) -> dict[str, Any]:
        return _deadline_record(step, ctx.policy.deadline(self.grade, step, at, ctx.calendar))

    def _given_or_policy(
        self, step: str, due: datetime | None, at: datetime, ctx: Context
    ) -> dict[str, Any]:
        if due is None:
            try:
                return self._policy_deadline(step, at, ctx)
            except DueRequired as exc:
                raise DueRequired(
                    f"the policy sets the {step} limit of a {self.grade} hazard by plan: "
                    "give `due`",
                    hazard_id=self.hazard_id,
                    step=step,
                    grade=self.grade,
                ) from exc
        if due <= at:
            raise DueNotAfterStart(
                f"`due` {due.isoformat()} is not after the step's start {at.isoformat()}",
                due=due.isoformat(),
                at=at.isoformat(),
            )
        return _deadline_record(step, ctx.policy.given_deadline(due))

    def _report(self, cmd: c.Report, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        deadline = self._policy_deadline("assign", at, ctx)
        self.trigger_event(self.Reported, note=cmd.note, deadline=deadline, **common)

    def _assign(self, cmd: c.Assign, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        deadline = self._given_or_policy("rectify", cmd.due, at, ctx)
        self.trigger_event(
            self.Assigned,
            unit=cmd.unit,
            person=cmd.person,
            measures=cmd.measures,
            deadline=deadline,
            **common,
        )

    def _rectify(self, cmd: c.Rectify, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        deadline = self._policy_deadline("verify", at, ctx)
        self.trigger_event(
            self.Rectified,
            note=cmd.note,
            evidence=[e.model_dump() for e in cmd.evidence],
            deadline=deadline,
            **common,
        )

    def _verify(self, cmd: c.Verify, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        if cmd.passed:
            if cmd.actor == self.rectified_by:
                raise VerifierIsRectifier(
                    f"{cmd.actor!r} filed the rectification of {self.hazard_id!r} and cannot "
                    "pass its verification",
                    hazard_id=self.hazard_id,
                    actor=cmd.actor,
                )
            deadline = self._policy_deadline("close", at, ctx)
            self.trigger_event(self.Verified, note=cmd.note, deadline=deadline, **common)
        elif self.unit is None:
            if cmd.due is not None:
                raise InvalidTransition(
                    f"hazard {self.hazard_id!r} was fixed on the spot and never assigned: a "
                    "failed check sends it to the centre, which sets the deadline with `assign`",
                    hazard_id=self.hazard_id,
                    status=self.status.value,
                    command="verify",
                )
            deadline = self._policy_deadline("assign", at, ctx)
            self.trigger_event(self.VerificationFailed, note=cmd.note, deadline=deadline, **common)
        else:
            deadline = self._given_or_policy("rectify", cmd.due, at, ctx)
            self.trigger_event(self.VerificationFailed, note=cmd.note, deadline=deadline, **common)

    def _close(self, cmd: c.Close, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        self.trigger_event(self.Closed, note=cmd.note, **common)

    def _reject(self, cmd: c.Reject, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        if cmd.duplicate_of == self.hazard_id:
            raise InvalidDuplicate(
                f"hazard {self.hazard_id!r} cannot be a duplicate of itself",
                hazard_id=self.hazard_id,
            )
        self.trigger_event(
            self.Rejected, reason=cmd.reason, duplicate_of=cmd.duplicate_of, **common
        )

    def _return(self, cmd: c.Return, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        deadline = self._policy_deadline("assign", at, ctx)
        self.trigger_event(self.Returned, reason=cmd.reason, deadline=deadline, **common)

    def _reassign(
        self, cmd: c.Reassign, ctx: Context, at: datetime, common: dict[str, Any]
    ) -> None:
        if self.unit is None:
            raise InvalidTransition(
                f"hazard {self.hazard_id!r} has not been assigned yet: "
                + ("resume it, then `assign`" if self.status == Status.PARKED else "use `assign`"),
                hazard_id=self.hazard_id,
                status=self.status.value,
                command="reassign",
            )
        self.trigger_event(
            self.Reassigned,
            unit=cmd.unit,
            person=cmd.person,
            reason=cmd.reason,
            previous_unit=self.unit,
            previous_person=self.person,
            **common,
        )

    def _extend(self, cmd: c.Extend, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        if cmd.approved_by == cmd.actor:
            raise ApproverIsRequester(
                f"{cmd.actor!r} requested the extension and cannot approve it",
                hazard_id=self.hazard_id,
                actor=cmd.actor,
            )
        if cmd.approved_by in self.extension_approvers:
            step = self.deadline["step"] if self.deadline else None
            raise ExtensionNeedsHigherApprover(
                f"the deadline of this {step} step was extended before with the approval of "
                f"{cmd.approved_by!r}; a further extension needs a higher approver",
                hazard_id=self.hazard_id,
                approved_by=cmd.approved_by,
                earlier_approvers=list(self.extension_approvers),
            )
        current = self.due
        assert current is not None and self.deadline is not None
        if cmd.due <= current:
            raise ExtensionNotLater(
                f"the new deadline {cmd.due.isoformat()} is not later than the current one "
                f"{current.isoformat()}",
                due=cmd.due.isoformat(),
                current_due=current.isoformat(),
            )
        deadline = _deadline_record(self.deadline["step"], ctx.policy.given_deadline(cmd.due))
        self.trigger_event(
            self.Extended,
            reason=cmd.reason,
            approved_by=cmd.approved_by,
            previous_due=current,
            deadline=deadline,
            **common,
        )

    def _park(self, cmd: c.Park, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        if cmd.approved_by == cmd.actor:
            raise ApproverIsRequester(
                f"{cmd.actor!r} asked to park the case and cannot approve it",
                hazard_id=self.hazard_id,
                actor=cmd.actor,
            )
        self.trigger_event(self.Parked, reason=cmd.reason, approved_by=cmd.approved_by, **common)

    def _resume(self, cmd: c.Resume, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        assert self.deadline is not None and self.parked_at is not None
        current = Deadline(
            due=self.deadline["due"],
            limit=self.deadline["limit"],
            provisional=self.deadline["provisional"],
            policy_version=self.deadline["policy_version"],
        )
        shifted = ctx.policy.shift_for_pause(current, self.parked_at, at, ctx.calendar)
        deadline = _deadline_record(self.deadline["step"], shifted)
        self.trigger_event(self.Resumed, note=cmd.note, deadline=deadline, **common)

    def _reopen(self, cmd: c.Reopen, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        step = "assign" if self.status == Status.CLOSED else "report"
        deadline = self._policy_deadline(step, at, ctx)
        self.trigger_event(self.Reopened, reason=cmd.reason, deadline=deadline, **common)

    def _regrade(self, cmd: c.Regrade, ctx: Context, at: datetime, common: dict[str, Any]) -> None:
        if cmd.grade == self.grade:
            raise InvalidTransition(
                f"hazard {self.hazard_id!r} is already {self.grade}",
                hazard_id=self.hazard_id,
                status=self.status.value,
                command="regrade",
            )
        self.trigger_event(
            self.Regraded,
            grade=cmd.grade,
            previous_grade=self.grade,
            reason=cmd.reason,
            **common,
        )

    def _escalate(
        self, cmd: c.Escalate, ctx: Context, at: datetime, common: dict[str, Any]
    ) -> None:
        self.trigger_event(
            self.Escalated,
            level=cmd.level,
            note=cmd.note,
            step=self.step,
            due=self.due,
            **common,
        )

    # ------------------------------------------------------------------ views

    def to_state(self) -> dict[str, Any]:
        """The current state as plain data (what `show` prints)."""
        return {
            "hazard_id": self.hazard_id,
            "status": self.status.value,
            "step": self.step,
            "holder": self.holder,
            "due": self.due,
            "deadline": self.deadline,
            "grade": self.grade,
            "category": self.category,
            "grid": self.grid,
            "title": self.title,
            "description": self.description,
            "location": self.location,
            "source": self.source,
            "reporter": self.reporter,
            "reporter_sealed": self.reporter_sealed,
            "fixed_on_spot": self.fixed_on_spot,
            "discovered_by": self.discovered_by,
            "discovered_at": self.discovered_at,
            "unit": self.unit,
            "person": self.person,
            "measures": self.measures,
            "rectified_by": self.rectified_by,
            "parked_from": self.parked_from.value if self.parked_from else None,
            "parked_at": self.parked_at,
            "rework_count": self.rework_count,
            "extension_count": self.extension_count,
            "reopen_count": self.reopen_count,
            "duplicate_of": self.duplicate_of,
            "evidence": self.evidence,
            "escalations": self.escalations,
            "deadlines": self.deadlines,
            "version": self.version,
            "last_at": self.last_at,
        }


#: The case class's topic, as the library names it in a `Discovered` event.
_HAZARD_TOPIC = get_topic(Hazard)
#: Each event class's dataclass fields, in order (`Hazard.trigger_event`).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(event_class: type[Any]) -> tuple[str, ...]:
    """The fields of a Hazard event class, each of which must be given (none has a default)."""
    fields = dataclasses.fields(event_class)
    if not issubclass(event_class, Hazard.Event) or any(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in fields
    ):
        raise TypeError(f"{event_class} is not a Hazard event without defaults")
    names = _FIELD_NAMES[event_class] = tuple(f.name for f in fields)
    return names


def _new_event(event_class: type[Any], kwargs: dict[str, Any]) -> Any:
    """An event of `event_class` whose state is `kwargs` in the order of its fields, made
    without its dataclass `__init__`; the library's TypeError if they are not exactly its
    fields."""
    names = _FIELD_NAMES.get(event_class)
    if names is None:
        names = _field_names(event_class)
    event = object.__new__(event_class)
    event.__dict__.update(_exact_fields(event_class, names, kwargs))
    return event


def _exact_fields(event_class: type[Any], names: tuple[str, ...], kwargs: dict[str, Any]) -> Any:
    """The event's state from `kwargs`, in the order of its fields; the library's TypeError
    if they are not exactly its fields."""
    if len(kwargs) != len(names):
        raise TypeError(
            f"Can't construct event {event_class}: fields {sorted(kwargs)}, not {sorted(names)}"
        )
    try:
        return {name: kwargs[name] for name in names}
    except KeyError as missing:
        raise TypeError(f"Can't construct event {event_class}: no {missing}") from None


def _business_time(cmd: c.CommandBase, ctx: Context) -> datetime:
    at = cmd.at
    if at is None:
        return ctx.now
    if at > ctx.now + CLOCK_SKEW:
        raise AtInFuture(
            f"`at` {at.isoformat()} lies ahead of the engine's clock ({ctx.now.isoformat()})",
            at=at.isoformat(),
            now=ctx.now.isoformat(),
        )
    return at
