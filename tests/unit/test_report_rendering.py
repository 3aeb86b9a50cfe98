"""The report renderers, on reports built by hand: every format says what the records hold.

Expectations come from the records themselves (and the domain's words), never from a copy of a
rendered output: local dates are computed here from the UTC instants, indicator values from the
formulas in `INDICATORS`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
import zipfile
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
from openpyxl import load_workbook
from rich.console import Console

from adapters.reports import (
    FORMATS,
    print_accountability,
    print_overdue,
    render_accountability,
    render_overdue,
)
from loop.errors import InvalidCommand
from projections.model import (
    AccountabilityReport,
    AccountabilityRow,
    OverdueReport,
    OverdueRow,
    Period,
)
from projections.reports import INDICATORS
from tests.conftest import SHANGHAI

CJK = re.compile(r"[\u4e00-\u9fff]")
AS_OF = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai
#: 2026-11-19 20:00 UTC is already 2026-11-20 (04:00) in Shanghai.
LATE_EVENING_UTC = datetime(2026, 11, 19, 20, 0, tzinfo=UTC)
TRICKY_TITLE = '燃气管道<阀门>锈蚀, "疑似漏气" & 无人值守'


def _row(**changes: Any) -> OverdueRow:
    base = OverdueRow(
        hazard_id="JY-2026-0001",
        title="消防通道被货物堵塞",
        grid="D01-S02-C03",
        grid_name="滨江社区",
        category="fire",
        grade="general",
        step="rectify",
        holder="区消防救援大队",
        unit="区消防救援大队",
        person="赵强",
        chain={"grid_manager": "王芳", "first_responsible": "李明"},
        started_at=datetime(2026, 11, 2, 1, 0, tzinfo=UTC),
        due=LATE_EVENING_UTC,
        original_due=LATE_EVENING_UTC,
        limit="10wd",
        provisional=False,
        overdue_working_days=0,
        overdue_hours=14.0,
        extensions=0,
    )
    return dataclasses.replace(base, **changes)


def overdue(chain_head: str | None = "3:abc123") -> OverdueReport:
    rows = [
        _row(),
        _row(
            hazard_id="JY-2026-0002", title="危化品仓库未设置防爆灯具", grid="D01-S01",
            grid_name=None, category="hazchem", grade="major", step="assign",
            holder="command_centre", unit=None, person=None, chain={},
            started_at=datetime(2026, 11, 3, 2, 0, tzinfo=UTC),
            due=datetime(2026, 11, 3, 6, 0, tzinfo=UTC),
            original_due=datetime(2026, 11, 3, 6, 0, tzinfo=UTC), limit="4h",
            provisional=True, overdue_working_days=13, overdue_hours=412.0,
        ),
        _row(
            hazard_id="JY-2026-0003", title=TRICKY_TITLE, category="gas", step="verify",
            holder="王芳", unit="江滨华润燃气有限公司", person="钱伟",
            started_at=datetime(2026, 11, 10, 3, 0, tzinfo=UTC),
            due=datetime(2026, 11, 13, 15, 59, 59, tzinfo=UTC),
            original_due=datetime(2026, 11, 12, 15, 59, 59, tzinfo=UTC), limit="3wd",
            overdue_working_days=5, overdue_hours=162.0, extensions=1,
        ),
    ]  # fmt: skip
    return OverdueReport(
        as_of=AS_OF,
        timezone="Asia/Shanghai",
        rows=rows,
        open_cases=17,
        parked_cases=4,
        chain_head=chain_head,
    )


COUNTS = ("due", "handled", "on_time", "late", "still_overdue", "extended", "rework", "closed",
          "closed_on_time", "due_for_closure")  # fmt: skip


def _acc_row(dimension: str, key: str, name: str | None = None, **counts: int) -> AccountabilityRow:
    """A row whose indicators are computed here, from the formulas `INDICATORS` publishes."""
    values = dict.fromkeys(COUNTS, 0) | counts
    indicators: dict[str, float | None] = {}
    for key_, _, _, formula in INDICATORS:
        numerator, denominator = (part.strip() for part in formula.split("/"))
        d = values[denominator]
        indicators[key_] = round(values[numerator] / d, 6) if d else None
    avg = 2.5 if values["handled"] else None
    return AccountabilityRow(dimension, key, name, **values, avg_working_days=avg,
                             indicators=indicators)  # fmt: skip


def accountability() -> AccountabilityReport:
    rows = [
        _acc_row("unit", "区消防救援大队", due=8, handled=7, on_time=6, late=1, still_overdue=1,
                 extended=2, rework=1),
        _acc_row("unit", "江滨华润燃气有限公司", due=3, still_overdue=3),
        _acc_row("person", "王芳", due=12, handled=10, on_time=9, late=1, still_overdue=2,
                 extended=1, rework=1, closed=3, closed_on_time=2, due_for_closure=4),
        _acc_row("grid", "D01-S02-C03", "滨江社区", due=20, handled=17, on_time=15, late=2,
                 still_overdue=2, extended=3, rework=1, closed=4, closed_on_time=3,
                 due_for_closure=4),
    ]  # fmt: skip
    totals = _acc_row("total", "total", "total", due=20, handled=17, on_time=15, late=2,
                      still_overdue=2, extended=3, rework=1, closed=4, closed_on_time=3,
                      due_for_closure=4)  # fmt: skip
    return AccountabilityReport(
        period=Period("2026-Q3", date(2026, 7, 1), date(2026, 9, 30)),
        as_of=AS_OF,
        timezone="Asia/Shanghai",
        rows=rows,
        totals=totals,
        chain_head="9:feed42",
    )


#: Row fields JSON carries unchanged.
SCALARS = ("hazard_id", "step", "holder", "overdue_working_days", "provisional", "unit", "person",
           "grid_name", "chain", "extensions", "limit")  # fmt: skip


def _local(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


def _csv_rows(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 byte-order mark"
    return list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline="")))


class _Checker(HTMLParser):
    """Collects text, tags and attributes, and checks that every element is closed in order."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(data.strip())


def _check_html(data: bytes) -> _Checker:
    text = data.decode("utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == []
    assert checker.stack == [], f"unclosed: {checker.stack}"
    assert "script" not in checker.tags, "no JavaScript"
    assert "link" not in checker.tags, "no external style sheets"
    for name, value in checker.attrs:
        if name in ("src", "href"):
            assert not value.startswith(("http", "//")), (name, value)
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    return checker


def _sheet_with(wb: Any, values: list[str]) -> Any:
    """The worksheet whose first column holds exactly these values below its header."""
    for ws in wb.worksheets:
        column = [row[0] for row in ws.iter_rows(min_row=2, max_col=1, values_only=True)]
        if column == values:
            return ws
    raise AssertionError(f"no sheet lists {values}")


# ----------------------------------------------------------------- overdue


class TestOverdueCSV:
    """CSV opens in Excel (BOM), speaks Chinese by default, and shows local times."""

    def test_it_has_a_bom_parses_and_has_one_line_per_row(self) -> None:
        report = overdue()
        rows = _csv_rows(render_overdue(report, "csv"))
        assert len(rows) == 1 + len(report.rows)
        assert [r[0] for r in rows[1:]] == [row.hazard_id for row in report.rows]
        assert len({len(r) for r in rows}) == 1

    def test_headers_are_chinese_by_default_and_english_on_request(self) -> None:
        zh = _csv_rows(render_overdue(overdue(), "csv"))[0]
        en = _csv_rows(render_overdue(overdue(), "csv", lang="en"))[0]
        assert all(CJK.search(h) for h in zh), zh
        assert not any(CJK.search(h) for h in en), en
        assert len(zh) == len(en)

    def test_values_are_in_chinese_by_default(self) -> None:
        report = overdue()
        text = render_overdue(report, "csv").decode("utf-8-sig")
        body = _csv_rows(render_overdue(report, "csv"))[1:]
        assert "整改" in body[0]  # rectify, the domain's word
        assert "重大隐患" in body[1] or "重大" in body[1]  # a major hazard
        for code in ("command_centre", "rectify", "hazchem"):
            assert code not in text
        en_body = _csv_rows(render_overdue(report, "csv", lang="en"))[1:]
        assert "rectify" in en_body[0]

    def test_date_times_are_local_to_the_report_timezone(self) -> None:
        report = overdue()
        row = _csv_rows(render_overdue(report, "csv"))[1]
        local_day = _local(LATE_EVENING_UTC).date().isoformat()
        assert local_day == "2026-11-20"
        assert any(cell.startswith(local_day) for cell in row), row
        assert not any("2026-11-19" in cell for cell in row), row
        started = _local(report.rows[0].started_at).strftime("%Y-%m-%d %H:%M")
        assert started in row

    def test_quotes_commas_and_none_survive_the_round_trip(self) -> None:
        rows = _csv_rows(render_overdue(overdue(), "csv"))
        assert TRICKY_TITLE in rows[3]
        assert "None" not in {cell for r in rows for cell in r}


class TestOverdueJSON:
    """JSON is for machines: English field names, every field, RFC 3339 local times."""

    def test_it_holds_as_of_and_every_field_of_every_row(self) -> None:
        report = overdue()
        data = orjson.loads(render_overdue(report, "json"))
        assert datetime.fromisoformat(data["as_of"]) == report.as_of
        assert data["as_of"].endswith("+08:00")
        assert data["timezone"] == report.timezone
        assert data["open_cases"] == report.open_cases
        assert data["parked_cases"] == report.parked_cases
        assert data["chain_head"] == report.chain_head
        assert len(data["rows"]) == len(report.rows)
        for got, row in zip(data["rows"], report.rows, strict=True):
            assert set(got) >= {f.name for f in dataclasses.fields(OverdueRow)}
            for name in SCALARS:
                assert got[name] == getattr(row, name), name
            for name in ("due", "original_due", "started_at"):
                moment = datetime.fromisoformat(got[name])
                assert moment == getattr(row, name)
                assert moment.utcoffset() == timedelta(hours=8)

    def test_it_is_the_same_bytes_each_time_and_ignores_the_language(self) -> None:
        report = overdue()
        assert render_overdue(report, "json") == render_overdue(report, "json", lang="en")

    def test_an_empty_report_is_valid(self) -> None:
        report = dataclasses.replace(overdue(chain_head=None), rows=[], open_cases=0)
        data = orjson.loads(render_overdue(report, "json"))
        assert data["rows"] == []
        assert data["chain_head"] is None


class TestOverdueXlsx:
    """xlsx opens, holds the rows as typed cells, and is the same bytes for the same report."""

    def test_cells_match_the_rows(self) -> None:
        report = overdue()
        wb = load_workbook(io.BytesIO(render_overdue(report, "xlsx")))
        ws = _sheet_with(wb, [r.hazard_id for r in report.rows])
        header = [c.value for c in ws[1]]
        assert all(isinstance(h, str) and CJK.search(h) for h in header)
        assert all(c.font.bold for c in ws[1])
        assert ws.freeze_panes == "A2"
        assert all(ws.column_dimensions[c.column_letter].width for c in ws[1])
        for values, row in zip(ws.iter_rows(min_row=2, values_only=True), report.rows, strict=True):
            assert row.title in values
            assert row.overdue_working_days in values
            assert _local(row.due).replace(tzinfo=None) in values
        assert len(wb.worksheets) >= 2, "a summary sheet"

    def test_the_summary_sheet_holds_the_figures(self) -> None:
        report = overdue()
        wb = load_workbook(io.BytesIO(render_overdue(report, "xlsx")))
        ws = _sheet_with(wb, [r.hazard_id for r in report.rows])
        others = [s for s in wb.worksheets if s is not ws]
        values = [v for s in others for row in s.iter_rows(values_only=True) for v in row]
        assert report.open_cases in values
        assert report.parked_cases in values
        assert report.chain_head in values
        assert _local(report.as_of).replace(tzinfo=None) in values

    def test_it_is_the_same_bytes_whatever_the_clock_says(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        report = overdue()
        first = render_overdue(report, "xlsx")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3 * 86400 + 7)
        second = render_overdue(report, "xlsx")
        assert first == second
        with zipfile.ZipFile(io.BytesIO(first)) as archive:
            stamps = {info.date_time[:3] for info in archive.infolist()}
            core = archive.read("docProps/core.xml").decode()
        as_of_day = _local(report.as_of).date()
        assert stamps == {(as_of_day.year, as_of_day.month, as_of_day.day)}
        assert as_of_day.isoformat() in core

    def test_english_headers_on_request(self) -> None:
        report = overdue()
        wb = load_workbook(io.BytesIO(render_overdue(report, "xlsx", lang="en")))
        ws = _sheet_with(wb, [r.hazard_id for r in report.rows])
        assert not any(CJK.search(str(c.value)) for c in ws[1])


class TestOverdueHTML:
    """The HTML report: one self-contained page, figures, charts, then every row."""

    def test_it_is_well_formed_self_contained_and_chinese(self) -> None:
        data = render_overdue(overdue(), "html")
        checker = _check_html(data)
        assert 'lang="zh' in data.decode()
        assert checker.tags.count("svg") >= 2, "a chart by grid and step, and one of ageing"
        assert "style" in checker.tags

    def test_it_shows_every_hazard_and_the_summary_figures(self) -> None:
        report = overdue()
        checker = _check_html(render_overdue(report, "html"))
        text = " ".join(checker.texts)
        for row in report.rows:
            assert row.hazard_id in text
        for figure in (report.open_cases, report.parked_cases, len(report.rows)):
            assert str(figure) in checker.texts, figure
        assert report.chain_head is not None
        assert report.chain_head in text

    def test_text_is_escaped(self) -> None:
        checker = _check_html(render_overdue(overdue(), "html"))
        assert TRICKY_TITLE in checker.texts
        assert "阀门" not in checker.tags

    def test_local_times_and_english_on_request(self) -> None:
        report = overdue()
        zh = render_overdue(report, "html").decode()
        assert _local(report.as_of).strftime("%Y-%m-%d %H:%M") in zh
        assert _local(LATE_EVENING_UTC).strftime("%Y-%m-%d %H:%M") in zh
        en = render_overdue(report, "html", lang="en").decode()
        _check_html(en.encode())
        assert 'lang="en' in en
        assert "rectify" in en

    def test_nothing_overdue_is_still_a_page(self) -> None:
        report = dataclasses.replace(overdue(chain_head=None), rows=[])
        _check_html(render_overdue(report, "html"))


class TestOverdueTable:
    """The plain table (stdout not a terminal): UTF-8 text, no terminal escapes."""

    def test_it_lists_every_row_as_plain_text(self) -> None:
        report = overdue()
        text = render_overdue(report, "table").decode("utf-8")
        assert "\x1b" not in text
        for row in report.rows:
            assert row.hazard_id in text
        assert _local(LATE_EVENING_UTC).strftime("%Y-%m-%d") in text

    def test_rich_tables_for_a_terminal(self) -> None:
        report = overdue()
        out = io.StringIO()
        print_overdue(report, Console(file=out, width=120), "zh")
        text = out.getvalue()
        for row in report.rows:
            assert row.hazard_id in text
        assert str(report.open_cases) in text


class TestRefusals:
    """An unknown format or language is refused with the contract's error."""

    @pytest.mark.parametrize("fmt", ["pdf", "", "JSON", "xls"])
    def test_unknown_formats(self, fmt: str) -> None:
        with pytest.raises(InvalidCommand):
            render_overdue(overdue(), fmt)
        with pytest.raises(InvalidCommand):
            render_accountability(accountability(), fmt)

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_unknown_languages(self, fmt: str) -> None:
        with pytest.raises(InvalidCommand):
            render_overdue(overdue(), fmt, lang="fr")
        with pytest.raises(InvalidCommand):
            render_accountability(accountability(), fmt, lang="")

    def test_every_format_renders_both_reports_in_both_languages(self) -> None:
        for fmt in FORMATS:
            for lang in ("zh", "en"):
                assert render_overdue(overdue(), fmt, lang)
                assert render_accountability(accountability(), fmt, lang)


# ----------------------------------------------------------- accountability


class TestAccountability:
    """The accountability report: period, totals, indicators, every unit, person and grid."""

    def test_json_holds_the_period_the_totals_and_every_row(self) -> None:
        report = accountability()
        data = orjson.loads(render_accountability(report, "json"))
        assert data["period"] == {"label": "2026-Q3", "start": "2026-07-01", "end": "2026-09-30"}
        assert datetime.fromisoformat(data["as_of"]) == report.as_of
        assert data["chain_head"] == report.chain_head
        assert data["totals"]["indicators"] == report.totals.indicators
        assert [(r["dimension"], r["key"]) for r in data["rows"]] == [
            (r.dimension, r.key) for r in report.rows
        ]
        for got, row in zip(data["rows"], report.rows, strict=True):
            assert set(got) >= {f.name for f in dataclasses.fields(AccountabilityRow)}
            assert got["indicators"] == row.indicators
        unit = data["rows"][1]
        assert unit["indicators"]["closure_rate"] is None  # nothing due for closure

    def test_csv_headers_name_the_indicators_and_a_zero_denominator_shows_a_dash(self) -> None:
        report = accountability()
        zh = _csv_rows(render_accountability(report, "csv"))
        en = _csv_rows(render_accountability(report, "csv", lang="en"))
        for _, name_zh, name_en, _ in INDICATORS:
            assert name_zh in zh[0]
            assert name_en in en[0]
        keys = [cell for r in zh[1:] for cell in r]
        for row in report.rows:
            assert row.key in keys
        unit_line = next(r for r in zh if "江滨华润燃气有限公司" in r)
        assert "—" in unit_line

    def test_xlsx_has_a_summary_and_a_sheet_per_dimension_and_fixed_bytes(self) -> None:
        report = accountability()
        data = render_accountability(report, "xlsx")
        assert data == render_accountability(report, "xlsx")
        wb = load_workbook(io.BytesIO(data))
        for dim in ("unit", "person", "grid"):
            ws = _sheet_with(wb, [r.key for r in report.rows if r.dimension == dim])
            assert ws.freeze_panes == "A2"
            rows = [r for r in report.rows if r.dimension == dim]
            for values, row in zip(ws.iter_rows(min_row=2, values_only=True), rows, strict=True):
                assert row.due in values
                rate = row.indicators["on_time_disposal_rate"]
                assert (rate if rate is not None else "—") in values
        summary = [v for ws in wb.worksheets for r in ws.iter_rows(values_only=True) for v in r]
        assert report.totals.due in summary
        assert report.totals.indicators["disposal_rate"] in summary

    def test_html_names_the_period_every_row_and_every_indicator(self) -> None:
        report = accountability()
        checker = _check_html(render_accountability(report, "html"))
        text = " ".join(checker.texts)
        assert report.period.label in text
        assert report.period.start.isoformat() in text
        for row in report.rows:
            assert row.key in text
        for _, name_zh, _, formula in INDICATORS:
            assert name_zh in text
            assert formula in text
        total = report.totals.indicators["on_time_disposal_rate"]
        assert total is not None
        assert f"{total * 100:.2f}%" in text

    def test_table_and_terminal(self) -> None:
        report = accountability()
        text = render_accountability(report, "table").decode("utf-8")
        for row in report.rows:
            assert row.key in text
        out = io.StringIO()
        print_accountability(report, Console(file=out, width=100), "en")
        shown = out.getvalue()
        for row in report.rows:
            assert row.key in shown
        for _, _, name_en, _ in INDICATORS:
            assert name_en in shown
