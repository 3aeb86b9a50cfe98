"""The overdue and accountability reports, rendered: plain table, JSON, CSV, xlsx, HTML, rich.

Every format renders from the frozen records of `projections.model`, so they cannot disagree.
People's formats (table, CSV, xlsx, HTML, rich) speak Chinese by default (`lang="en"` for
English) and show local date-times in the report's timezone; JSON is for machines: English field
names, RFC 3339 date-times with the local offset, every field. The same report always renders to
the same bytes, xlsx included (its zip entries and document properties are dated from `as_of`),
so a nightly run can be repeated and compared.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from html import escape
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from loop.errors import InvalidCommand
from projections.model import (
    POSTS,
    AccountabilityReport,
    AccountabilityRow,
    OverdueReport,
    OverdueRow,
)
from projections.reports import INDICATORS

__all__ = [
    "AGEING_BUCKETS",
    "FORMATS",
    "LANGS",
    "print_accountability",
    "print_overdue",
    "render_accountability",
    "render_overdue",
]

FORMATS = ("table", "json", "csv", "xlsx", "html")
LANGS = ("zh", "en")

#: Ageing of overdue steps: (中文, English, lowest, highest) working days late, inclusive.
AGEING_BUCKETS: tuple[tuple[str, str, int, int | None], ...] = (
    ("≤1 个工作日", "≤ 1 working day", 0, 1),
    ("2–3 个工作日", "2–3 working days", 2, 3),
    ("4–10 个工作日", "4–10 working days", 4, 10),
    (">10 个工作日", "> 10 working days", 11, None),
)

# ------------------------------------------------------------------ words

_STEPS = ("report", "assign", "rectify", "verify", "close")
_STEP = {
    "discover": ("发现", "discover"),
    "report": ("上报", "report"),
    "assign": ("交办", "assign"),
    "rectify": ("整改", "rectify"),
    "verify": ("核查", "verify"),
    "close": ("结案", "close"),
}
_GRADE = {"general": ("一般隐患", "general"), "major": ("重大隐患", "major")}
_CATEGORY = {
    "fire": ("消防", "fire"),
    "gas": ("燃气", "gas"),
    "construction": ("建筑施工", "construction"),
    "industry_trade": ("工贸", "industry and trade"),
    "road_traffic": ("道路交通", "road traffic"),
    "hazchem": ("危险化学品", "hazardous chemicals"),
    "fireworks": ("烟花爆竹", "fireworks"),
    "non_coal_mine": ("非煤矿山", "non-coal mines"),
    "civil_explosives": ("民用爆炸物品", "civil explosives"),
    "food": ("食品安全", "food safety"),
    "public_safety": ("公共安全", "public safety"),
}
_HOLDER = {"command_centre": ("指挥中心", "command centre")}

#: The words other renderers (the dossier) share: step, grade, category, holder -> (中文, English).
STEP_NAMES, GRADE_NAMES, CATEGORY_NAMES, HOLDER_NAMES = _STEP, _GRADE, _CATEGORY, _HOLDER
_POST = {
    "grid_manager": ("网格长", "grid manager"),
    "first_responsible": ("第一责任人", "first responsible"),
    "in_charge": ("分管责任人", "in charge"),
    "directly_responsible": ("具体责任人", "directly responsible"),
    "leader_in_liaison": ("挂点领导", "leader in liaison"),
}
_DIMENSION = {
    "unit": ("责任单位", "unit"),
    "person": ("责任人", "person"),
    "grid": ("网格", "grid"),
    "total": ("合计", "total"),
}
#: Headings of the per-dimension tables.
_DIMENSION_HEADING = {
    "unit": ("按责任单位", "By unit"),
    "person": ("按责任人", "By person"),
    "grid": ("按网格", "By grid"),
}

#: Words of the page furniture: key -> (中文, English).
_WORDS: dict[str, tuple[str, str]] = {
    "overdue_title": ("超期隐患报告", "Overdue hazards"),
    "accountability_title": ("隐患治理考核报告", "Accountability report"),
    "as_of": ("截至", "as of"),
    "timezone": ("时区", "timezone"),
    "chain_head": ("事件链头", "event chain head"),
    "overdue_steps": ("超期环节", "overdue steps"),
    "overdue_hazards": ("超期隐患", "overdue hazards"),
    "open_cases": ("在办隐患", "open cases"),
    "parked_cases": ("挂账隐患", "parked cases"),
    "overdue_share": ("超期占比", "share overdue"),
    "major_overdue": ("重大隐患超期", "major hazards overdue"),
    "max_days": ("最长超期（工作日）", "longest overdue (working days)"),
    "provisional_count": ("临时期限", "provisional deadlines"),
    "by_grid_step": ("按网格和环节的超期数", "Overdue by grid and step"),
    "ageing": ("超期时长（工作日）", "Overdue ageing (working days late)"),
    "by_step": ("按环节", "By step"),
    "by_grid": ("按网格", "By grid"),
    "by_unit": ("按责任单位", "By unit"),
    "details": ("超期明细", "Overdue steps"),
    "summary": ("汇总", "Summary"),
    "other_grids": ("其他网格", "other grids"),
    "no_unit": ("（未交办）", "(not assigned yet)"),
    "none_overdue": ("无超期隐患。", "Nothing is overdue."),
    "count": ("数量", "count"),
    "max_days_short": ("最长超期", "longest"),
    "provisional_note": (
        "* 临时：期限或超期工作日超出已知的法定工作日历，按周一至周五计算。",
        "* provisional: the deadline or the working days late run past the known statutory "
        "calendar (counted Mon–Fri).",
    ),
    "estimated_note": (
        "≈ 含日历未覆盖日期（{day} 起），工作日按周一至周五估算；"
        "请在 HAZARDLOOP_CALENDAR 指定的日历文件中补充 {year} 年。",
        "≈ includes days past the working-day calendar (from {day}): counted Monday–Friday; "
        "add {year} to the calendar file named by HAZARDLOOP_CALENDAR.",
    ),
    "period": ("考核期", "period"),
    "period_range": ("起止", "from – to"),
    "indicators": ("考核指标", "Indicators"),
    "indicator": ("指标", "indicator"),
    "formula": ("计算方法", "formula"),
    "value": ("数值", "value"),
    "on_time_by_unit": ("各责任单位按期处置率", "On-time disposal rate by unit"),
    "rows_shown": ("仅显示超期最久的 {n} 条，共 {total} 条", "the {n} most overdue of {total}"),
    "footer": (
        "由 hazard-loop 根据事件日志生成；日期为当地时间。",
        "Generated by hazard-loop from the event log; local times.",
    ),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "to": ("至", "to"),
}


def _w(key: str, lang: str) -> str:
    zh, en = _WORDS[key]
    return zh if lang == "zh" else en


def _pick(table: dict[str, tuple[str, str]], value: str | None, lang: str) -> str:
    if value is None:
        return ""
    pair = table.get(value)
    if pair is None:
        return value
    return pair[0] if lang == "zh" else pair[1]


def _limit(limit: str, lang: str) -> str:
    """'10wd' -> 10个工作日 / 10 working days; 'given' -> 指定期限 / given."""
    units = {"wd": ("个工作日", " working days"), "d": ("天", " days"), "h": ("小时", " h")}
    for suffix in ("wd", "d", "h"):
        number = limit[: -len(suffix)]
        if limit.endswith(suffix) and number.isdigit():
            zh, en = units[suffix]
            return f"{number}{zh}" if lang == "zh" else f"{number}{en}"
    if limit in ("given", "plan"):
        return "指定期限" if lang == "zh" else limit
    return limit


def _check(fmt: str, lang: str) -> None:
    if fmt not in FORMATS:
        raise InvalidCommand(
            f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}", format=fmt
        )
    if lang not in LANGS:
        raise InvalidCommand(f"unknown report language {lang!r}: use zh or en", lang=lang)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidCommand(f"unknown timezone {name!r} in the report", timezone=name) from None


# ---------------------------------------------------------------- columns


@dataclass(frozen=True)
class _Column:
    """One column of a people's format: its header in both languages and how to get its value."""

    key: str
    zh: str
    en: str
    get: Callable[[Any, str], Any]  # (row, lang) -> str | int | float | datetime | None
    kind: str = "text"  # text | int | float | datetime | date | rate
    width: int = 12  # xlsx column width, in characters

    def header(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


def _attr(name: str) -> Callable[[Any, str], Any]:
    return lambda row, lang: getattr(row, name)


def _yes_no(value: bool, lang: str) -> str:
    return _w("yes" if value else "no", lang)


def _grid_label(code: str, name: str | None) -> str:
    return f"{code} {name}" if name else code


_OVERDUE_COLUMNS: tuple[_Column, ...] = (
    _Column("hazard_id", "隐患编号", "hazard id", _attr("hazard_id"), width=18),
    _Column("title", "隐患名称", "title", _attr("title"), width=30),
    _Column("grid", "网格编码", "grid", _attr("grid"), width=14),
    _Column("grid_name", "网格名称", "grid name", _attr("grid_name"), width=16),
    _Column("category", "类别", "category", lambda r, lang: _pick(_CATEGORY, r.category, lang)),
    _Column("grade", "等级", "grade", lambda r, lang: _pick(_GRADE, r.grade, lang), width=10),
    _Column("step", "环节", "step", lambda r, lang: _pick(_STEP, r.step, lang), width=8),
    _Column("holder", "当前责任方", "holder", lambda r, lang: _pick(_HOLDER, r.holder, lang)),
    _Column("unit", "责任单位", "unit", _attr("unit"), width=22),
    _Column("person", "责任人", "person", _attr("person"), width=10),
    *(
        _Column(f"chain.{post}", _POST[post][0], _POST[post][1],
                (lambda p: lambda r, lang: r.chain.get(p))(post), width=10)
        for post in POSTS
    ),
    _Column("started_at", "环节开始", "step started", _attr("started_at"), "datetime", 17),
    _Column("due", "办理期限", "due", _attr("due"), "datetime", 17),
    _Column("original_due", "原定期限", "original due", _attr("original_due"), "datetime", 17),
    _Column("limit", "时限", "limit", lambda r, lang: _limit(r.limit, lang), width=10),
    _Column("provisional", "临时期限", "provisional",
            lambda r, lang: _yes_no(r.provisional, lang), width=9),
    _Column("overdue_working_days", "超期工作日", "working days overdue",
            _attr("overdue_working_days"), "int", 10),
    _Column("overdue_hours", "超期小时", "hours overdue", _attr("overdue_hours"), "float", 10),
    _Column("extensions", "延期次数", "extensions", _attr("extensions"), "int", 9),
)  # fmt: skip

_COUNT_COLUMNS: tuple[_Column, ...] = (
    _Column("due", "应处置", "due", _attr("due"), "int", 9),
    _Column("handled", "已处置", "handled", _attr("handled"), "int", 9),
    _Column("on_time", "按期处置", "on time", _attr("on_time"), "int", 9),
    _Column("late", "超期处置", "late", _attr("late"), "int", 9),
    _Column("still_overdue", "超期未处置", "still overdue", _attr("still_overdue"), "int", 10),
    _Column("extended", "延期", "extended", _attr("extended"), "int", 8),
    _Column("rework", "返工", "rework", _attr("rework"), "int", 8),
    _Column("due_for_closure", "应结案", "due for closure", _attr("due_for_closure"), "int", 9),
    _Column("closed", "已结案", "closed", _attr("closed"), "int", 9),
    _Column("closed_on_time", "按期结案", "closed on time", _attr("closed_on_time"), "int", 9),
    _Column("avg_working_days", "平均用时（工作日）", "avg working days",
            _attr("avg_working_days"), "float", 12),
)  # fmt: skip

_INDICATOR_COLUMNS: tuple[_Column, ...] = tuple(
    _Column(key, zh, en, (lambda k: lambda r, lang: r.indicators.get(k))(key), "rate", 12)
    for key, zh, en, _ in INDICATORS
)

_ACCOUNTABILITY_COLUMNS: tuple[_Column, ...] = (
    _Column("dimension", "维度", "dimension", lambda r, lang: _pick(_DIMENSION, r.dimension, lang),
            width=10),
    _Column("key", "编码/名称", "key", _attr("key"), width=22),
    _Column("name", "网格名称", "name", _attr("name"), width=16),
    *_COUNT_COLUMNS,
    *_INDICATOR_COLUMNS,
)  # fmt: skip


#: Working-day counts that may be estimates (the row's `estimated`): "≈" before them for people.
_ESTIMABLE = ("overdue_working_days", "avg_working_days")


def _approximate(column: _Column) -> _Column:
    """The column with "≈" before the value of a row whose working days are estimated."""

    def get(row: Any, lang: str) -> Any:
        value = column.get(row, lang)
        if value is None or not row.estimated:
            return value
        return "≈" + (_number(value) if isinstance(value, float) else str(value))

    return dataclasses.replace(column, get=get)


def _marked(columns: Sequence[_Column]) -> list[_Column]:
    """The columns as people read them (table, CSV, HTML): estimated counts marked "≈"."""
    return [_approximate(c) if c.key in _ESTIMABLE else c for c in columns]


def _estimated_note(first: date | None, lang: str) -> str | None:
    """The note under a report whose working days were counted past the calendar."""
    if first is None:
        return None
    return _w("estimated_note", lang).format(day=first.isoformat(), year=first.year)


def _local(value: datetime, tz: tzinfo) -> datetime:
    return value.astimezone(tz)


def _stamp(value: datetime, tz: tzinfo) -> str:
    """A local date-time for people: 2026-11-20 18:00."""
    return _local(value, tz).strftime("%Y-%m-%d %H:%M")


def _rfc3339(value: datetime, tz: tzinfo) -> str:
    return _local(value, tz).isoformat(timespec="seconds")


def _number(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _text(value: Any, kind: str, tz: tzinfo) -> str:
    """A cell as people read it (table, CSV, HTML)."""
    if kind == "rate":
        return _percent(value)
    if value is None:
        return "—" if kind == "float" else ""
    if isinstance(value, datetime):
        return _local(value, tz).date().isoformat() if kind == "date" else _stamp(value, tz)
    if isinstance(value, float):
        return _number(value)
    return str(value)


def _cell(value: Any, kind: str, tz: tzinfo) -> Any:
    """A cell as a spreadsheet holds it: local date-times without offset, rates as fractions."""
    if kind in ("rate", "float") and value is None:
        return "—"
    if isinstance(value, datetime):
        return _local(value, tz).replace(tzinfo=None, microsecond=0)
    return value


# ---------------------------------------------------------------- summary


@dataclass(frozen=True)
class _OverdueSummary:
    steps: int
    hazards: int
    open_cases: int
    parked_cases: int
    share: float | None
    major: int
    max_days: int | None
    provisional: int
    by_step: dict[str, int]
    by_grid: list[tuple[str, dict[str, int]]]  # grid label -> step -> count, busiest first
    by_unit: list[tuple[str | None, int, int, int]]  # unit, count, major, max days
    ageing: list[int]


def _summarise(report: OverdueReport) -> _OverdueSummary:
    rows = report.rows
    hazards = len({r.hazard_id for r in rows})
    by_step = dict.fromkeys(_STEPS, 0)
    grids: dict[str, Counter[str]] = {}
    labels: dict[str, str] = {}
    units: dict[str | None, list[OverdueRow]] = {}
    for r in rows:
        by_step[r.step] = by_step.get(r.step, 0) + 1
        grids.setdefault(r.grid, Counter())[r.step] += 1
        labels.setdefault(r.grid, _grid_label(r.grid, r.grid_name))
        units.setdefault(r.unit, []).append(r)
    by_grid = sorted(grids.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    ageing = [
        sum(
            1
            for r in rows
            if lo <= r.overdue_working_days and (hi is None or r.overdue_working_days <= hi)
        )
        for _, _, lo, hi in AGEING_BUCKETS
    ]
    by_unit = sorted(
        (
            (unit, len(rs), sum(r.grade == "major" for r in rs),
             max(r.overdue_working_days for r in rs))
            for unit, rs in units.items()
        ),
        key=lambda t: (-t[1], t[0] is None, t[0] or ""),
    )  # fmt: skip
    return _OverdueSummary(
        steps=len(rows),
        hazards=hazards,
        open_cases=report.open_cases,
        parked_cases=report.parked_cases,
        share=round(hazards / report.open_cases, 6) if report.open_cases else None,
        major=sum(r.grade == "major" for r in rows),
        max_days=max((r.overdue_working_days for r in rows), default=None),
        provisional=sum(r.provisional for r in rows),
        by_step=by_step,
        by_grid=[(labels[code], dict(counts)) for code, counts in by_grid],
        by_unit=by_unit,
        ageing=ageing,
    )


def _overdue_figures(s: _OverdueSummary, lang: str) -> list[tuple[str, str]]:
    return [
        (_w("overdue_hazards", lang), str(s.hazards)),
        (_w("open_cases", lang), str(s.open_cases)),
        (_w("overdue_share", lang), _percent(s.share)),
        (_w("parked_cases", lang), str(s.parked_cases)),
        (_w("major_overdue", lang), str(s.major)),
        (_w("max_days", lang), "—" if s.max_days is None else str(s.max_days)),
        (_w("provisional_count", lang), str(s.provisional)),
    ]


def _as_of_line(as_of: datetime, timezone: str, tz: tzinfo, lang: str) -> str:
    return f"{_w('as_of', lang)} {_stamp(as_of, tz)} ({timezone})"


# ------------------------------------------------------------- public API


def render_overdue(report: OverdueReport, fmt: str, lang: str = "zh") -> bytes:
    """The overdue report as `fmt` (table, json, csv, xlsx, html), in `lang` (zh or en)."""
    _check(fmt, lang)
    tz = _zone(report.timezone)
    if fmt == "json":
        return _overdue_json(report, tz)
    if fmt == "csv":
        return _csv(_marked(_OVERDUE_COLUMNS), report.rows, lang, tz)
    if fmt == "xlsx":
        return _overdue_xlsx(report, lang, tz)
    if fmt == "html":
        return _overdue_html(report, lang, tz)
    return _overdue_text(report, lang, tz)


def render_accountability(report: AccountabilityReport, fmt: str, lang: str = "zh") -> bytes:
    """The accountability report as `fmt` (table, json, csv, xlsx, html), in `lang`."""
    _check(fmt, lang)
    tz = _zone(report.timezone)
    if fmt == "json":
        return _accountability_json(report, tz)
    if fmt == "csv":
        return _csv(_marked(_ACCOUNTABILITY_COLUMNS), [*report.rows, report.totals], lang, tz)
    if fmt == "xlsx":
        return _accountability_xlsx(report, lang, tz)
    if fmt == "html":
        return _accountability_html(report, lang, tz)
    return _accountability_text(report, lang, tz)


# ------------------------------------------------------------------- JSON


def _json(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _chain(chain: dict[str, str]) -> dict[str, str]:
    ordered = {post: chain[post] for post in POSTS if post in chain}
    ordered.update({k: chain[k] for k in sorted(chain) if k not in ordered})
    return ordered


def _overdue_row_json(r: OverdueRow, tz: tzinfo) -> dict[str, Any]:
    return {
        "hazard_id": r.hazard_id, "title": r.title, "grid": r.grid, "grid_name": r.grid_name,
        "category": r.category, "grade": r.grade, "step": r.step, "holder": r.holder,
        "unit": r.unit, "person": r.person, "chain": _chain(r.chain),
        "started_at": _rfc3339(r.started_at, tz), "due": _rfc3339(r.due, tz),
        "original_due": _rfc3339(r.original_due, tz), "limit": r.limit,
        "provisional": r.provisional, "estimated": r.estimated,
        "overdue_working_days": r.overdue_working_days,
        "overdue_hours": r.overdue_hours, "extensions": r.extensions,
    }  # fmt: skip


def _overdue_json(report: OverdueReport, tz: tzinfo) -> bytes:
    return _json(
        {
            "report": "overdue",
            "as_of": _rfc3339(report.as_of, tz),
            "timezone": report.timezone,
            "open_cases": report.open_cases,
            "parked_cases": report.parked_cases,
            "overdue": len(report.rows),
            "chain_head": report.chain_head,
            "estimated_from": _day(report.estimated_from),
            "rows": [_overdue_row_json(r, tz) for r in report.rows],
        }
    )


def _accountability_row_json(r: AccountabilityRow) -> dict[str, Any]:
    return {
        "dimension": r.dimension, "key": r.key, "name": r.name, "due": r.due,
        "handled": r.handled, "on_time": r.on_time, "late": r.late,
        "still_overdue": r.still_overdue, "extended": r.extended, "rework": r.rework,
        "closed": r.closed, "closed_on_time": r.closed_on_time,
        "due_for_closure": r.due_for_closure, "avg_working_days": r.avg_working_days,
        "estimated": r.estimated,
        "indicators": {key: r.indicators.get(key) for key, _, _, _ in INDICATORS},
    }  # fmt: skip


def _accountability_json(report: AccountabilityReport, tz: tzinfo) -> bytes:
    p = report.period
    return _json(
        {
            "report": "accountability",
            "period": {"label": p.label, "start": p.start.isoformat(), "end": p.end.isoformat()},
            "as_of": _rfc3339(report.as_of, tz),
            "timezone": report.timezone,
            "chain_head": report.chain_head,
            "estimated_from": _day(report.estimated_from),
            "indicators": [
                {"key": key, "zh": zh, "en": en, "formula": formula}
                for key, zh, en, formula in INDICATORS
            ],
            "totals": _accountability_row_json(report.totals),
            "rows": [_accountability_row_json(r) for r in report.rows],
        }
    )


# -------------------------------------------------------------------- CSV


def _csv(columns: Sequence[_Column], rows: Iterable[Any], lang: str, tz: tzinfo) -> bytes:
    """UTF-8 with a byte-order mark (so Excel reads the Chinese), CRLF line ends, one header."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.header(lang) for c in columns])
    for row in rows:
        writer.writerow([_text(c.get(row, lang), c.kind, tz) for c in columns])
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")


# ------------------------------------------------------------- plain text


def _plain_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    """Columns padded by display width (a Chinese character is two cells wide)."""
    from rich.cells import cell_len

    widths = [cell_len(h) for h in headers]
    for row in rows:
        widths = [max(w, cell_len(v)) for w, v in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        cells = []
        for value, width, r in zip(values, widths, right, strict=True):
            pad = " " * (width - cell_len(value))
            cells.append(pad + value if r else value + pad)
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)]) + "\n"


_OVERDUE_TEXT_KEYS = ("hazard_id", "grid", "step", "grade", "holder", "due",
                      "overdue_working_days", "overdue_hours", "title")  # fmt: skip


def _columns(columns: Sequence[_Column], keys: Sequence[str]) -> list[_Column]:
    by_key = {c.key: c for c in columns}
    return [by_key[k] for k in keys]


def _overdue_text(report: OverdueReport, lang: str, tz: tzinfo) -> bytes:
    s = _summarise(report)
    cols = _marked(_columns(_OVERDUE_COLUMNS, _OVERDUE_TEXT_KEYS))
    head = [
        f"{_w('overdue_title', lang)} · {_as_of_line(report.as_of, report.timezone, tz, lang)}",
        " · ".join(f"{label} {value}" for label, value in _overdue_figures(s, lang)),
    ]
    if report.chain_head:
        head.append(f"{_w('chain_head', lang)} {report.chain_head}")
    note = _estimated_note(report.estimated_from, lang)
    if note:
        head.append(note)
    table = _plain_table(
        [c.header(lang) for c in cols],
        [[_text(c.get(r, lang), c.kind, tz) for c in cols] for r in report.rows],
        [c.kind in ("int", "float", "rate") for c in cols],
    )
    return ("\n".join(head) + "\n\n" + table).encode("utf-8")


def _accountability_head(report: AccountabilityReport, lang: str, tz: tzinfo) -> list[str]:
    p = report.period
    head = [
        f"{_w('accountability_title', lang)} {p.label} · {_w('period', lang)} "
        f"{p.start.isoformat()} {_w('to', lang)} {p.end.isoformat()} · "
        f"{_as_of_line(report.as_of, report.timezone, tz, lang)}",
        " · ".join(
            f"{c.header(lang)} {_text(c.get(report.totals, lang), c.kind, tz)}"
            for c in (*_COUNT_COLUMNS[:5], *_INDICATOR_COLUMNS)
        ),
    ]
    if report.chain_head:
        head.append(f"{_w('chain_head', lang)} {report.chain_head}")
    note = _estimated_note(report.estimated_from, lang)
    if note:
        head.append(note)
    return head


_DIMENSIONS = ("unit", "person", "grid")


def _dimension_columns(dimension: str) -> list[_Column]:
    """The columns of one dimension's table: a grid's name only for grids."""
    return [c for c in _ACCOUNTABILITY_COLUMNS[1:] if c.key != "name" or dimension == "grid"]


def _accountability_text(report: AccountabilityReport, lang: str, tz: tzinfo) -> bytes:
    parts = ["\n".join(_accountability_head(report, lang, tz)) + "\n"]
    for dim in _DIMENSIONS:
        rows = [r for r in report.rows if r.dimension == dim]
        if not rows:
            continue
        cols = _marked(_dimension_columns(dim))
        table = _plain_table(
            [c.header(lang) for c in cols],
            [[_text(c.get(r, lang), c.kind, tz) for c in cols] for r in rows],
            [c.kind in ("int", "float", "rate") for c in cols],
        )
        parts.append(f"{_pick(_DIMENSION_HEADING, dim, lang)}\n{table}")
    return "\n".join(parts).encode("utf-8")


# ------------------------------------------------------------------- xlsx


def _sheet(wb: Any, title: str, columns: Sequence[_Column], rows: Iterable[Any],
           lang: str, tz: tzinfo) -> Any:  # fmt: skip
    """A sheet of one header row (bold, frozen, filtered) and one row per record."""
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    ws = wb.create_sheet(title)
    ws.append([c.header(lang) for c in columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    count = 1
    estimable = [i for i, c in enumerate(columns, start=1) if c.key in _ESTIMABLE]
    for row in rows:
        ws.append([_cell(c.get(row, lang), c.kind, tz) for c in columns])
        count += 1
        if getattr(row, "estimated", False):
            for i in estimable:  # still a number, shown "≈52": counted past the calendar
                ws.cell(row=count, column=i).number_format = '"≈"General'
    for i, c in enumerate(columns, start=1):
        letter = get_column_letter(i)
        ws.column_dimensions[letter].width = c.width
        fmt = {"datetime": "yyyy-mm-dd hh:mm", "rate": "0.00%"}.get(c.kind)
        if fmt:
            for (cell,) in ws.iter_rows(min_row=2, max_row=count, min_col=i, max_col=i):
                cell.number_format = fmt
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{count}"
    return ws


def _summary_sheet(wb: Any, title: str, pairs: Sequence[tuple[str, Any, str]], tz: tzinfo) -> Any:
    """A two-column sheet of (label, value, kind); kind "heading" is a bold label alone, "note"
    a label alone, "approx" a number shown "≈" (counted past the calendar)."""
    from openpyxl.styles import Font

    ws = wb.create_sheet(title)
    row = 0
    for label, value, kind in pairs:
        row += 1
        if kind == "blank":
            continue
        ws.cell(row=row, column=1, value=label)
        if kind == "heading":
            ws.cell(row=row, column=1).font = Font(bold=True)
            continue
        if kind == "note":
            continue
        cell = ws.cell(row=row, column=2, value=_cell(value, kind, tz))
        if kind == "datetime":
            cell.number_format = "yyyy-mm-dd hh:mm"
        elif kind == "approx" and value is not None:
            cell.number_format = '"≈"General'
        elif kind == "rate" and value is not None:
            cell.number_format = "0.00%"
    ws.column_dimensions["A"].width = 40
    ws.column_dimensions["B"].width = 30
    return ws


def _workbook_bytes(wb: Any, as_of: datetime) -> bytes:
    """Save with document properties and zip entries all dated `as_of`: the same bytes each time."""
    from openpyxl.writer.excel import ExcelWriter

    stamp = as_of.replace(tzinfo=None, microsecond=0)
    wb.properties.created = stamp
    wb.properties.modified = stamp
    wb.properties.creator = "hazard-loop"
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).write_data()
    out = io.BytesIO()
    date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    with (
        zipfile.ZipFile(raw) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for name in sorted(source.namelist(), key=lambda n: (n != "[Content_Types].xml", n)):
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            info.create_system = 3
            target.writestr(info, source.read(name))
    return out.getvalue()


def _new_workbook() -> Any:
    from openpyxl import Workbook

    wb = Workbook()
    for sheet in list(wb.worksheets):
        wb.remove(sheet)
    return wb


_BLANK = ("", None, "blank")


def _overdue_xlsx(report: OverdueReport, lang: str, tz: tzinfo) -> bytes:
    s = _summarise(report)
    wb = _new_workbook()
    _sheet(wb, _w("overdue_hazards", lang), _OVERDUE_COLUMNS, report.rows, lang, tz)
    pairs: list[tuple[str, Any, str]] = [
        (_w("overdue_title", lang), None, "heading"),
        (_w("as_of", lang), report.as_of, "datetime"),
        (_w("timezone", lang), report.timezone, "text"),
        (_w("overdue_steps", lang), s.steps, "int"),
        (_w("overdue_hazards", lang), s.hazards, "int"),
        (_w("open_cases", lang), s.open_cases, "int"),
        (_w("parked_cases", lang), s.parked_cases, "int"),
        (_w("overdue_share", lang), s.share, "rate"),
        (_w("major_overdue", lang), s.major, "int"),
        (_w("max_days", lang), s.max_days, "int"),
        (_w("provisional_count", lang), s.provisional, "int"),
    ]
    if report.chain_head:
        pairs.append((_w("chain_head", lang), report.chain_head, "text"))
    note = _estimated_note(report.estimated_from, lang)
    if note:
        pairs.append((note, None, "note"))
    pairs += [_BLANK, (_w("by_step", lang), None, "heading")]
    pairs += [(_pick(_STEP, step, lang), n, "int") for step, n in s.by_step.items()]
    pairs += [_BLANK, (_w("ageing", lang), None, "heading")]
    pairs += [
        (zh if lang == "zh" else en, n, "int")
        for (zh, en, _, _), n in zip(AGEING_BUCKETS, s.ageing, strict=True)
    ]
    pairs += [_BLANK, (_w("by_grid", lang), None, "heading")]
    pairs += [(label, sum(counts.values()), "int") for label, counts in s.by_grid]
    pairs += [_BLANK, (_w("by_unit", lang), None, "heading")]
    pairs += [(unit or _w("no_unit", lang), n, "int") for unit, n, _, _ in s.by_unit]
    _summary_sheet(wb, _w("summary", lang), pairs, tz)
    return _workbook_bytes(wb, _local(report.as_of, tz))


def _accountability_xlsx(report: AccountabilityReport, lang: str, tz: tzinfo) -> bytes:
    p = report.period
    t = report.totals
    wb = _new_workbook()
    pairs: list[tuple[str, Any, str]] = [
        (f"{_w('accountability_title', lang)} {p.label}", None, "heading"),
        (_w("period", lang), f"{p.start.isoformat()} {_w('to', lang)} {p.end.isoformat()}", "text"),
        (_w("as_of", lang), report.as_of, "datetime"),
        (_w("timezone", lang), report.timezone, "text"),
    ]
    if report.chain_head:
        pairs.append((_w("chain_head", lang), report.chain_head, "text"))
    note = _estimated_note(report.estimated_from, lang)
    if note:
        pairs.append((note, None, "note"))
    pairs += [_BLANK, (_pick(_DIMENSION, "total", lang), None, "heading")]
    pairs += [
        (
            c.header(lang),
            c.get(t, lang),
            "approx" if c.key in _ESTIMABLE and t.estimated else c.kind,
        )
        for c in _COUNT_COLUMNS
    ]
    pairs += [_BLANK, (_w("indicators", lang), None, "heading")]
    pairs += [
        (f"{zh if lang == 'zh' else en} = {formula}", t.indicators.get(key), "rate")
        for key, zh, en, formula in INDICATORS
    ]
    _summary_sheet(wb, _w("summary", lang), pairs, tz)
    columns = _ACCOUNTABILITY_COLUMNS[1:]
    for dim in _DIMENSIONS:
        rows = [r for r in report.rows if r.dimension == dim]
        _sheet(wb, _pick(_DIMENSION, dim, lang), columns, rows, lang, tz)
    return _workbook_bytes(wb, _local(report.as_of, tz))


# ------------------------------------------------------------------- HTML

_CSS = """
*{box-sizing:border-box}
body{font-family:"PingFang SC","Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC",
"Source Han Sans SC",system-ui,sans-serif;color:#1f2328;margin:24px;font-size:14px;
line-height:1.45;-webkit-print-color-adjust:exact;print-color-adjust:exact}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:24px 0 8px;border-bottom:2px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin:0 0 16px}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 16px}
.figure{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:120px}
.figure .value{display:block;font-size:24px;font-weight:700}
.figure .label{color:#57606a;font-size:12px}
.figure.alert .value{color:#cf222e}
.charts{display:flex;flex-wrap:wrap;gap:24px}
figure{margin:16px 0;break-inside:avoid}
figcaption{font-weight:600;margin-bottom:6px}
svg text{font-family:inherit;font-size:12px;fill:#1f2328}
table{border-collapse:collapse;width:100%;font-size:12px}
table.compact{width:auto;min-width:50%}
th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num,th.num{text-align:right}
td.num{white-space:nowrap}
td.name{min-width:9em}
td.nowrap{white-space:nowrap}
tr.major td{background:#fff1f0}
thead{display:table-header-group}
tr{break-inside:avoid}
.note,footer{color:#57606a;font-size:12px;margin-top:8px}
@page{size:A4 landscape;margin:12mm}
@media print{body{margin:0;font-size:12px}table{font-size:10px}h2{break-after:avoid}}
"""

_STEP_COLOURS = {
    "report": "#8c96a0",
    "assign": "#4c78a8",
    "rectify": "#e45756",
    "verify": "#f58518",
    "close": "#54a24b",
}
_AGEING_COLOURS = ("#f2cc8f", "#f4a261", "#e76f51", "#9b2226")


def _page(title: str, lang: str, body: list[str]) -> bytes:
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{html_lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    ).encode("utf-8")


def _figures_html(figures: Sequence[tuple[str, str]], alert: Sequence[str] = ()) -> str:
    cards = [
        f'<div class="figure{" alert" if label in alert else ""}">'
        f'<span class="value">{escape(value)}</span>'
        f'<span class="label">{escape(label)}</span></div>'
        for label, value in figures
    ]
    return '<section class="figures">' + "".join(cards) + "</section>"


def _table_html(
    columns: Sequence[_Column],
    rows: Sequence[Any],
    lang: str,
    tz: tzinfo,
    row_class: Callable[[Any], str] = lambda r: "",
    decorate: Callable[[Any, _Column, str], str] | None = None,
    compact: bool = False,
) -> str:
    numeric = ("int", "float", "rate")
    short = ("hazard_id", "grid", "grade", "step", "limit")
    head = "".join(
        f"<th{' class=num' if c.kind in numeric else ''}>{escape(c.header(lang))}</th>"
        for c in columns
    )
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text = escape(_text(c.get(r, lang), c.kind, tz))
            if decorate is not None:
                text = decorate(r, c, text)
            if c.kind in numeric:
                css = "num"
            elif c.kind == "datetime" or c.key in short:
                css = "nowrap"
            else:
                css = "name" if c.key in ("key", "unit", "holder") else ""
            cells.append(f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>")
        cls = row_class(r)
        body.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(cells) + "</tr>")
    return (
        f"<table{' class=compact' if compact else ''}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def _svg_text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def _stacked_bars_svg(
    bars: Sequence[tuple[str, dict[str, int]]], lang: str, label_width: int = 190
) -> str:
    """Horizontal bars, one per grid, stacked by step, with a legend and the totals."""
    row, top, plot = 22, 30, 420
    width = label_width + plot + 50
    height = top + row * len(bars) + 10
    most = max((sum(c.values()) for _, c in bars), default=0) or 1
    parts = [
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(_w('by_grid_step', lang))}</title>",
    ]
    x = float(label_width)
    for step in _STEPS:
        parts.append(f'<rect x="{x:g}" y="6" width="12" height="12" fill="{_STEP_COLOURS[step]}"/>')
        parts.append(_svg_text(x + 16, 16, _pick(_STEP, step, lang)))
        x += 70
    for i, (label, counts) in enumerate(bars):
        y = top + i * row
        parts.append(_svg_text(label_width - 8, y + 15, label, "end"))
        x = float(label_width)
        for step in [*_STEPS, *sorted(set(counts) - set(_STEPS))]:
            n = counts.get(step, 0)
            if not n:
                continue
            w = plot * n / most
            tip = f"{label} · {_pick(_STEP, step, lang)}: {n}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                f'fill="{_STEP_COLOURS.get(step, "#999999")}"><title>{escape(tip)}</title></rect>'
            )
            x += w
        parts.append(_svg_text(x + 6, y + 15, str(sum(counts.values()))))
    parts.append("</svg>")
    return "".join(parts)


def _columns_svg(values: Sequence[tuple[str, int]], colours: Sequence[str], title: str) -> str:
    """Vertical bars with their counts above and labels below."""
    bar, gap, plot, top = 70, 30, 160, 20
    width = gap + len(values) * (bar + gap)
    height = top + plot + 40
    most = max((v for _, v in values), default=0) or 1
    parts = [
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{gap / 2:g}" y1="{top + plot}" x2="{width - gap / 2:g}" y2="{top + plot}" '
        'stroke="#57606a"/>',
    ]
    for i, ((label, n), colour) in enumerate(zip(values, colours, strict=True)):
        x = gap + i * (bar + gap)
        h = plot * n / most
        parts.append(
            f'<rect x="{x}" y="{top + plot - h:.1f}" width="{bar}" height="{h:.1f}" '
            f'fill="{colour}"><title>{escape(f"{label}: {n}")}</title></rect>'
        )
        parts.append(_svg_text(x + bar / 2, top + plot - h - 5, str(n), "middle"))
        parts.append(_svg_text(x + bar / 2, top + plot + 18, label, "middle"))
    parts.append("</svg>")
    return "".join(parts)


def _rate_bars_svg(bars: Sequence[tuple[str, float | None]], title: str) -> str:
    """Horizontal bars of rates between 0 and 100 %, with the value after each bar."""
    label_width, row, plot, top = 220, 20, 360, 6
    width = label_width + plot + 70
    height = top + row * len(bars) + 6
    parts = [
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        parts.append(_svg_text(label_width - 8, y + 14, label, "end"))
        w = plot * (value or 0.0)
        parts.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{plot}" height="{row - 6}" '
            'fill="#eaeef2"/>'
        )
        parts.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
            'fill="#4c78a8"/>'
        )
        parts.append(_svg_text(label_width + plot + 6, y + 14, _percent(value)))
    parts.append("</svg>")
    return "".join(parts)


_OVERDUE_HTML_KEYS = ("hazard_id", "title", "category", "grade", "step", "holder", "unit",
                      "person", "due", "limit", "overdue_working_days", "overdue_hours",
                      "extensions")  # fmt: skip


def _chain_html(r: OverdueRow, lang: str) -> str:
    return "<br>".join(
        f"{escape(_pick(_POST, post, lang))}：{escape(person)}"
        for post, person in _chain(r.chain).items()
    )


def _overdue_html(report: OverdueReport, lang: str, tz: tzinfo) -> bytes:
    s = _summarise(report)
    title = f"{_w('overdue_title', lang)} {_local(report.as_of, tz).date().isoformat()}"
    meta = _as_of_line(report.as_of, report.timezone, tz, lang)
    if report.chain_head:
        meta += f" · {_w('chain_head', lang)} {report.chain_head}"
    body = [
        f"<header><h1>{escape(title)}</h1><p class=meta>{escape(meta)}</p></header>",
        _figures_html(
            _overdue_figures(s, lang),
            alert=(_w("overdue_hazards", lang), _w("major_overdue", lang)),
        ),
    ]
    note = _estimated_note(report.estimated_from, lang)
    if note:
        body.append(f"<p class=note>{escape(note)}</p>")
    if report.rows:
        shown = s.by_grid[:15]
        rest = s.by_grid[15:]
        if rest:
            merged: Counter[str] = Counter()
            for _, counts in rest:
                merged.update(counts)
            shown = [*shown, (f"{_w('other_grids', lang)} ({len(rest)})", dict(merged))]
        ageing = [
            (b[0] if lang == "zh" else b[1], n)
            for b, n in zip(AGEING_BUCKETS, s.ageing, strict=True)
        ]
        body.append(
            '<section class="charts">'
            f"<figure><figcaption>{escape(_w('by_grid_step', lang))}</figcaption>"
            f"{_stacked_bars_svg(shown, lang)}</figure>"
            f"<figure><figcaption>{escape(_w('ageing', lang))}</figcaption>"
            f"{_columns_svg(ageing, _AGEING_COLOURS, _w('ageing', lang))}</figure>"
            "</section>"
        )
        unit_cols = (
            _Column("unit", _DIMENSION["unit"][0], _DIMENSION["unit"][1],
                    lambda t, lang: t[0] or _w("no_unit", lang), width=0),
            _Column("n", _w("overdue_steps", "zh"), _w("overdue_steps", "en"),
                    lambda t, lang: t[1], "int"),
            _Column("major", _w("major_overdue", "zh"), _w("major_overdue", "en"),
                    lambda t, lang: t[2], "int"),
            _Column("max", _w("max_days", "zh"), _w("max_days", "en"),
                    lambda t, lang: t[3], "int"),
        )  # fmt: skip
        body.append(f"<h2>{escape(_w('by_unit', lang))}</h2>")
        body.append(_table_html(unit_cols, s.by_unit, lang, tz, compact=True))
        grid = _Column(
            "grid", "网格", "grid", lambda r, lang: _grid_label(r.grid, r.grid_name), width=0
        )
        cols = _marked(_columns(_OVERDUE_COLUMNS, _OVERDUE_HTML_KEYS))
        cols.insert(2, grid)
        if any(r.chain for r in report.rows):
            cols.append(
                _Column("chain", "责任链", "chain of responsibility", lambda r, lang: "", width=0)
            )

        def decorate(r: OverdueRow, c: _Column, text: str) -> str:
            if c.key == "due" and r.provisional:
                return text + " *"
            if c.key == "chain":
                return _chain_html(r, lang)
            return text

        body.append(f"<h2>{escape(_w('details', lang))} ({s.steps})</h2>")
        body.append(
            _table_html(
                cols,
                report.rows,
                lang,
                tz,
                row_class=lambda r: "major" if r.grade == "major" else "",
                decorate=decorate,
            )
        )
        if s.provisional:
            body.append(f"<p class=note>{escape(_w('provisional_note', lang))}</p>")
    else:
        body.append(f"<p>{escape(_w('none_overdue', lang))}</p>")
    body.append(f"<footer>{escape(_w('footer', lang))}</footer>")
    return _page(title, lang, body)


def _accountability_html(report: AccountabilityReport, lang: str, tz: tzinfo) -> bytes:
    p = report.period
    t = report.totals
    title = f"{_w('accountability_title', lang)} {p.label}"
    meta = (
        f"{_w('period', lang)} {p.start.isoformat()} {_w('to', lang)} {p.end.isoformat()} · "
        + _as_of_line(report.as_of, report.timezone, tz, lang)
    )
    if report.chain_head:
        meta += f" · {_w('chain_head', lang)} {report.chain_head}"
    shown = _columns(
        _marked((*_COUNT_COLUMNS, *_INDICATOR_COLUMNS)),
        ("due", "handled", "on_time", "late", "still_overdue", "disposal_rate",
         "on_time_disposal_rate", "closure_rate", "avg_working_days"),
    )  # fmt: skip
    figures = [(c.header(lang), _text(c.get(t, lang), c.kind, tz)) for c in shown]
    body = [
        f"<header><h1>{escape(title)}</h1><p class=meta>{escape(meta)}</p></header>",
        _figures_html(figures, alert=(shown[4].header(lang),)),
    ]
    note = _estimated_note(report.estimated_from, lang)
    if note:
        body.append(f"<p class=note>{escape(note)}</p>")
    body.append(f"<h2>{escape(_w('indicators', lang))}</h2>")
    indicator_cols = (
        _Column("name", "指标", "indicator", lambda i, lang: i[1] if lang == "zh" else i[2]),
        _Column("key", "代码", "key", lambda i, lang: i[0]),
        _Column("formula", "计算方法", "formula", lambda i, lang: i[3]),
        _Column("value", "数值", "value", lambda i, lang: t.indicators.get(i[0]), "rate"),
    )
    body.append(_table_html(indicator_cols, INDICATORS, lang, tz, compact=True))
    units = [r for r in report.rows if r.dimension == "unit"]
    if units:
        bars = [(r.key, r.indicators.get("on_time_disposal_rate")) for r in units]
        body.append(
            f"<figure><figcaption>{escape(_w('on_time_by_unit', lang))}</figcaption>"
            f"{_rate_bars_svg(bars, _w('on_time_by_unit', lang))}</figure>"
        )
    for dim in _DIMENSIONS:
        rows = [r for r in report.rows if r.dimension == dim]
        if not rows:
            continue
        dim_cols = _marked(_dimension_columns(dim))
        heading = _pick(_DIMENSION_HEADING, dim, lang)
        body.append(f"<h2>{escape(heading)} ({len(rows)})</h2>")
        body.append(_table_html(dim_cols, rows, lang, tz))
    body.append(f"<footer>{escape(_w('footer', lang))}</footer>")
    return _page(title, lang, body)


# ------------------------------------------------------------------- rich


#: What fits a terminal 80 columns wide, and one at least `_WIDE` wide.
_WIDE = 140
_OVERDUE_RICH = (
    ("hazard_id", "grid", "step", "holder", "due_date", "overdue_working_days", "title"),
    ("hazard_id", "grid", "grade", "step", "holder", "person", "due", "limit",
     "overdue_working_days", "overdue_hours", "title"),
)  # fmt: skip
_ACCOUNTABILITY_RICH = (
    ("key", "due", "handled", "still_overdue", "disposal_rate", "on_time_disposal_rate"),
    ("key", "due", "handled", "on_time", "late", "still_overdue", "rework", "avg_working_days",
     "disposal_rate", "on_time_disposal_rate", "overdue_unhandled_rate"),
)  # fmt: skip
_DUE_DATE = _Column("due_date", "期限", "due", _attr("due"), "date")


def _plain_rich_table(title: str) -> Table:
    return Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )


def _rich_table(
    title: str,
    columns: Sequence[_Column],
    rows: Sequence[Any],
    lang: str,
    tz: tzinfo,
    width: int,
) -> Table:
    """When the table is wider than `width`, numbers get as narrow as their values (a long
    header folds); names and titles share the rest."""
    from rich.cells import cell_len

    cells = [[_text(c.get(r, lang), c.kind, tz) for c in columns] for r in rows]
    widths = [
        max([cell_len(c.header(lang)), *(cell_len(row[i]) for row in cells)])
        for i, c in enumerate(columns)
    ]
    squeeze = sum(widths) + 2 * len(columns) > width
    table = _plain_rich_table(title)
    for i, c in enumerate(columns):
        numeric = c.kind in ("int", "float", "rate")
        widest = max((cell_len(row[i]) for row in cells), default=0)
        table.add_column(
            c.header(lang),
            justify="right" if numeric else "left",
            no_wrap=c.kind in ("datetime", "date") or c.key in ("hazard_id", "grid"),
            ratio=1 if c.key in ("title", "holder", "key", "person") else None,
            max_width=max(widest, 4) if numeric and squeeze else None,
            overflow="fold",
        )
    for r, row in zip(rows, cells, strict=True):
        style = "red" if getattr(r, "grade", None) == "major" else ""
        table.add_row(*(Text(v) for v in row), style=style)
    return table


def print_overdue(
    report: OverdueReport, console: Console, lang: str = "zh", *, limit: int | None = None
) -> None:
    """The overdue report on a terminal: the summary line, then the table (the `limit` most
    overdue rows only, if given)."""
    _check("table", lang)
    tz = _zone(report.timezone)
    s = _summarise(report)
    line = f"{_w('overdue_title', lang)} · {_as_of_line(report.as_of, report.timezone, tz, lang)}"
    console.print(Text(line, style="bold"))
    console.print(Text(" · ".join(f"{k} {v}" for k, v in _overdue_figures(s, lang))))
    if report.chain_head:
        console.print(Text(f"{_w('chain_head', lang)} {report.chain_head}"))
    note = _estimated_note(report.estimated_from, lang)
    if note:
        console.print(Text(note))
    if not report.rows:
        console.print(Text(_w("none_overdue", lang)))
        return
    rows = report.rows
    title = _w("details", lang)
    if limit is not None and len(rows) > limit:
        rows = sorted(rows, key=lambda r: (-r.overdue_working_days, -r.overdue_hours, r.hazard_id))
        rows = rows[:limit]
        title += " · " + _w("rows_shown", lang).format(n=limit, total=len(report.rows))
    keys = _OVERDUE_RICH[console.width >= _WIDE]
    cols = _marked(_columns((*_OVERDUE_COLUMNS, _DUE_DATE), keys))
    console.print(_rich_table(title, cols, rows, lang, tz, console.width))


def print_accountability(
    report: AccountabilityReport,
    console: Console,
    lang: str = "zh",
    *,
    dimensions: Sequence[str] = _DIMENSIONS,
) -> None:
    """The accountability report on a terminal: period and totals, the indicators, then one
    table per dimension (unit, person, grid, or those asked for)."""
    _check("table", lang)
    tz = _zone(report.timezone)
    head = _accountability_head(report, lang, tz)
    console.print(Text(head[0], style="bold"))
    for line in head[1:]:
        console.print(Text(line))
    indicators = _plain_rich_table(_w("indicators", lang))
    for name in ("indicator", "formula", "value"):
        indicators.add_column(_w(name, lang), justify="right" if name == "value" else "left")
    for key, zh, en, formula in INDICATORS:
        value = _percent(report.totals.indicators.get(key))
        indicators.add_row(Text(zh if lang == "zh" else en), Text(formula), Text(value))
    console.print(indicators)
    cols = _marked(_columns(_ACCOUNTABILITY_COLUMNS, _ACCOUNTABILITY_RICH[console.width >= _WIDE]))
    for dim in dimensions:
        rows = [r for r in report.rows if r.dimension == dim]
        if rows:
            heading = _pick(_DIMENSION_HEADING, dim, lang)
            console.print(_rich_table(heading, cols, rows, lang, tz, console.width))
