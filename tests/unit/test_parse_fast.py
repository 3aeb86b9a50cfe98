"""`parse_command_json` validates a line straight from its text (pydantic's JSON parser), and
parses it again the careful way only when that fails: the two must agree on every line.

Each generated line starts from a valid command of each kind and is changed the ways clients
get lines wrong: a field's value replaced by any JSON value (odd text included), a field left
out, an unknown field, a field given twice, the text cut short. The fast path must give
exactly what the careful path gives: the same command, or the same error, word for word.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings, strategies as st

from loop import commands as c
from loop.errors import HazardLoopError

AT = "2026-09-01T09:00:00+08:00"
VALID: list[dict[str, Any]] = [
    {"command": "discover", "hazard_id": "H1", "actor": "wang", "at": AT, "grid": "G1",
     "category": "fire", "grade": "general", "title": "隐患",
     "evidence": [{"name": "p.jpg", "sha256": "a" * 64}]},
    {"command": "report", "hazard_id": "H1", "actor": "wang", "at": AT, "note": "n"},
    {"command": "assign", "hazard_id": "H1", "actor": "li", "at": AT, "unit": "U1",
     "person": "p1", "due": "2026-09-10T18:00:00+08:00"},
    {"command": "rectify", "hazard_id": "H1", "actor": "p1", "at": AT, "note": "done"},
    {"command": "verify", "hazard_id": "H1", "actor": "wang", "at": AT, "passed": True},
    {"command": "extend", "hazard_id": "H1", "actor": "li", "at": AT, "reason": "r",
     "approved_by": "boss", "due": "2026-09-20T18:00:00+08:00"},
    {"command": "establish_grid", "grid": "G1", "actor": "admin", "name": "一网格",
     "level": "community"},
]  # fmt: skip

#: Values one type away from valid ones: what a lax parser would take and a strict one refuses.
confusions = st.sampled_from(
    ["true", "false", "1", "0", 1, 0, 1.0, True, False, "null", [], {}, ["a"], {"name": "x"},
     "2026-09-01", "2026-09-01T09:00:00", 1788224400, "H1", "  H1  "]
)  # fmt: skip
json_values = confusions | st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["", " ", "2026-09-01T09:00:00Z", "2026-09-01t09:00:00+08:00", "H\\x00",
                       "general", "major", "true", "1", "𝔘", "\u200b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


def outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        cmd = parse(raw)
    except HazardLoopError as exc:
        return ("refused", (type(exc).__name__, exc.message, exc.details))
    return ("accepted", (type(cmd).__name__, cmd.model_dump()))


def careful(raw: bytes) -> Any:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise c.MalformedJSON(f"not valid JSON: {exc}") from None
    return c.parse_command(data)


CONFUSIONS: list[Any] = [
    "true", "false", "1", "0", 1, 0, 1.0, True, False, None, "null", [], {}, ["a"],
    {"name": "x"}, "2026-09-01", "2026-09-01T09:00:00", 1788224400, "H1", "  H1  ", "",
]  # fmt: skip


def line(template: dict[str, Any], change: str, key: str, value: Any, cut: int = 1) -> bytes:
    """The template as a JSON line, changed: a field's value replaced, the field left out, an
    unknown field added, the field given twice (the parsers keep the last), or cut short."""
    body = dict(template)
    pairs = list(body.items())
    if change == "replace":
        body[key] = value
        pairs = list(body.items())
    elif change == "drop":
        del body[key]
        pairs = list(body.items())
    elif change == "add":
        pairs.append(("colour", value))
    elif change == "twice":
        pairs.append((key, value))
    raw = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()
    return raw[:-cut] if change == "cut" else raw


def test_every_field_one_type_away_is_judged_alike() -> None:
    """Each field of each template given each value one type away from a valid one (what a
    lax parser would take), replaced, twice, or as an unknown field."""
    compared = accepted = 0
    for template in VALID:
        for key in template:
            for value in CONFUSIONS:
                for change in ("replace", "twice", "add", "drop"):
                    raw = line(template, change, key, value)
                    fast = outcome(c.parse_command_json, raw)
                    assert fast == outcome(careful, raw), raw
                    compared += 1
                    accepted += fast[0] == "accepted"
    assert compared > 2000
    assert accepted > 100  # some of them valid still (None for an optional field, say)


@settings(max_examples=400)
@given(
    template=st.sampled_from(VALID),
    change=st.sampled_from(["none", "replace", "drop", "add", "twice", "cut"]),
    field=st.integers(min_value=0, max_value=20),
    value=json_values,
    cut=st.integers(min_value=1, max_value=60),
)
def test_the_fast_path_agrees_with_the_careful_one(
    template: dict[str, Any], change: str, field: int, value: Any, cut: int
) -> None:
    keys = list(template)
    raw = line(template, change, keys[field % len(keys)], value, cut)
    assert outcome(c.parse_command_json, raw) == outcome(careful, raw)


def test_every_valid_template_is_accepted_by_the_fast_path() -> None:
    for body in VALID:
        raw = orjson.dumps(body)
        assert c._ADAPTER.validate_json(raw) == careful(raw)
