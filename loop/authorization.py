"""Who may do what: roles, grid scope, and one table that decides every command and every read.

Pure: a `Principal` (the authenticated actor, their roles, the grids they act in, their unit), a
command and the facts of the case it names go in; `Allowed` (naming the rule) or `Forbidden`
(naming the reason) comes out. The service applies it (`HazardLoop.handle(..., principal=...)`),
the HTTP API and the Python API apply it to reads; docs/integration.md shows the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loop import commands as c
from loop.errors import Forbidden

__all__ = [
    "CASE_READERS",
    "FEED_READERS",
    "GRID_SCOPED_ROLES",
    "NEEDS_APPROVER",
    "REPORT_READERS",
    "ROLES",
    "RULES",
    "TIPSTER_READERS",
    "WHERE",
    "Allowed",
    "CaseFacts",
    "Directory",
    "Principal",
    "authorize",
    "check_actor",
    "decide",
    "decide_case_read",
    "decide_feed",
    "decide_reports",
    "decide_tipster",
    "grid_in_scope",
]

#: Every role, what it is for (docs/integration.md renders this).
ROLES: dict[str, str] = {
    "grid_member": "网格员/巡查员: discovers and reports in their grids; verifies what their side "
    "found (谁发现谁督促)",
    "command_centre": "指挥中心: registers, assigns, reassigns, rejects, closes, reopens, "
    "regrades, escalates and resumes cases of their grids",
    "unit": "责任单位: rectifies, returns, asks for extensions and parking of cases assigned "
    "to its unit",
    "approver": "审批人: the one an extension or a parking in their grids may name as "
    "`approved_by`",
    "auditor": "审计: reads every case, report, history, dossier and the event feed; "
    "writes nothing",
    "tipster_officer": "举报受理: may see a public tip's confidential reporter",
    "admin": "组织管理: establishes grids, registers units and people, appoints and relieves "
    "post holders, in their grids",
    "subscriber": "an integrated system that reads the event feed",
}

#: Roles that act in a grid scope (a token of one of these names at least one grid pattern).
GRID_SCOPED_ROLES = frozenset({"grid_member", "command_centre", "approver", "admin"})

#: The conditions a rule may set, and what each means.
WHERE: dict[str, str] = {
    "grid": "the grid in question (the case's; `discover`'s `grid`; the organisation "
    "command's `grid`) is in their scope",
    "own_unit": "the case is assigned to their unit now",
    "discovering_side": "they discovered the case, or its grid is in their scope",
    "centre_holds": "the centre holds the verify step (the discoverer fixed it on the spot) "
    "and the case's grid is in their scope",
}

_CENTRE = ("command_centre", "grid")
_UNIT = ("unit", "own_unit")

#: command -> the (role, where) pairs that allow it; any one suffices. Nothing else is allowed.
RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "discover": (("grid_member", "grid"), _CENTRE),
    "report": (("grid_member", "discovering_side"), _CENTRE),
    "assign": (_CENTRE,),
    "rectify": (_UNIT,),
    "verify": (("grid_member", "discovering_side"), ("command_centre", "centre_holds")),
    "close": (_CENTRE,),
    "reject": (_CENTRE,),
    "return": (_UNIT,),
    "reassign": (_CENTRE,),
    "extend": (_CENTRE, _UNIT),
    "park": (_CENTRE, _UNIT),
    "resume": (_CENTRE,),
    "reopen": (_CENTRE,),
    "regrade": (_CENTRE,),
    "escalate": (_CENTRE,),
    "establish_grid": (("admin", "grid"),),
    "register_unit": (("admin", "grid"),),
    "register_person": (("admin", "grid"),),
    "appoint": (("admin", "grid"),),
    "relieve": (("admin", "grid"),),
}

#: Commands whose `approved_by` must name someone holding `approver` for the case's grid.
NEEDS_APPROVER = frozenset({"extend", "park"})

#: Roles that read a case of their scope (a unit reads its own cases; an auditor reads all).
CASE_READERS = frozenset({"grid_member", "command_centre", "approver"})
#: Roles that read the overdue and accountability reports (district-wide 通报).
REPORT_READERS = frozenset({"auditor", "command_centre", "approver"})
#: Roles that read the event feed.
FEED_READERS = frozenset({"auditor", "subscriber"})
#: Roles that may see a public tip's reporter.
TIPSTER_READERS = frozenset({"tipster_officer"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: the actor recorded on their events, their roles, grid scope and unit.

    `grids` are grid codes, `PREFIX*` patterns (`D01-S02-*`), or `*` for every grid.
    """

    actor: str
    roles: frozenset[str]
    grids: tuple[str, ...] = ()
    unit: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "grids", tuple(self.grids))
        unknown = sorted(self.roles - ROLES.keys())
        if unknown:
            raise ValueError(f"unknown roles {unknown}; the roles are: {', '.join(ROLES)}")

    def has(self, role: str) -> bool:
        """Whether they hold `role`."""
        return role in self.roles

    def covers(self, grid: str) -> bool:
        """Whether `grid` is in their scope."""
        return grid_in_scope(grid, self.grids)


def grid_in_scope(grid: str, patterns: Iterable[str]) -> bool:
    """Whether a grid code matches one of the scope patterns (`*`, `PREFIX*` or an exact code)."""
    for pattern in patterns:
        if pattern == "*" or pattern == grid:
            return True
        if pattern.endswith("*") and grid.startswith(pattern[:-1]):
            return True
    return False


class CaseFacts(Protocol):
    """What the rules need to know about a case (a `Hazard` has all of it)."""

    @property
    def grid(self) -> str: ...

    @property
    def unit(self) -> str | None: ...

    @property
    def discovered_by(self) -> str: ...

    @property
    def holder(self) -> str | None: ...

    @property
    def extension_approvers(self) -> Sequence[str]: ...


#: A grid's parent grid (None when it has none, or is not established).
ParentOf = Callable[[str], str | None]

#: Looks an actor up (e.g. among the issued API tokens): their principal, or None.
Directory = Callable[[str], Principal | None]


@dataclass(frozen=True)
class Allowed:
    """The verdict that lets a call through, naming the rule that did."""

    rule: str
    details: dict[str, str] = field(default_factory=dict)


def _forbidden(principal: Principal, message: str, reason: str, **details: object) -> Forbidden:
    return Forbidden(message, reason=reason, actor=principal.actor, **details)


def _the_grid(command: c.CommandBase, case: CaseFacts | None) -> str | None:
    """The grid a command acts in: the case's, or the one the command names."""
    if case is not None:
        return case.grid
    grid = getattr(command, "grid", None)
    return grid if isinstance(grid, str) else None


def _holds(
    where: str, principal: Principal, command: c.CommandBase, case: CaseFacts | None
) -> bool:
    if where == "grid":
        grid = _the_grid(command, case)
        if grid is None:  # `register_person` without a home grid: any admin of some scope
            return bool(principal.grids)
        return principal.covers(grid)
    if case is None:
        return False
    if where == "own_unit":
        return principal.unit is not None and case.unit == principal.unit
    if where == "discovering_side":
        return case.discovered_by == principal.actor or principal.covers(case.grid)
    if where == "centre_holds":
        return case.holder == "command_centre" and principal.covers(case.grid)
    raise ValueError(f"no condition {where!r}")  # pragma: no cover - RULES names only WHERE's


def check_actor(principal: Principal, command: c.CommandBase) -> Allowed | Forbidden:
    """The actor a command names must be the authenticated one (it is recorded on the event)."""
    if command.actor != principal.actor:
        return _forbidden(
            principal,
            f"the command names actor {command.actor!r} but you are {principal.actor!r}: "
            "events record the authenticated actor",
            "actor_mismatch",
            command=command.command,
            named=command.actor,
        )
    return Allowed("actor")


def decide(
    principal: Principal,
    command: c.CommandBase,
    case: CaseFacts | None,
    directory: Directory | None = None,
    parent_of: ParentOf | None = None,
) -> Allowed | Forbidden:
    """May `principal` give `command` to the case in its current state (None: not yet one)?

    `directory` finds the principal an extension's or a parking's `approved_by` names. A
    second (or later) extension of a step's deadline needs a higher approver: one whose scope
    covers the parent of the case's grid (`parent_of`), or every grid when it has no parent.
    """
    actor = check_actor(principal, command)
    if isinstance(actor, Forbidden):
        return actor
    name = command.command
    if case is None and isinstance(command, c.HazardCommand) and command.command != "discover":
        return _forbidden(principal, f"no case to {name}", "no_case", command=name)
    rules = RULES[name]
    allowed = next(
        (
            (role, where)
            for role, where in rules
            if principal.has(role) and _holds(where, principal, command, case)
        ),
        None,
    )
    if allowed is None:
        needs = " or ".join(f"{role} ({WHERE[where]})" for role, where in rules)
        has_role = any(principal.has(role) for role, _ in rules)
        grid = _the_grid(command, case)
        return _forbidden(
            principal,
            f"{principal.actor!r} may not {name}"
            + (f" in grid {grid!r}" if grid is not None else "")
            + f": it needs {needs}",
            "out_of_scope" if has_role else "role",
            command=name,
            needs=[f"{role}:{where}" for role, where in rules],
            roles=sorted(principal.roles),
            **({"grid": grid} if grid is not None else {}),
        )
    role, where = allowed
    if name in NEEDS_APPROVER:
        approver = getattr(command, "approved_by", None)
        assert isinstance(approver, str)
        assert case is not None
        found = directory(approver) if directory is not None else None
        if found is None or not found.has("approver") or not found.covers(case.grid):
            return _forbidden(
                principal,
                f"`approved_by` {approver!r} holds no approver role for grid {case.grid!r}",
                "approver",
                command=name,
                approved_by=approver,
                grid=case.grid,
            )
        if name == "extend" and case.extension_approvers:
            parent = parent_of(case.grid) if parent_of is not None else None
            higher = found.covers(parent) if parent is not None else "*" in found.grids
            if not higher:
                above = f"the parent grid {parent!r}" if parent else "every grid (`*`)"
                return _forbidden(
                    principal,
                    f"this step's deadline was extended before: a further extension needs a "
                    f"higher approver, one for {above}, and {approver!r} is not",
                    "approver",
                    command=name,
                    approved_by=approver,
                    grid=case.grid,
                    needs="higher_approver",
                    **({"parent_grid": parent} if parent else {}),
                )
    return Allowed(f"{name}:{role}:{where}")


def authorize(
    principal: Principal,
    command: c.CommandBase,
    case: CaseFacts | None,
    directory: Directory | None = None,
    parent_of: ParentOf | None = None,
) -> Allowed:
    """`decide`, raising Forbidden when the command is not allowed."""
    verdict = decide(principal, command, case, directory, parent_of)
    if isinstance(verdict, Forbidden):
        raise verdict
    return verdict


def decide_case_read(principal: Principal, case: CaseFacts) -> Allowed | Forbidden:
    """May `principal` read this case (its state, history, dossier)?"""
    if principal.has("auditor"):
        return Allowed("read:auditor")
    if principal.roles & CASE_READERS and principal.covers(case.grid):
        return Allowed("read:grid")
    if principal.has("unit") and principal.unit is not None and case.unit == principal.unit:
        return Allowed("read:own_unit")
    if case.discovered_by == principal.actor:
        return Allowed("read:discoverer")
    return _forbidden(
        principal,
        f"{principal.actor!r} may not read a case of grid {case.grid!r}",
        "out_of_scope",
        grid=case.grid,
    )


def _one_of(principal: Principal, roles: frozenset[str], what: str) -> Allowed | Forbidden:
    held = sorted(principal.roles & roles)
    if held:
        return Allowed(f"{what}:{held[0]}")
    return _forbidden(
        principal,
        f"{principal.actor!r} may not read {what}: it needs one of {', '.join(sorted(roles))}",
        "role",
        needs=sorted(roles),
        roles=sorted(principal.roles),
    )


def decide_reports(principal: Principal) -> Allowed | Forbidden:
    """May `principal` read the overdue and accountability reports?"""
    return _one_of(principal, REPORT_READERS, "reports")


def decide_feed(principal: Principal) -> Allowed | Forbidden:
    """May `principal` read the event feed (every event of every case)?"""
    return _one_of(principal, FEED_READERS, "the event feed")


def decide_tipster(principal: Principal) -> Allowed | Forbidden:
    """May `principal` see a public tip's confidential reporter?"""
    return _one_of(principal, TIPSTER_READERS, "a tipster's identity")
