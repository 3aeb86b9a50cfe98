"""The one error tree of the engine: every error a caller can meet, with a stable machine code.

    HazardLoopError                 (code)
    ├── InvalidCommand              invalid_command      malformed shape: a field missing, wrongly typed…
    │   ├── MalformedJSON           malformed_json       a line of input is not a JSON object
    │   └── UnknownCommand          unknown_command      `command` names no command of the contract
    ├── HazardNotFound              hazard_not_found     no hazard has this id
    ├── HazardAlreadyExists         hazard_already_exists  a hazard id is discovered once
    ├── UnknownGrid                 unknown_grid         no grid has this code
    ├── GridExists                  grid_exists          a grid code is established once
    ├── UnknownUnit                 unknown_unit         no unit has this code
    ├── UnitExists                  unit_exists          a unit code is registered once
    ├── UnknownPerson               unknown_person       no person has this id
    ├── PersonExists                person_exists        a person id is registered once
    ├── RuleViolation               (a command that is well formed but refused by a rule)
    │   ├── InvalidTransition       invalid_transition   the command is not allowed in the current status
    │   ├── CaseClosed              case_closed          a closed or rejected case takes only `reopen`
    │   ├── VerifierIsRectifier     verifier_is_rectifier  who filed the rectification cannot pass it
    │   ├── ApproverIsRequester     approver_is_requester  an approval by the one who asked for it
    │   ├── ExtensionNeedsHigherApprover  extension_needs_higher_approver  an earlier approver again
    │   ├── DueRequired             due_required         the policy says "by plan" and no `due` was given
    │   ├── DueNotAfterStart        due_not_after_start  a deadline at or before the step's start
    │   ├── ExtensionNotLater       extension_not_later  an extension that does not move the deadline later
    │   ├── AtBeforePrevious        at_before_previous   business time earlier than the case's (grid's) last step
    │   ├── AtInFuture              at_in_future         business time later than the engine's clock
    │   ├── InvalidDuplicate        invalid_duplicate    `duplicate_of` names the case itself or no case
    │   ├── BadParent               bad_parent           a grid's parent is not one level up (or is missing)
    │   ├── NotPostHolder           not_post_holder      `relieve` names someone who does not hold the post
    │   ├── AlreadyPostHolder       already_post_holder  `appoint` names the post's current holder
    │   └── IdempotencyKeyReused    idempotency_key_reused  the key came back with a different command
    ├── ConcurrencyConflict         concurrency_conflict another writer changed the case first (or If-Match failed)
    ├── NotAuthorized               (a caller who may not do what they asked)
    │   ├── Unauthorized            unauthorized         no credentials, or credentials not recognised
    │   └── Forbidden               forbidden            the authenticated actor may not do this
    ├── InvalidPolicy               invalid_policy       the time-limit policy file cannot be used
    ├── CalendarError               invalid_calendar     the operator's working-day calendar file cannot be used
    └── StoreError                  store_error          the event store cannot be opened, read or written

Library errors (eventsourcing, SQLAlchemy, sqlite3, pydantic) are mapped onto this tree at the
edge of the application, in one place, and never reach a caller.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyPostHolder",
    "ApproverIsRequester",
    "AtBeforePrevious",
    "AtInFuture",
    "BadParent",
    "CalendarError",
    "CaseClosed",
    "ConcurrencyConflict",
    "DueNotAfterStart",
    "DueRequired",
    "ExtensionNeedsHigherApprover",
    "ExtensionNotLater",
    "Forbidden",
    "GridExists",
    "HazardAlreadyExists",
    "HazardLoopError",
    "HazardNotFound",
    "IdempotencyKeyReused",
    "InvalidCommand",
    "InvalidDuplicate",
    "InvalidPolicy",
    "InvalidTransition",
    "MalformedJSON",
    "NotAuthorized",
    "NotPostHolder",
    "PersonExists",
    "RuleViolation",
    "StoreError",
    "Unauthorized",
    "UnitExists",
    "UnknownCommand",
    "UnknownGrid",
    "UnknownPerson",
    "UnknownUnit",
    "VerifierIsRectifier",
    "all_error_classes",
]


class HazardLoopError(Exception):
    """Raised for anything the engine refuses or cannot do; the root of every error here."""

    code: ClassVar[str] = "hazard_loop_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The error as the contract's JSON shape: code, message, details."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class InvalidCommand(HazardLoopError):
    """Raised when a command is malformed: a field missing, unknown, wrongly typed or out of range."""

    code = "invalid_command"


class MalformedJSON(InvalidCommand):
    """Raised when a line of input is not a JSON object."""

    code = "malformed_json"


class UnknownCommand(InvalidCommand):
    """Raised when `command` names no command of the contract."""

    code = "unknown_command"


class HazardNotFound(HazardLoopError):
    """Raised when a command or a query names a hazard id that was never discovered."""

    code = "hazard_not_found"


class HazardAlreadyExists(HazardLoopError):
    """Raised when `discover` names a hazard id that has already been discovered."""

    code = "hazard_already_exists"


class UnknownGrid(HazardLoopError):
    """Raised when a command names a grid code that was never established."""

    code = "unknown_grid"


class GridExists(HazardLoopError):
    """Raised when `establish_grid` names a grid code that has already been established."""

    code = "grid_exists"


class UnknownUnit(HazardLoopError):
    """Raised when a command names a unit code that was never registered."""

    code = "unknown_unit"


class UnitExists(HazardLoopError):
    """Raised when `register_unit` names a unit code that has already been registered."""

    code = "unit_exists"


class UnknownPerson(HazardLoopError):
    """Raised when a command names a person id that was never registered."""

    code = "unknown_person"


class PersonExists(HazardLoopError):
    """Raised when `register_person` names a person id that has already been registered."""

    code = "person_exists"


class RuleViolation(HazardLoopError):
    """Raised when a well-formed command is refused by a rule of the loop."""

    code = "rule_violation"


class InvalidTransition(RuleViolation):
    """Raised when a command is not allowed in the hazard's current status (a step out of order)."""

    code = "invalid_transition"


class CaseClosed(RuleViolation):
    """Raised when a closed or rejected case is given anything but `reopen`."""

    code = "case_closed"


class VerifierIsRectifier(RuleViolation):
    """Raised when the actor who filed the rectification tries to pass its verification."""

    code = "verifier_is_rectifier"


class ApproverIsRequester(RuleViolation):
    """Raised when an extension or a parking is approved by the actor who requested it."""

    code = "approver_is_requester"


class ExtensionNeedsHigherApprover(RuleViolation):
    """Raised when a step's deadline, extended before, is extended again with the approval of
    someone who approved an earlier extension of it: a second extension needs a higher
    approver (DOMAIN.md). Who counts as higher is decided by the grid scopes (authorization)."""

    code = "extension_needs_higher_approver"


class DueRequired(RuleViolation):
    """Raised when the policy sets a step's limit "by plan" and the command gives no `due`."""

    code = "due_required"


class DueNotAfterStart(RuleViolation):
    """Raised when a deadline given by a command is not later than the business time of the step."""

    code = "due_not_after_start"


class ExtensionNotLater(RuleViolation):
    """Raised when an extension's new deadline is not later than the deadline it extends."""

    code = "extension_not_later"


class AtBeforePrevious(RuleViolation):
    """Raised when a command's business time `at` is earlier than the case's (or grid's) latest step."""

    code = "at_before_previous"


class AtInFuture(RuleViolation):
    """Raised when a command's business time `at` lies ahead of the engine's clock."""

    code = "at_in_future"


class InvalidDuplicate(RuleViolation):
    """Raised when `reject` names as `duplicate_of` the case itself or a case never discovered."""

    code = "invalid_duplicate"


class BadParent(RuleViolation):
    """Raised when a grid's parent is not one level up, or a community grid has none."""

    code = "bad_parent"


class NotPostHolder(RuleViolation):
    """Raised when `relieve` names someone who does not hold the post now."""

    code = "not_post_holder"


class AlreadyPostHolder(RuleViolation):
    """Raised when `appoint` names the person who already holds the post."""

    code = "already_post_holder"


class IdempotencyKeyReused(RuleViolation):
    """Raised when an idempotency key comes back with a command different from its first one."""

    code = "idempotency_key_reused"


class ConcurrencyConflict(HazardLoopError):
    """Raised when another writer recorded a step on the same case first, or the caller expected
    the case at a version it has moved on from (If-Match); retry on fresh state."""

    code = "concurrency_conflict"


class NotAuthorized(HazardLoopError):
    """Raised when a caller may not do what they asked; the root of the two below."""

    code = "not_authorized"


class Unauthorized(NotAuthorized):
    """Raised when a request carries no credentials, or credentials nobody issued (or revoked)."""

    code = "unauthorized"


class Forbidden(NotAuthorized):
    """Raised when the authenticated actor's roles and scope do not allow the command or read."""

    code = "forbidden"


class InvalidPolicy(HazardLoopError):
    """Raised when the time-limit policy file is unreadable, incomplete or has a bad limit."""

    code = "invalid_policy"


class CalendarError(HazardLoopError):
    """Raised when the operator's working-day calendar file is unreadable or inconsistent."""

    code = "invalid_calendar"


class StoreError(HazardLoopError):
    """Raised when the event store cannot be opened, read or written."""

    code = "store_error"


def all_error_classes() -> list[type[HazardLoopError]]:
    """Every error class of the tree, root first (the contract documents each code)."""
    seen: list[type[HazardLoopError]] = []
    stack: list[type[HazardLoopError]] = [HazardLoopError]
    while stack:
        cls = stack.pop(0)
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
