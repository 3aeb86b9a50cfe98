"""The organisation: grids, units and people, and who held each post of a grid's chain, when.

Event-sourced like hazards: `Grid`, `Unit` and `Person` are aggregates whose ids are uuid5 of the
client's code (each kind in its own namespace, so a grid and a hazard may share a code). A grid's
events record who was appointed to which post of its chain of responsibility and when they left
it, in business time, so accountability for a step can go to whoever held the post *then*.

Rules that need one aggregate are checked here; rules that need two (the parent grid exists,
the person is registered) are checked by the service, which loads both.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate

from loop import commands as c
from loop.errors import (
    AlreadyPostHolder,
    AtBeforePrevious,
    AtInFuture,
    BadParent,
    NotPostHolder,
)

__all__ = [
    "LEVELS",
    "PARENT_LEVEL",
    "POSTS",
    "Grid",
    "Person",
    "Unit",
    "grid_uuid",
    "person_uuid",
    "unit_uuid",
]

#: The posts of a grid's chain of responsibility, in order of the chain (the contract's `Post`).
POSTS: tuple[str, ...] = c.POSTS

#: The three levels of grid, top down: 区 (directly managed), 街道/镇 (basic), 社区/村 (micro).
LEVELS: tuple[str, ...] = c.LEVELS

#: The level a grid's parent must have (None: the level has no parent).
PARENT_LEVEL: dict[str, str | None] = {
    "district": None,
    "street": "district",
    "community": "street",
}

#: Namespaces of aggregate ids. Changing one orphans every aggregate of its kind.
GRID_NAMESPACE = uuid.UUID("0c7d6f0e-3b1a-4e55-8f0b-1d2c3a4b5e61")
UNIT_NAMESPACE = uuid.UUID("6a1f9c2d-8e47-4b3a-9d05-7e6f5a4b3c21")
PERSON_NAMESPACE = uuid.UUID("b93e2a10-4c5d-4f6e-8a7b-2c1d0e9f8a37")

#: How far a command's business time may run ahead of the engine's clock (as for hazards).
CLOCK_SKEW = timedelta(minutes=5)


def grid_uuid(code: str) -> uuid.UUID:
    """The aggregate id of a grid code."""
    return uuid.uuid5(GRID_NAMESPACE, code)


def unit_uuid(code: str) -> uuid.UUID:
    """The aggregate id of a unit code."""
    return uuid.uuid5(UNIT_NAMESPACE, code)


def person_uuid(person: str) -> uuid.UUID:
    """The aggregate id of a person id."""
    return uuid.uuid5(PERSON_NAMESPACE, person)


def _business_time(cmd: c.CommandBase, now: datetime) -> datetime:
    at = cmd.at if cmd.at is not None else now
    if at > now + CLOCK_SKEW:
        raise AtInFuture(
            f"`at` {at.isoformat()} lies ahead of the engine's clock ({now.isoformat()})",
            at=at.isoformat(),
            now=now.isoformat(),
        )
    return at


class _Event(Aggregate.Event):
    """Every organisation event: business time `at` and the actor; `timestamp` is record time."""

    at: datetime
    actor: str
    idempotency_key: str | None


class Grid(Aggregate):
    """A grid (网格) of one of the three levels, and the chain of people responsible for it."""

    code: str
    name: str
    level: str
    parent: str | None
    established_at: datetime
    holders: dict[str, dict[str, Any]]  # post -> {"person", "from_at"} while held
    tenures: list[dict[str, Any]]  # every tenure: post, person, from_at, to_at (None: held)
    last_at: datetime

    def __init__(self) -> None:
        """A shell: `Established.apply` assigns the state (the annotations above are its types)."""

    # ----------------------------------------------------------------- events

    class Event(_Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Grid)
            aggregate.last_at = self.at
            self.apply_to(aggregate)

        def apply_to(self, grid: Grid) -> None:
            """Assign the state this event stands for."""

    class Established(Event, Aggregate.Created):
        code: str
        name: str
        level: str
        parent: str | None

        def apply_to(self, grid: Grid) -> None:
            grid.code = self.code
            grid.name = self.name
            grid.level = self.level
            grid.parent = self.parent
            grid.established_at = self.at
            grid.holders = {}
            grid.tenures = []

    class Appointed(Event):
        post: str
        person: str
        replaces: str | None
        note: str | None

        def apply_to(self, grid: Grid) -> None:
            if self.replaces is not None:
                grid._end_tenure(self.post, self.replaces, self.at)
            grid.holders = {**grid.holders, self.post: {"person": self.person, "from_at": self.at}}
            grid.tenures = [
                *grid.tenures,
                {"post": self.post, "person": self.person, "from_at": self.at, "to_at": None},
            ]

    class Relieved(Event):
        post: str
        person: str
        note: str | None

        def apply_to(self, grid: Grid) -> None:
            grid._end_tenure(self.post, self.person, self.at)
            grid.holders = {k: v for k, v in grid.holders.items() if k != self.post}

    def _end_tenure(self, post: str, person: str, at: datetime) -> None:
        self.tenures = [
            {**t, "to_at": at}
            if t["post"] == post and t["person"] == person and t["to_at"] is None
            else t
            for t in self.tenures
        ]

    # ---------------------------------------------------------------- queries

    def holder(self, post: str) -> str | None:
        """Who holds `post` now (None: vacant)."""
        held = self.holders.get(post)
        return None if held is None else str(held["person"])

    def holders_at(self, moment: datetime) -> dict[str, str]:
        """post -> person as held at `moment` (a tenure runs from `from_at` up to `to_at`)."""
        return {
            t["post"]: t["person"]
            for t in self.tenures
            if t["from_at"] <= moment and (t["to_at"] is None or t["to_at"] > moment)
        }

    # --------------------------------------------------------------- commands

    @classmethod
    def establish(cls, cmd: c.EstablishGrid, now: datetime, parent_level: str | None) -> Grid:
        """Establish a grid; `parent_level` is the level of `cmd.parent` (the service loads it)."""
        at = _business_time(cmd, now)
        wanted = PARENT_LEVEL[cmd.level]
        if cmd.parent is None and cmd.level == "community":
            raise BadParent(
                f"a community grid needs a parent street grid: give `parent` for {cmd.grid!r}",
                grid=cmd.grid,
                level=cmd.level,
                parent=None,
            )
        if cmd.parent is not None and (
            cmd.parent == cmd.grid or wanted is None or parent_level != wanted
        ):
            if cmd.parent == cmd.grid:
                problem = f"grid {cmd.grid!r} cannot be its own parent"
            elif wanted is None:
                problem = f"a district grid has no parent; drop `parent` {cmd.parent!r}"
            else:
                problem = (
                    f"the parent of a {cmd.level} grid is a {wanted} grid, "
                    f"and {cmd.parent!r} is a {parent_level} grid"
                )
            raise BadParent(
                problem,
                grid=cmd.grid,
                level=cmd.level,
                parent=cmd.parent,
                parent_level=parent_level,
            )
        return cls._create(
            cls.Established,
            id=grid_uuid(cmd.grid),
            timestamp=now,
            at=at,
            actor=cmd.actor,
            idempotency_key=cmd.idempotency_key,
            code=cmd.grid,
            name=cmd.name,
            level=cmd.level,
            parent=cmd.parent,
        )

    def _at(self, cmd: c.CommandBase, now: datetime) -> datetime:
        at = _business_time(cmd, now)
        if cmd.at is None and at < self.last_at:
            at = self.last_at  # defaulted to "now", but another writer's clock ran ahead
        if at < self.last_at:
            raise AtBeforePrevious(
                f"`at` {at.isoformat()} is earlier than grid {self.code!r}'s latest change "
                f"({self.last_at.isoformat()})",
                at=at.isoformat(),
                latest=self.last_at.isoformat(),
            )
        return at

    def appoint(self, cmd: c.Appoint, now: datetime) -> None:
        """Appoint a person to a post from `at`; whoever held it leaves it then (`replaces`)."""
        at = self._at(cmd, now)
        current = self.holder(cmd.post)
        if current == cmd.person:
            raise AlreadyPostHolder(
                f"{cmd.person!r} already holds {cmd.post} of grid {self.code!r}",
                grid=self.code,
                post=cmd.post,
                person=cmd.person,
            )
        self.trigger_event(
            self.Appointed,
            timestamp=now,
            at=at,
            actor=cmd.actor,
            idempotency_key=cmd.idempotency_key,
            post=cmd.post,
            person=cmd.person,
            replaces=current,
            note=cmd.note,
        )

    def relieve(self, cmd: c.Relieve, now: datetime) -> None:
        """The holder of a post leaves it at `at`; the post stands vacant until an appointment."""
        at = self._at(cmd, now)
        current = self.holder(cmd.post)
        if current != cmd.person:
            raise NotPostHolder(
                f"{cmd.person!r} does not hold {cmd.post} of grid {self.code!r}"
                + (f" ({current!r} does)" if current else " (it is vacant)"),
                grid=self.code,
                post=cmd.post,
                person=cmd.person,
                holder=current,
            )
        self.trigger_event(
            self.Relieved,
            timestamp=now,
            at=at,
            actor=cmd.actor,
            idempotency_key=cmd.idempotency_key,
            post=cmd.post,
            person=cmd.person,
            note=cmd.note,
        )

    def to_state(self) -> dict[str, Any]:
        """The current state as plain data."""
        return {
            "code": self.code,
            "name": self.name,
            "level": self.level,
            "parent": self.parent,
            "established_at": self.established_at,
            "holders": {p: self.holders[p] for p in POSTS if p in self.holders},
            "tenures": self.tenures,
            "version": self.version,
            "last_at": self.last_at,
        }


class Unit(Aggregate):
    """A unit that takes responsibility for rectification: a department, office or enterprise."""

    code: str
    name: str
    grid: str
    kind: str | None
    registered_at: datetime
    last_at: datetime

    def __init__(self) -> None:
        """A shell: `Registered.apply` assigns the state."""

    class Event(_Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Unit)
            aggregate.last_at = self.at
            self.apply_to(aggregate)

        def apply_to(self, unit: Unit) -> None:
            """Assign the state this event stands for."""

    class Registered(Event, Aggregate.Created):
        code: str
        name: str
        grid: str
        kind: str | None

        def apply_to(self, unit: Unit) -> None:
            unit.code = self.code
            unit.name = self.name
            unit.grid = self.grid
            unit.kind = self.kind
            unit.registered_at = self.at

    @classmethod
    def register(cls, cmd: c.RegisterUnit, now: datetime) -> Unit:
        """Register a unit in a grid (the service checks that the grid exists)."""
        return cls._create(
            cls.Registered,
            id=unit_uuid(cmd.unit),
            timestamp=now,
            at=_business_time(cmd, now),
            actor=cmd.actor,
            idempotency_key=cmd.idempotency_key,
            code=cmd.unit,
            name=cmd.name,
            grid=cmd.grid,
            kind=cmd.kind,
        )

    def to_state(self) -> dict[str, Any]:
        """The current state as plain data."""
        return {
            "code": self.code,
            "name": self.name,
            "grid": self.grid,
            "kind": self.kind,
            "registered_at": self.registered_at,
            "version": self.version,
        }


class Person(Aggregate):
    """A person who may hold posts: a grid member, a unit's staff member, a leader."""

    code: str  # the client's person id
    name: str
    unit: str | None
    grid: str | None
    phone: str | None
    role: str | None
    registered_at: datetime
    last_at: datetime

    def __init__(self) -> None:
        """A shell: `Registered.apply` assigns the state."""

    class Event(_Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Person)
            aggregate.last_at = self.at
            self.apply_to(aggregate)

        def apply_to(self, person: Person) -> None:
            """Assign the state this event stands for."""

    class Registered(Event, Aggregate.Created):
        code: str  # the client's person id (each kind's first event names it `code`)
        name: str
        unit: str | None
        grid: str | None
        phone: str | None
        role: str | None

        def apply_to(self, person: Person) -> None:
            person.code = self.code
            person.name = self.name
            person.unit = self.unit
            person.grid = self.grid
            person.phone = self.phone
            person.role = self.role
            person.registered_at = self.at

    @classmethod
    def register(cls, cmd: c.RegisterPerson, now: datetime) -> Person:
        """Register a person (the service checks that their unit and grid exist)."""
        return cls._create(
            cls.Registered,
            id=person_uuid(cmd.person),
            timestamp=now,
            at=_business_time(cmd, now),
            actor=cmd.actor,
            idempotency_key=cmd.idempotency_key,
            code=cmd.person,
            name=cmd.name,
            unit=cmd.unit,
            grid=cmd.grid,
            phone=cmd.phone,
            role=cmd.role,
        )

    def to_state(self) -> dict[str, Any]:
        """The current state as plain data."""
        return {
            "person": self.code,
            "name": self.name,
            "unit": self.unit,
            "grid": self.grid,
            "phone": self.phone,
            "role": self.role,
            "registered_at": self.registered_at,
            "version": self.version,
        }
