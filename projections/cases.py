"""The `cases` projection: the ledger (隐患台账), step occurrences and step segments.

Each case is rebuilt in memory with the domain's own event `apply` methods (never a second copy
of the rules); what changed is written as upserts keyed by primary key, so replaying a chunk after
a crash writes the same rows again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Transcoder
from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from loop.hazard import Hazard
from loop.lifecycle import Status
from projections.tables import ledger, step_segments, steps

__all__ = ["HANDLING_EVENTS", "CasesProjection"]

#: The events that count as a step being handled (the ball moved on because its holder acted).
HANDLING_EVENTS: dict[str, frozenset[str]] = {
    "report": frozenset({"Reported", "Rejected"}),
    "assign": frozenset({"Assigned", "Rejected"}),
    "rectify": frozenset({"Rectified"}),
    "verify": frozenset({"Verified", "VerificationFailed"}),
    "close": frozenset({"Closed"}),
}


def upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, replacing any with the same primary key (SQLite and PostgreSQL)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    conn.execute(stmt, rows)


class _Case:
    """A case being projected: the rebuilt aggregate plus where its open rows stand."""

    __slots__ = ("hazard", "meta")

    def __init__(self, hazard: Hazard, meta: dict[str, Any]) -> None:
        self.hazard = hazard
        self.meta = meta


class CasesProjection:
    """Ledger, steps and segments, from hazard events."""

    name = "cases"
    tables: tuple[Table, ...] = (ledger, steps, step_segments)

    def __init__(self, transcoder: Transcoder, cache_size: int = 50_000) -> None:
        self.transcoder = transcoder
        self.cache_size = cache_size
        self.cache: OrderedDict[UUID, _Case] = OrderedDict()

    def reset(self) -> None:
        self.cache.clear()

    # ------------------------------------------------------------ folding

    def process(self, conn: Connection, items: Sequence[tuple[int, Any]]) -> None:
        dirty: dict[UUID, _Case] = {}
        step_rows: dict[tuple[str, int], dict[str, Any]] = {}
        segment_rows: dict[tuple[str, int], dict[str, Any]] = {}
        rework: list[tuple[str, int]] = []
        events = [e for _, e in items if isinstance(e, Hazard.Event)]
        self._load(conn, {e.originator_id for e in events if not isinstance(e, Hazard.Discovered)})
        for event in events:
            case = self._apply(event)
            dirty[event.originator_id] = case
            self._track(case, event, step_rows, segment_rows, rework)
        upsert(conn, steps, list(step_rows.values()))
        upsert(conn, step_segments, list(segment_rows.values()))
        for hazard_id, occurrence in rework:
            if (hazard_id, occurrence) in step_rows:
                continue  # already counted in the row just written
            conn.execute(
                update(steps)
                .where(steps.c.hazard_id == hazard_id, steps.c.occurrence == occurrence)
                .values(reworked=steps.c.reworked + 1)
            )
        upsert(conn, ledger, [self._ledger_row(c) for c in dirty.values()])
        for key, case in dirty.items():
            self.cache[key] = case
            self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def _apply(self, event: Hazard.Event) -> _Case:
        if isinstance(event, Hazard.Discovered):
            hazard = event.mutate(None)
            assert isinstance(hazard, Hazard)
            meta = {"segments": 0, "occurrences": 0, "segment": None, "occurrence": None,
                    "last_rectify": None}  # fmt: skip
            case = self.cache[event.originator_id] = _Case(hazard, meta)
            return case
        case = self.cache[event.originator_id]
        event.mutate(case.hazard)
        return case

    def _track(
        self,
        case: _Case,
        event: Hazard.Event,
        step_rows: dict[tuple[str, int], dict[str, Any]],
        segment_rows: dict[tuple[str, int], dict[str, Any]],
        rework: list[tuple[str, int]],
    ) -> None:
        h, meta = case.hazard, case.meta
        name = type(event).__name__
        at: datetime = event.at
        parked = h.status == Status.PARKED
        step = h.step
        deadline = h.deadline or {}

        # Step occurrences: a step from when it starts until the ball moves on (parking pauses
        # an occurrence, it does not end it).
        occ = meta["occurrence"]
        if occ is not None and not parked and step != occ["step"]:
            occ["ended_at"] = at
            occ["outcome"] = name
            occ["handled"] = name in HANDLING_EVENTS[occ["step"]]
            step_rows[(h.hazard_id, occ["occurrence"])] = dict(occ)
            if occ["step"] == "rectify":
                meta["last_rectify"] = occ["occurrence"]
            occ = meta["occurrence"] = None
        if name == "VerificationFailed" and meta["last_rectify"] is not None:
            reworked = (h.hazard_id, meta["last_rectify"])
            if reworked in step_rows:
                step_rows[reworked]["reworked"] += 1
            rework.append(reworked)
        if occ is None and step is not None:
            meta["occurrences"] += 1
            occ = meta["occurrence"] = {
                "hazard_id": h.hazard_id, "occurrence": meta["occurrences"], "step": step,
                "started_at": at, "ended_at": None, "outcome": None, "handled": False,
                "parked": False, "reworked": 0, "original_due": deadline.get("original_due"),
            }  # fmt: skip
        if occ is not None:
            occ.update(
                grade=h.grade, grid=h.grid, holder=h.holder, unit=h.unit, person=h.person,
                due=deadline.get("due"), extensions=int(deadline.get("extensions", 0)),
            )  # fmt: skip
            occ["parked"] = occ["parked"] or parked
            step_rows[(h.hazard_id, occ["occurrence"])] = dict(occ)

        # Segments: one step, one deadline, one holder, one grade; any change starts another.
        key: tuple[Any, ...] | None = (
            None if step is None else (step, h.due, h.unit, h.person, h.grade)
        )
        seg = meta["segment"]
        if seg is not None and seg["key"] != key:
            seg["ended_at"] = at
            seg["end_reason"] = name
            segment_rows[(h.hazard_id, seg["seq"])] = _segment_row(seg)
            seg = meta["segment"] = None
        if seg is None and key is not None:
            meta["segments"] += 1
            assert occ is not None
            seg = meta["segment"] = {
                "key": key, "hazard_id": h.hazard_id, "seq": meta["segments"],
                "occurrence": occ["occurrence"], "step": step, "grade": h.grade, "grid": h.grid,
                "category": h.category, "title": h.title, "holder": h.holder, "unit": h.unit,
                "person": h.person, "started_at": at, "ended_at": None, "end_reason": None,
                "due": deadline["due"],
                "original_due": deadline.get("original_due", deadline["due"]),
                "due_limit": deadline.get("limit", "given"),
                "provisional": bool(deadline.get("provisional", False)),
                "extensions": int(deadline.get("extensions", 0)),
            }  # fmt: skip
            segment_rows[(h.hazard_id, seg["seq"])] = _segment_row(seg)

    # ------------------------------------------------------------ storage

    def _load(self, conn: Connection, ids: set[UUID]) -> None:
        missing = [i for i in ids if i not in self.cache]
        for start in range(0, len(missing), 500):
            chunk = [i.hex for i in missing[start : start + 500]]
            rows = conn.execute(
                select(ledger.c.state).where(ledger.c.aggregate_id.in_(chunk))
            ).all()
            for (state,) in rows:
                case = self._rehydrate(state)
                self.cache[case.hazard.id] = case

    def _ledger_row(self, case: _Case) -> dict[str, Any]:
        h = case.hazard
        deadline = h.deadline or {}
        return {
            "hazard_id": h.hazard_id, "aggregate_id": h.id.hex, "title": h.title,
            "grid": h.grid, "category": h.category, "grade": h.grade, "source": h.source,
            "status": str(h.status), "step": h.step, "holder": h.holder, "unit": h.unit,
            "person": h.person, "due": h.due,
            "due_limit": deadline.get("limit") if h.due is not None else None,
            "provisional": bool(deadline.get("provisional")) if h.due is not None else False,
            "rework_count": h.rework_count, "extension_count": h.extension_count,
            "reopen_count": h.reopen_count, "discovered_at": h.discovered_at,
            "last_at": h.last_at, "version": h.version, "segments": case.meta["segments"],
            "occurrences": case.meta["occurrences"], "last_rectify": case.meta["last_rectify"],
            "state": self._freeze(case),
        }  # fmt: skip

    def _freeze(self, case: _Case) -> bytes:
        state = {k: v for k, v in vars(case.hazard).items() if k != "_pending_events"}
        state["status"] = str(case.hazard.status)
        if case.hazard.parked_from is not None:
            state["parked_from"] = str(case.hazard.parked_from)
        meta = dict(case.meta)
        if meta["segment"] is not None:
            meta["segment"] = {**meta["segment"], "key": list(meta["segment"]["key"])}
        return self.transcoder.encode({"hazard": state, "meta": meta})

    def _rehydrate(self, blob: bytes) -> _Case:
        data = self.transcoder.decode(blob)
        hazard = Hazard.__new__(Hazard)
        state = data["hazard"]
        state["status"] = Status(state["status"])
        if state.get("parked_from") is not None:
            state["parked_from"] = Status(state["parked_from"])
        hazard.__dict__.update(state)
        hazard.__dict__["_pending_events"] = []
        meta = data["meta"]
        if meta["segment"] is not None:
            meta["segment"]["key"] = tuple(meta["segment"]["key"])
        return _Case(hazard, meta)


def _segment_row(seg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in seg.items() if k != "key"}
