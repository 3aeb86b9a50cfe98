"""The lifecycle as one table: (status, command) -> event, new status.

The aggregate consults this table before anything else, and `docs/lifecycle.md` is rendered from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "HOLDING_STEP",
    "OPEN_STATUSES",
    "TRANSITIONS",
    "Status",
    "Transition",
    "allowed_commands",
    "find_transition",
    "render_markdown_table",
    "render_mermaid",
]


class Status(StrEnum):
    """Where a case stands."""

    DISCOVERED = "discovered"
    REPORTED = "reported"
    ASSIGNED = "assigned"
    RECTIFIED = "rectified"
    VERIFIED = "verified"
    CLOSED = "closed"
    REJECTED = "rejected"
    PARKED = "parked"


#: The step that holds the ball in each open status (the party who must act next).
HOLDING_STEP: dict[Status, str] = {
    Status.DISCOVERED: "report",
    Status.REPORTED: "assign",
    Status.ASSIGNED: "rectify",
    Status.RECTIFIED: "verify",
    Status.VERIFIED: "close",
}

OPEN_STATUSES = frozenset(
    {
        Status.DISCOVERED,
        Status.REPORTED,
        Status.ASSIGNED,
        Status.RECTIFIED,
        Status.VERIFIED,
        Status.PARKED,
    }
)

#: Marks a transition whose new status is the status before the case was parked.
BEFORE_PARKING = "(status before parking)"
#: Marks a transition that leaves the status as it was.
UNCHANGED = "(unchanged)"


@dataclass(frozen=True)
class Transition:
    """One row of the table: in `status`, `command` (with `condition`) records `event`."""

    status: Status | None  # None: the hazard does not exist yet
    command: str
    event: str
    to: Status | str  # a Status, BEFORE_PARKING or UNCHANGED
    condition: str = ""  # e.g. "passed=true"; empty when the command alone decides
    starts_step: bool = False  # the event decides a new deadline for the step it hands over to

    @property
    def key(self) -> tuple[Status | None, str, str]:
        return (self.status, self.command, self.condition)


S = Status
_OPEN_ACTIVE = (S.DISCOVERED, S.REPORTED, S.ASSIGNED, S.RECTIFIED, S.VERIFIED)

TRANSITIONS: tuple[Transition, ...] = (
    # The straight line: discover, report, assign, rectify, verify, close.
    Transition(None, "discover", "Discovered", S.DISCOVERED, "fixed_on_spot=false", True),
    Transition(None, "discover", "Discovered", S.RECTIFIED, "fixed_on_spot=true", True),
    Transition(S.DISCOVERED, "report", "Reported", S.REPORTED, starts_step=True),
    Transition(S.REPORTED, "assign", "Assigned", S.ASSIGNED, starts_step=True),
    Transition(S.ASSIGNED, "rectify", "Rectified", S.RECTIFIED, starts_step=True),
    Transition(S.RECTIFIED, "verify", "Verified", S.VERIFIED, "passed=true", True),
    Transition(S.VERIFIED, "close", "Closed", S.CLOSED),
    # Side paths.
    Transition(S.RECTIFIED, "verify", "VerificationFailed", S.ASSIGNED, "passed=false", True),
    # A failed check of a hazard fixed on the spot (never assigned) goes to the centre to assign.
    Transition(
        S.RECTIFIED, "verify", "VerificationFailed", S.REPORTED, "passed=false,never_assigned", True
    ),
    Transition(S.DISCOVERED, "reject", "Rejected", S.REJECTED),
    Transition(S.REPORTED, "reject", "Rejected", S.REJECTED),
    Transition(S.ASSIGNED, "return", "Returned", S.REPORTED, starts_step=True),
    Transition(S.ASSIGNED, "reassign", "Reassigned", UNCHANGED),
    Transition(S.PARKED, "reassign", "Reassigned", UNCHANGED),
    *(Transition(s, "extend", "Extended", UNCHANGED) for s in _OPEN_ACTIVE),
    Transition(S.REPORTED, "park", "Parked", S.PARKED),
    Transition(S.ASSIGNED, "park", "Parked", S.PARKED),
    Transition(S.PARKED, "resume", "Resumed", BEFORE_PARKING),
    Transition(S.CLOSED, "reopen", "Reopened", S.REPORTED, starts_step=True),
    Transition(S.REJECTED, "reopen", "Reopened", S.DISCOVERED, starts_step=True),
    *(Transition(s, "regrade", "Regraded", UNCHANGED) for s in (*_OPEN_ACTIVE, S.PARKED)),
    *(Transition(s, "escalate", "Escalated", UNCHANGED) for s in _OPEN_ACTIVE),
)

_INDEX: dict[tuple[Status | None, str], list[Transition]] = {}
for _t in TRANSITIONS:
    _INDEX.setdefault((_t.status, _t.command), []).append(_t)


def find_transition(status: Status | None, command: str, condition: str = "") -> Transition | None:
    """The row for `command` in `status` (and `condition`, where the row has one), or None."""
    rows = _INDEX.get((status, command), [])
    for row in rows:
        if row.condition == condition or not row.condition:
            return row
    return None


def allowed_commands(status: Status | None) -> list[str]:
    """The commands a case in `status` accepts, in table order, each once."""
    seen: list[str] = []
    for t in TRANSITIONS:
        if t.status == status and t.command not in seen:
            seen.append(t.command)
    return seen


def render_markdown_table() -> str:
    """The transition table as Markdown, for docs/lifecycle.md."""
    lines = [
        "| status | command | condition | event | new status | starts a deadline |",
        "|---|---|---|---|---|---|",
    ]
    for t in TRANSITIONS:
        status = t.status.value if t.status else "(new)"
        to = t.to.value if isinstance(t.to, Status) else t.to
        lines.append(
            f"| {status} | `{t.command}` | {t.condition or ''} | `{t.event}` | {to} | "
            f"{'yes' if t.starts_step else ''} |"
        )
    return "\n".join(lines) + "\n"


def render_mermaid() -> str:
    """The status-changing rows as a Mermaid state diagram, for docs/lifecycle.md.

    Rows that leave the status unchanged (extend, regrade, escalate, reassign) are listed in a
    note rather than drawn as loops, which would bury the diagram.
    """
    lines = ["stateDiagram-v2"]
    in_place: dict[str, list[str]] = {}
    for t in TRANSITIONS:
        src = "[*]" if t.status is None else t.status.value
        label = t.command + (f" [{t.condition}]" if t.condition else "")
        if t.to == UNCHANGED:
            in_place.setdefault(t.command, []).append(src)
        elif t.to == BEFORE_PARKING:
            for s in (S.REPORTED, S.ASSIGNED):
                lines.append(f"    {src} --> {s.value}: {label} (if parked from {s.value})")
        else:
            dst = t.to.value if isinstance(t.to, Status) else str(t.to)
            lines.append(f"    {src} --> {dst}: {label}")
    lines.append("    closed --> [*]")
    notes = "<br/>".join(f"{cmd}: {', '.join(where)}" for cmd, where in in_place.items())
    lines.append(f"    note right of parked\n        in place — {notes}\n    end note")
    return "\n".join(lines) + "\n"
