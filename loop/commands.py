"""The command contract: the one public interface, as frozen pydantic models.

The CLI, the Python API and the HTTP API all take exactly these; shape is checked here, the rules
of the loop are checked by the aggregates. Hazard commands name their case by `hazard_id`; the
organisation's commands name their subject by `grid`, `unit` or `person`. Every command says
which aggregate it writes to as its `subject`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from loop.encoding import known_iso
from loop.errors import InvalidCommand, MalformedJSON, UnknownCommand

__all__ = [
    "ALL_COMMAND_NAMES",
    "BATCH_LINE_MARK",
    "COMMAND_CLASSES",
    "COMMAND_NAMES",
    "LEVELS",
    "ORGANISATION_COMMANDS",
    "POSTS",
    "Appoint",
    "Assign",
    "Close",
    "Command",
    "CommandBase",
    "Discover",
    "Escalate",
    "EstablishGrid",
    "Evidence",
    "Extend",
    "HazardCommand",
    "Level",
    "Park",
    "Post",
    "Reassign",
    "RegisterPerson",
    "RegisterUnit",
    "Regrade",
    "Reject",
    "Relieve",
    "Reopen",
    "Report",
    "Resume",
    "Return",
    "Subject",
    "Verify",
    "batch_line_key",
    "fingerprint",
    "legacy_batch_line_key",
    "parse_command",
    "parse_command_json",
]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: Any) -> Any:
    """Accept an aware datetime, or a string in RFC 3339 with an offset; refuse anything else."""
    if isinstance(value, str):
        m = _RFC3339.match(value)
        if not m:
            raise ValueError(
                "expected an RFC 3339 date-time with offset, e.g. 2026-09-28T09:30:00+08:00"
            )
        fraction = m.group(1)
        text = value
        if "t" in value or "z" in value:  # the only letters the pattern lets in
            text = value.replace("z", "Z").replace("t", "T")
        if fraction is not None and len(fraction) > 7:
            # Python keeps microseconds: cut nanoseconds to 6 digits (the only "." is this one).
            text = text.replace(fraction, fraction[:7], 1)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not a valid date-time: {exc}") from None
        if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
            _in_range(parsed)  # raises
        if (
            value[10] == "T"
            and value[-6] in "+-"
            and value[-6:] != "-00:00"
            and (fraction is None or (len(fraction) == 7 and fraction != ".000000"))
        ):
            # Given as `isoformat` writes it (an upper-case T, six digits of a fraction that is
            # not zero or none, a numeric offset that is not -00:00): the encoder writes it as
            # given rather than format it again (loop.encoding.known_iso).
            known_iso(parsed, value)
        return parsed
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a date-time needs a UTC offset (RFC 3339), e.g. +08:00")
        return _in_range(value)
    raise ValueError("expected an RFC 3339 date-time string with offset")


#: The years a command's date-time may fall in. Outside them the engine could not count working
#: days or add a time limit without overflowing (year 9999 + 30 days), and no real case is there.
FIRST_YEAR, LAST_YEAR = 1970, 2199


def _in_range(value: datetime) -> datetime:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(
            f"year {value.year} is outside the years a case can be in ({FIRST_YEAR}-{LAST_YEAR})"
        )
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]
Name = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
]
HazardId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s])?$",
    ),
]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
Note = Annotated[str, Field(max_length=4000)]
Grade = Literal["general", "major"]
Source = Literal["patrol", "inspection", "self_check", "public_tip"]
EscalationLevel = Literal["reminder", "supervision_letter", "summons", "public_notice", "penalty"]
#: A code or id given by the client (grid, unit, person): as strict as a hazard id.
Code = HazardId
DisplayName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
]
Phone = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^\+?[0-9][0-9 ()-]*[0-9]$")]
#: The levels of grid, top down: 区 (directly managed), 街道/镇 (basic), 社区/村 (micro).
Level = Literal["district", "street", "community"]
LEVELS: tuple[str, ...] = get_args(Level)
#: The posts of a grid's chain of responsibility, in order of the chain.
Post = Literal[
    "grid_manager",  # 网格长 / 网格管理员
    "first_responsible",  # 第一责任人
    "in_charge",  # 分管责任人
    "directly_responsible",  # 具体责任人
    "leader_in_liaison",  # 挂点(联点)领导
]
POSTS: tuple[str, ...] = get_args(Post)
UnitKind = Literal["department", "street_office", "enterprise", "other"]


class Subject(NamedTuple):
    """What a command writes to: its kind (hazard, grid, unit, person) and the client's id."""

    kind: str
    id: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id}

    @classmethod
    def of(cls, kind: str, ident: str) -> Subject:
        """`Subject(kind, ident)`, made without the named tuple's generated `__new__` (a few
        are made for every command)."""
        return tuple.__new__(cls, (kind, ident))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Evidence(_Frozen):
    """A piece of evidence (photo, document) identified by its SHA-256; the bytes live elsewhere."""

    name: ShortText
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class CommandBase(_Frozen):
    """Fields every command carries."""

    command: str
    actor: Name
    at: Timestamp | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @property
    def subject(self) -> Subject:
        """The aggregate the command writes to."""
        raise NotImplementedError


class HazardCommand(CommandBase):
    """A command of the six-step loop: it names its case by the client's `hazard_id`."""

    hazard_id: HazardId

    @property
    def subject(self) -> Subject:
        return Subject.of("hazard", self.hazard_id)


class Discover(HazardCommand):
    """A hazard is found on site (发现)."""

    command: Literal["discover"] = "discover"
    grid: Name
    category: Name
    grade: Grade
    title: ShortText
    description: Note | None = None
    location: Annotated[str, Field(max_length=500)] | None = None
    source: Source = "patrol"
    reporter: Name | None = None
    evidence: list[Evidence] = Field(default_factory=list, max_length=100)
    fixed_on_spot: bool = False


class Report(HazardCommand):
    """The discoverer's report is registered by the command centre (上报/立案)."""

    command: Literal["report"] = "report"
    note: Note | None = None


class Assign(HazardCommand):
    """The centre names a responsible unit, person and deadline (交办: 定人、定责、定时)."""

    command: Literal["assign"] = "assign"
    unit: Name
    person: Name
    due: Timestamp | None = None
    measures: Note | None = None


class Rectify(HazardCommand):
    """The responsible unit files its rectification feedback (整改反馈)."""

    command: Literal["rectify"] = "rectify"
    note: Annotated[str, Field(min_length=1, max_length=4000)]
    evidence: list[Evidence] = Field(default_factory=list, max_length=100)


class Verify(HazardCommand):
    """The discovering side checks the rectification on site (核查); a failure sends it back."""

    command: Literal["verify"] = "verify"
    passed: bool
    note: Note | None = None
    due: Timestamp | None = None

    @model_validator(mode="after")
    def _due_only_when_failed(self) -> Verify:
        if self.passed and self.due is not None:
            raise ValueError(
                "`due` is the new rectification deadline: give it only when passed=false"
            )
        return self


class Close(HazardCommand):
    """The centre closes the case (销号/结案)."""

    command: Literal["close"] = "close"
    note: Note | None = None


class Reject(HazardCommand):
    """Not a hazard, or a duplicate of another case (不予立案/合并)."""

    command: Literal["reject"] = "reject"
    reason: Reason
    duplicate_of: HazardId | None = None


class Return(HazardCommand):
    """The assignee says it is not theirs: back to the centre for re-assignment (回退)."""

    command: Literal["return"] = "return"
    reason: Reason


class Reassign(HazardCommand):
    """A different unit and person take the case over (转办)."""

    command: Literal["reassign"] = "reassign"
    unit: Name
    person: Name
    reason: Reason


class Extend(HazardCommand):
    """A later deadline for the current step, approved by someone else (延期)."""

    command: Literal["extend"] = "extend"
    due: Timestamp
    reason: Reason
    approved_by: Name


class Park(HazardCommand):
    """Work that cannot be done now is parked, approved; its step clock stops (挂账/缓办)."""

    command: Literal["park"] = "park"
    reason: Reason
    approved_by: Name


class Resume(HazardCommand):
    """A parked case takes up its step again, with the parked time added to its deadline."""

    command: Literal["resume"] = "resume"
    note: Note | None = None


class Reopen(HazardCommand):
    """A closed hazard recurs or fails a later audit; a rejected one is reconsidered."""

    command: Literal["reopen"] = "reopen"
    reason: Reason


class Regrade(HazardCommand):
    """The grade changes, general ↔ major (一般 ↔ 重大)."""

    command: Literal["regrade"] = "regrade"
    grade: Grade
    reason: Reason


class Escalate(HazardCommand):
    """Supervision steps up (督办): reminder → letter → summons / public notice → penalty."""

    command: Literal["escalate"] = "escalate"
    level: EscalationLevel
    note: Note | None = None


# ------------------------------------------------------------ the organisation


class EstablishGrid(CommandBase):
    """A grid is set up (划分网格): its code, name, level and the grid one level up."""

    command: Literal["establish_grid"] = "establish_grid"
    grid: Code
    name: DisplayName
    level: Level
    parent: Code | None = None

    @property
    def subject(self) -> Subject:
        return Subject("grid", self.grid)


class RegisterUnit(CommandBase):
    """A unit that takes rectification work (a department, office or enterprise) is registered."""

    command: Literal["register_unit"] = "register_unit"
    unit: Code
    name: DisplayName
    grid: Code
    kind: UnitKind | None = None

    @property
    def subject(self) -> Subject:
        return Subject("unit", self.unit)


class RegisterPerson(CommandBase):
    """A person who may act or hold posts is registered, with their unit or home grid."""

    command: Literal["register_person"] = "register_person"
    person: Code
    name: DisplayName
    unit: Code | None = None
    grid: Code | None = None
    phone: Phone | None = None
    role: Name | None = None

    @property
    def subject(self) -> Subject:
        return Subject("person", self.person)


class Appoint(CommandBase):
    """A person takes a post of a grid's chain from `at`; whoever held it leaves it then."""

    command: Literal["appoint"] = "appoint"
    grid: Code
    post: Post
    person: Code
    note: Note | None = None

    @property
    def subject(self) -> Subject:
        return Subject("grid", self.grid)


class Relieve(CommandBase):
    """The holder of a post leaves it at `at`; the post stands vacant until an appointment."""

    command: Literal["relieve"] = "relieve"
    grid: Code
    post: Post
    person: Code
    note: Note | None = None

    @property
    def subject(self) -> Subject:
        return Subject("grid", self.grid)


Command = Annotated[
    Discover
    | Report
    | Assign
    | Rectify
    | Verify
    | Close
    | Reject
    | Return
    | Reassign
    | Extend
    | Park
    | Resume
    | Reopen
    | Regrade
    | Escalate
    | EstablishGrid
    | RegisterUnit
    | RegisterPerson
    | Appoint
    | Relieve,
    Field(discriminator="command"),
]

COMMAND_CLASSES: dict[str, type[CommandBase]] = {
    cls.model_fields["command"].default: cls
    for cls in (
        Discover,
        Report,
        Assign,
        Rectify,
        Verify,
        Close,
        Reject,
        Return,
        Reassign,
        Extend,
        Park,
        Resume,
        Reopen,
        Regrade,
        Escalate,
        EstablishGrid,
        RegisterUnit,
        RegisterPerson,
        Appoint,
        Relieve,
    )
}
#: Every command of the contract.
ALL_COMMAND_NAMES: tuple[str, ...] = tuple(COMMAND_CLASSES)
#: The commands that write to the organisation (grids, units, people), not to a hazard.
ORGANISATION_COMMANDS: tuple[str, ...] = tuple(
    name for name, cls in COMMAND_CLASSES.items() if not issubclass(cls, HazardCommand)
)
#: The hazard commands: the six steps and the side paths (what the lifecycle table speaks of).
COMMAND_NAMES: tuple[str, ...] = tuple(
    name for name in ALL_COMMAND_NAMES if name not in ORGANISATION_COMMANDS
)

_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
#: `_ADAPTER.validate_json` without its wrapper's argument checks (a tenth of its cost): the
#: schema validator's own, called with the same defaults.
_VALIDATE_JSON = _ADAPTER.validator.validate_json


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(p) for p in err["loc"][1:]) or None,
            "problem": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


def parse_command(data: Any) -> Command:
    """Validate one command given as a mapping (decoded JSON); InvalidCommand names the fault."""
    if not isinstance(data, dict):
        raise MalformedJSON(f"a command is a JSON object, not {type(data).__name__}")
    name = data.get("command")
    if name is None:
        raise InvalidCommand(
            "field `command` is missing", fields=[{"field": "command", "problem": "missing"}]
        )
    if not isinstance(name, str):
        raise UnknownCommand(
            f"`command` is a name of the contract, not {type(name).__name__}",
            command=repr(name)[:100],
        )
    if name not in COMMAND_CLASSES:
        raise UnknownCommand(
            f"unknown command {name!r}; the contract has: {', '.join(ALL_COMMAND_NAMES)}",
            command=name,
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        fields = _field_errors(exc)
        summary = "; ".join(f"{f['field'] or '(command)'}: {f['problem']}" for f in fields[:5])
        raise InvalidCommand(f"invalid {name}: {summary}", command=name, fields=fields) from None


def parse_command_json(text: str | bytes) -> Command:
    """Validate one command given as JSON text.

    A valid command is validated straight from the text (pydantic's own JSON parser: no
    Python objects made for the parsed JSON first, a fifth of the cost of parsing a bulk
    line); anything it refuses is parsed again the careful way (`orjson`, then
    `parse_command`), which names the fault. The two agree on every command either accepts
    (a differential test of both on generated lines: tests/unit/test_parse_fast.py).
    """
    try:
        command: Command = _VALIDATE_JSON(text)
        return command
    except ValueError:  # ValidationError: let the careful path say what is wrong
        pass
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"not valid JSON: {exc}") from None
    return parse_command(data)


#: Between a batch's Idempotency-Key and the line's number in the key of each of its commands:
#: `KEY #1`, `KEY #2`… A space, which no Idempotency-Key header may hold, so no single command's
#: key sent as a header can equal a batch line's.
BATCH_LINE_MARK = " #"
_BATCH_LINE = re.compile(r"(.+) #([1-9][0-9]*)", re.DOTALL)


def batch_line_key(key: str, line: int) -> str:
    """The idempotency key of line `line` (from 1) of a batch sent under `key`."""
    return f"{key}{BATCH_LINE_MARK}{line}"


def legacy_batch_line_key(key: str) -> str | None:
    """How a batch line's key was spelled before keys were kept per actor (`KEY#1`), if `key`
    is a batch line's (`KEY #1`); a store written then may hold it (see HazardLoop)."""
    m = _BATCH_LINE.fullmatch(key)
    return f"{m.group(1)}#{m.group(2)}" if m else None


def fingerprint(command: CommandBase, conceal: Callable[[str], str] | None = None) -> str:
    """A stable digest of what a command says, for recognising a retried submission.

    Defaults and the idempotency key itself are left out, so a retry that spells out a default
    value (or omits it) is still the same command. A public tip's reporter enters it only as
    `conceal(reporter)` (the vault's keyed digest): a plain SHA-256 over the command would let
    whoever reads the store test guesses of the tipster's name against it.
    """
    import hashlib

    body = command.model_dump(mode="json", exclude_defaults=True, exclude={"idempotency_key"})
    body["command"] = command.command
    # (Without a vault the reporter is stored in clear anyway, and `conceal` is None.)
    if (
        isinstance(command, Discover)
        and command.source == "public_tip"
        and command.reporter
        and conceal is not None
    ):
        body["reporter"] = "keyed:" + conceal(command.reporter)
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
