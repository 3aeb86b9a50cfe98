"""The case dossier: one hazard's whole record, as an auditor files it (HTML) or a machine reads it.

Built from the case's own events (as known at a moment, if asked), folded with the domain's own
`apply` methods: the timeline with both times, each step's holder, deadline and whether it was on
time, every extension with its approver, evidence hashes, and the chain proof for the case.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from adapters.audit import case_proof, head_at
from adapters.reports import CATEGORY_NAMES, GRADE_NAMES, HOLDER_NAMES, STEP_NAMES
from adapters.store import location_of
from adapters.timetravel import (
    KnownAt,
    case_chain,
    describe_known,
    is_known,
    known_positions,
    record_time_at,
)
from loop.application import HazardLoop
from loop.errors import HazardNotFound, InvalidCommand
from loop.hazard import Hazard, hazard_uuid
from projections.cases import HANDLING_EVENTS

__all__ = ["DOSSIER_FORMATS", "build_dossier", "render_dossier"]

DOSSIER_FORMATS = ("html", "json")

#: Event fields that are bookkeeping, not the substance of a step.
_BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic", "at",
                "actor", "idempotency_key", "deadline"}  # fmt: skip
_CONFIDENTIAL = "（举报人信息保密 / confidential）"

#: The proof table's columns (adapters.audit.ProofLink, in order).
_PROOF_HEADERS = [
    "版本", "位置", "记录时间（微秒）", "事件 SHA-256", "日志前一事件哈希", "本案前一事件哈希",
    "事件哈希", "复核",
]  # fmt: skip


@dataclass
class _Occurrence:
    step: str
    holder: str | None
    unit: str | None
    person: str | None
    started_at: datetime
    original_due: datetime
    due: datetime
    limit: str | None
    provisional: bool
    policy_version: Any
    extensions: int = 0
    ended_at: datetime | None = None
    ended_by: str | None = None

    def to_dict(self, now: datetime) -> dict[str, Any]:
        handled = self.ended_by in HANDLING_EVENTS.get(self.step, frozenset())
        if self.ended_at is None:
            outcome = "overdue" if now > self.due else "open"
        elif not handled:
            outcome = "interrupted"  # returned, reassigned, parked, reopened…
        else:
            outcome = "on_time" if self.ended_at <= self.due else "late"
        return {
            "step": self.step,
            "holder": self.holder,
            "unit": self.unit,
            "person": self.person,
            "started_at": self.started_at,
            "original_due": self.original_due,
            "due": self.due,
            "limit": self.limit,
            "provisional": self.provisional,
            "policy_version": self.policy_version,
            "extensions": self.extensions,
            "ended_at": self.ended_at,
            "ended_by": self.ended_by,
            "outcome": outcome,
        }


def _payload(event: Hazard.Event) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k not in _BOOKKEEPING}


def build_dossier(
    app: HazardLoop, hazard_id: str, *, known_at: KnownAt | None = None
) -> dict[str, Any]:
    """Everything about one case, as known at `known_at` (default: now): a record time, or a
    log position (a printed chain head's COUNT, checked by `position_of_head`: the case as
    the first COUNT events of the log tell it, judged at the record time of the last)."""
    chain = {e.version: e for e in case_chain(app, hazard_id)}
    events = app.history(hazard_id)
    if known_at is not None:
        events = [
            e
            for e in events
            if e.originator_version in chain and is_known(chain[e.originator_version], known_at)
        ]
        if not events:
            raise HazardNotFound(
                f"hazard {hazard_id!r} was not known at {describe_known(known_at)}",
                hazard_id=hazard_id,
            )
    generated_for: dict[str, Any]
    if isinstance(known_at, int):
        now = record_time_at(app, known_at) or app.clock()
        generated_for = {"known_at": now, "now": now, "known_at_events": known_at}
    else:
        now = known_at or app.clock()
        generated_for = {"known_at": known_at, "now": now}
    timeline: list[dict[str, Any]] = []
    occurrences: list[_Occurrence] = []
    extensions: list[dict[str, Any]] = []
    evidence: list[dict[str, Any]] = []
    hazard: Any = None
    for event in events:
        hazard = event.mutate(hazard)
        name = type(event).__name__
        link = chain.get(event.originator_version)
        payload = _payload(event)
        if hazard.source == "public_tip" and "reporter" in payload:
            payload["reporter"] = _CONFIDENTIAL
        timeline.append(
            {
                "version": event.originator_version,
                "event": name,
                "at": event.at,
                "recorded_at": link.recorded_at if link else event.timestamp,
                "position": link.position if link else None,
                "actor": event.actor,
                "deadline": getattr(event, "deadline", None),
                "details": payload,
            }
        )
        if name == "Extended":
            extensions.append(
                {
                    "version": event.originator_version,
                    "step": event.deadline.get("step") if event.deadline else None,  # type: ignore[attr-defined]
                    "requested_by": event.actor,
                    "approved_by": event.approved_by,  # type: ignore[attr-defined]
                    "previous_due": event.previous_due,  # type: ignore[attr-defined]
                    "new_due": event.deadline.get("due"),  # type: ignore[attr-defined]
                    "reason": event.reason,  # type: ignore[attr-defined]
                    "at": event.at,
                }
            )
        for item in getattr(event, "evidence", None) or []:
            evidence.append({"version": event.originator_version, "event": name, **item})
        _track(occurrences, hazard, event, name)
    assert isinstance(hazard, Hazard)
    state = hazard.to_state()
    if hazard.source == "public_tip":
        state["reporter"] = _CONFIDENTIAL
    db = location_of(app)
    version = events[-1].originator_version
    proof = case_proof(db, hazard_uuid(hazard_id).hex, version)
    position = known_positions(app, known_at) if known_at is not None else _last_position(app)
    return {
        "hazard_id": hazard_id,
        "generated_for": generated_for,
        "state": state,
        "steps": [o.to_dict(now) for o in occurrences],
        "extensions": extensions,
        "evidence": evidence,
        "timeline": timeline,
        "proof": {
            "intact": all(link.ok for link in proof) and len(proof) == len(events),
            "links": [link.to_dict() for link in proof],
            "log_head": str(head_at(db, position)),
        },
    }


def _last_position(app: HazardLoop) -> int:
    from datetime import UTC

    return known_positions(app, datetime.max.replace(tzinfo=UTC))


def _track(occurrences: list[_Occurrence], hazard: Hazard, event: Hazard.Event, name: str) -> None:
    """Close the step occurrence the event ended; open the one it started."""
    current = occurrences[-1] if occurrences and occurrences[-1].ended_at is None else None
    deadline = hazard.deadline
    parked = hazard.status.value == "parked"
    key = (deadline["step"], deadline["started_at"]) if deadline and not parked else None
    if current is not None and key == (current.step, current.started_at):
        # Same step still running: a later due (extension, resume), or a new holder.
        assert deadline is not None
        current.due = deadline["due"]
        current.extensions = int(deadline.get("extensions", 0))
        if name == "Reassigned":
            current.ended_at, current.ended_by = event.at, name
            occurrences.append(_open(hazard, deadline, event.at))
        return
    if current is not None:
        current.ended_at, current.ended_by = event.at, name
    if key is not None:
        assert deadline is not None
        occurrences.append(_open(hazard, deadline, deadline["started_at"]))


def _open(hazard: Hazard, deadline: dict[str, Any], started_at: datetime) -> _Occurrence:
    return _Occurrence(
        step=deadline["step"],
        holder=hazard.holder,
        unit=hazard.unit,
        person=hazard.person,
        started_at=started_at,
        original_due=deadline.get("original_due", deadline["due"]),
        due=deadline["due"],
        limit=deadline.get("limit"),
        provisional=bool(deadline.get("provisional")),
        policy_version=deadline.get("policy_version"),
        extensions=int(deadline.get("extensions", 0)),
    )


# ---------------------------------------------------------------- rendering


def _default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "value"):
        return obj.value
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def render_dossier(dossier: dict[str, Any], fmt: str) -> bytes:
    """The dossier as JSON (sorted keys, for machines) or as one self-contained HTML page."""
    if fmt not in DOSSIER_FORMATS:
        raise InvalidCommand(
            f"unknown dossier format {fmt!r}: use one of {', '.join(DOSSIER_FORMATS)}", format=fmt
        )
    data = orjson.dumps(dossier, default=_default, option=orjson.OPT_SORT_KEYS)
    if fmt == "json":
        return data + b"\n"
    return _html(orjson.loads(data)).encode()


_STEP_ZH = {step: names[0] for step, names in STEP_NAMES.items()}
_OUTCOME_ZH = {"on_time": "按期", "late": "超期", "overdue": "超期未办", "open": "办理中",
               "interrupted": "中止（退回/改派/挂起）"}  # fmt: skip


def _e(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        return html.escape(value[:16].replace("T", " "))
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(d: dict[str, Any]) -> str:
    s = d["state"]
    proof = d["proof"]
    intact = "完整（已逐条复核）" if proof["intact"] else "<b class=bad>校验失败</b>"
    facts = [
        ["隐患编号", d["hazard_id"]], ["标题", s["title"]], ["网格", s["grid"]],
        ["类别", CATEGORY_NAMES.get(s["category"], (s["category"],))[0]],
        ["等级", GRADE_NAMES.get(s["grade"], (s["grade"],))[0]],
        ["状态", s["status"]], ["发现人", s["discovered_by"]], ["发现时间", s["discovered_at"]],
        ["责任单位", s["unit"]], ["责任人", s["person"]], ["返工次数", s["rework_count"]],
        ["延期次数", s["extension_count"]],
        ["依据", "截至记录时间 " + str(d["generated_for"]["known_at"])
         if d["generated_for"]["known_at"] else "当前全部记录"],
    ]  # fmt: skip
    steps = [
        [_STEP_ZH.get(o["step"], o["step"]),
         HOLDER_NAMES.get(o["holder"], (o["holder"],))[0], o["unit"], o["person"], o["started_at"],
         o["original_due"], o["due"], o["extensions"], o["ended_at"],
         _OUTCOME_ZH.get(o["outcome"], o["outcome"])]
        for o in d["steps"]
    ]  # fmt: skip
    timeline = [
        [t["version"], t["event"], t["at"], t["recorded_at"], t["actor"],
         (t["deadline"] or {}).get("due"), (t["deadline"] or {}).get("policy_version"),
         "; ".join(f"{k}={v}" for k, v in t["details"].items() if v not in (None, [], ""))]
        for t in d["timeline"]
    ]  # fmt: skip
    extensions = [
        [x["version"], _STEP_ZH.get(x["step"], x["step"]), x["requested_by"], x["approved_by"],
         x["previous_due"], x["new_due"], x["reason"]]
        for x in d["extensions"]
    ]  # fmt: skip
    evidence = [[x["version"], x["event"], x.get("name"), x.get("sha256")] for x in d["evidence"]]
    links = [
        [p["version"], p["position"], p["recorded_at_micros"], p["event_sha256"],
         p["previous_log_hash"], p["previous_case_hash"], p["log_hash"], "✓" if p["ok"] else "✗"]
        for p in proof["links"]
    ]  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>隐患案卷 {html.escape(d["hazard_id"])}</title>
<style>
body{{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;color:#222}}
h1{{font-size:1.5em}} h2{{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #999}}
table{{border-collapse:collapse;width:100%;font-size:.85em;margin:.5em 0}}
th,td{{border:1px solid #bbb;padding:.25em .45em;text-align:left;vertical-align:top}}
th{{background:#eee}} .hash td{{font-family:monospace;font-size:.75em;word-break:break-all}}
.bad{{color:#b00}} .head{{font-family:monospace;word-break:break-all}}
@media print{{body{{margin:0}}}}
</style></head><body>
<h1>安全生产隐患案卷 · {html.escape(d["hazard_id"])}</h1>
<p>链头（事件数:哈希）<span class="head">{html.escape(proof["log_head"])}</span> ·
案卷哈希链：{intact}</p>
<h2>基本情况</h2>{_table(["项目", "内容"], facts)}
<h2>各环节办理情况</h2>{
        _table(
            [
                "环节",
                "持球方",
                "单位",
                "责任人",
                "开始",
                "原定期限",
                "最终期限",
                "延期",
                "办结",
                "结果",
            ],
            steps,
        )
    }
<h2>延期记录</h2>{
        _table(["版本", "环节", "申请人", "批准人", "原期限", "新期限", "理由"], extensions)
    }
<h2>证据（SHA-256）</h2>{_table(["版本", "事件", "文件", "SHA-256"], evidence)}
<h2>完整记录（业务时间 / 记录时间）</h2>{
        _table(
            ["版本", "事件", "发生时间", "记录时间", "操作人", "期限", "规则版本", "内容"], timeline
        )
    }
<h2>哈希链证明</h2><div class="hash">{_table(_PROOF_HEADERS, links)}</div>
<p>复核方法：事件哈希 = SHA-256(日志前一事件哈希 ‖ 本案前一事件哈希 ‖ 位置(8字节) ‖
记录时间(8字节，自1970年起的微秒数，UTC) ‖ 事件帧)；事件帧即原样存储的字节，
JSON 案卷逐条附其 base64。同一哈希既连入全日志链，也连入本案链。
用 <code>hazardloop audit verify --against {
        html.escape(proof["log_head"])
    }</code> 证明此后记录只增未改。</p>
</body></html>
"""
