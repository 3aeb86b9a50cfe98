"""The demo district: a realistic, deterministic quarter of hazard work, built through the contract.

Three grid levels, units and people, several hundred hazards discovered in Q3 2026 going through
every path of the loop (some late, some still open on 2026-11-20), applied as one command stream.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from adapters.bootstrap import Settings, build_engine
from loop.commands import parse_command

__all__ = ["AS_OF", "build_district", "print_summary"]

TZ = ZoneInfo("Asia/Shanghai")
#: The demo's "now": every business time lies before it, and it is every event's record time.
AS_OF = datetime(2026, 11, 20, 18, 0, tzinfo=TZ)
QUARTER_START = datetime(2026, 7, 1, 8, 30, tzinfo=TZ)
QUARTER_DAYS = 92

STATUS_ZH = {
    "discovered": "已发现",
    "reported": "已上报/立案",
    "assigned": "已交办",
    "rectified": "已整改",
    "verified": "已核查",
    "closed": "已销号",
    "rejected": "不予立案",
    "parked": "挂账",
}

STREETS = [("S01", "城关街道"), ("S02", "东湖街道"), ("S03", "桥头镇"), ("S04", "西山镇")]
COMMUNITIES = ["幸福社区", "和平社区", "新华社区", "光明村", "长安村", "红星社区"]
UNITS = [
    ("yjj", "区应急管理局", ["陈志强", "刘海燕"]),
    ("zjj", "区住建局", ["王建国", "赵丽"]),
    ("scjg", "区市场监管局", ["孙明", "周婷"]),
    ("xf", "区消防救援大队", ["吴刚", "郑晓东", "冯雪"]),
    ("jt", "区交通运输局", ["何军", "许静"]),
    ("rq", "城区燃气公司", ["马骏", "朱琳"]),
    ("hg", "东湖化工有限公司", ["胡斌", "林芳"]),
]
CATEGORIES = {
    "fire": ("xf", "消防通道堵塞", "灭火器过期", "电气线路私拉乱接"),
    "gas": ("rq", "燃气管道老化", "餐饮场所未装燃气报警器"),
    "construction": ("zjj", "脚手架未设防护网", "基坑临边无防护"),
    "hazchem": ("hg", "危化品储存超量", "危化品仓库通风不良"),
    "road_traffic": ("jt", "路口信号灯损坏", "急弯路段缺少警示标志"),
    "industry_trade": ("scjg", "有限空间作业无审批", "粉尘涉爆场所未清扫"),
    "crowded_places": ("yjj", "商场安全出口上锁", "疏散指示标志不亮"),
}
CENTRE = ["指挥中心-李娜", "指挥中心-黄涛"]
LEADERS = ["分管领导-钱伟", "分管领导-邓红"]


@dataclass
class _Case:
    """One generated hazard: its commands so far and its business clock."""

    hazard_id: str
    grid: str
    members: tuple[str, str]
    category: str
    grade: str
    unit: str
    person: str
    t: datetime
    commands: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def add(self, name: str, actor: str, **fields: Any) -> bool:
        """Record a command at the case's clock; False once the clock passes the demo's now."""
        if self.t >= AS_OF - timedelta(hours=1):
            return False
        cmd = {"command": name, "hazard_id": self.hazard_id, "actor": actor,
               "at": self.t.isoformat(), **fields}  # fmt: skip
        self.commands.append(cmd)
        return True

    def wait(self, rng: random.Random, low_h: float, high_h: float) -> None:
        later = self.t + timedelta(minutes=round(rng.uniform(low_h, high_h) * 60))
        self.t = _working_hours(later)


def _working_hours(t: datetime) -> datetime:
    """Move a time into 08:30–18:00 on a weekday (business times look like office hours)."""
    if t.hour >= 18:
        t = (t + timedelta(days=1)).replace(hour=8, minute=30 + t.minute % 30)
    elif t.hour < 8:
        t = t.replace(hour=8, minute=30 + t.minute % 30)
    while t.weekday() >= 5:
        t += timedelta(days=1)
    return t


def _grids() -> list[tuple[str, str, tuple[str, str]]]:
    """(code, name, its two grid members) for every community grid and every street grid."""
    grids = []
    surnames = "张王李赵刘陈杨黄周吴徐孙马朱胡郭何高林罗郑梁谢宋唐"
    n = 0
    for code, street in STREETS:
        members = (
            f"网格员-{surnames[n % 24]}{'敏芳军勇'[n % 4]}",
            f"网格员-{surnames[(n + 7) % 24]}{'静磊涛燕'[n % 4]}",
        )
        grids.append((f"D01-{code}", f"{street}(基础网格)", members))
        n += 1
        for i in range(3):
            name = COMMUNITIES[(n + i) % len(COMMUNITIES)]
            members = (
                f"网格员-{surnames[n % 24]}{'华平杰丽'[i]}",
                f"网格员-{surnames[(n + 11) % 24]}{'强霞波娟'[i]}",
            )
            grids.append((f"D01-{code}-C{i + 1:02d}", f"{street}{name}(微网格)", members))
            n += 1
    return grids


def _straight(case: _Case, rng: random.Random, *, late: str | None = None,
              stop_after: str | None = None) -> None:  # fmt: skip
    """The six steps, with delays that keep to the default limits unless `late` names a step."""
    gm = case.members[0]
    centre = rng.choice(CENTRE)

    def delay(step: str, normal: tuple[float, float], slow: tuple[float, float]) -> None:
        case.wait(rng, *(slow if late == step else normal))

    steps: list[tuple[str, Callable[[], bool]]] = [
        ("report", lambda: case.add("report", gm)),
        ("assign", lambda: case.add(
            "assign", centre, unit=case.unit, person=case.person,
            measures="立即停用并限期整改",
            **({"due": (case.t + timedelta(days=30)).isoformat()} if case.grade == "major" else {}),
        )),
        ("rectify", lambda: case.add(
            "rectify", f"{case.unit}-{case.person}", note="已按要求整改完毕",
            evidence=[{"name": "after.jpg", "sha256": _sha(rng)}],
        )),
        ("verify", lambda: case.add("verify", gm, passed=True, note="现场复查合格")),
        ("close", lambda: case.add("close", centre, note="销号")),
    ]  # fmt: skip
    delays = {
        "report": ((0.3, 6), (30, 60)),
        "assign": ((1, 7), (40, 120)),
        "rectify": ((48, 220), (400, 700)),
        "verify": ((4, 50), (140, 220)),
        "close": ((1, 6), (40, 100)),
    }
    for step, action in steps:
        if stop_after == step:
            return
        delay(step, *delays[step])
        if not action():
            return
        if step == "close":
            case.closed = True


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _generate(hazards: int, seed: int) -> list[_Case]:
    rng = random.Random(seed)
    grids = _grids()
    people = {code: persons for code, _, persons in UNITS}
    cases: list[_Case] = []
    scenarios = [
        ("straight", 36), ("late_rectify", 8), ("late_assign", 3), ("late_verify", 3),
        ("open_discovered", 3), ("open_reported", 3), ("open_assigned", 6), ("open_rectified", 3),
        ("open_verified", 2), ("reject", 3), ("duplicate", 2), ("return", 3), ("reassign", 3),
        ("extend", 5), ("park_resume", 3), ("parked", 2), ("rework", 5), ("reopen", 2),
        ("regrade", 2), ("on_spot", 5), ("escalate", 4),
    ]  # fmt: skip
    names = [s for s, _ in scenarios]
    weights = [w for _, w in scenarios]
    for i in range(hazards):
        code, _, members = rng.choice(grids)
        category = rng.choice(list(CATEGORIES))
        unit = CATEGORIES[category][0]
        start = _working_hours(
            QUARTER_START
            + timedelta(days=rng.randrange(QUARTER_DAYS - 1), minutes=rng.randrange(9 * 60))
        )
        case = _Case(
            hazard_id=f"D01-2026-{i + 1:05d}", grid=code, members=members, category=category,
            grade="major" if rng.random() < 0.1 else "general", unit=unit,
            person=rng.choice(people[unit]), t=start,
        )  # fmt: skip
        scenario = rng.choices(names, weights)[0]
        if scenario == "duplicate" and not cases:
            scenario = "reject"
        _play(case, scenario, rng, cases)
        cases.append(case)
    return cases


def _play(case: _Case, scenario: str, rng: random.Random, earlier: list[_Case]) -> None:
    gm, other = case.members
    title = rng.choice(CATEGORIES[case.category][1:])
    on_spot = scenario == "on_spot"
    case.add("discover", gm, grid=case.grid, category=case.category, grade=case.grade,
             title=title, description=f"{title}，巡查中发现", location=f"{case.grid} 片区",
             source=rng.choice(["patrol", "patrol", "inspection", "self_check", "public_tip"]),
             evidence=[{"name": "before.jpg", "sha256": _sha(rng)}],
             fixed_on_spot=on_spot)  # fmt: skip
    centre, leader = rng.choice(CENTRE), rng.choice(LEADERS)
    if on_spot:
        case.wait(rng, 1, 30)
        if case.add("verify", other, passed=True, note="复核确认已当场整改"):
            case.wait(rng, 1, 6)
            case.closed = case.add("close", centre)
        return
    late = {"late_rectify": "rectify", "late_assign": "assign", "late_verify": "verify"}
    stops = {"open_discovered": "report", "open_reported": "assign", "open_assigned": "rectify",
             "open_rectified": "verify", "open_verified": "close"}  # fmt: skip
    if scenario in ("straight", *late):
        _straight(case, rng, late=late.get(scenario))
    elif scenario in stops:
        case.t = max(
            case.t, AS_OF - timedelta(days=rng.randrange(3, 40), minutes=rng.randrange(600))
        )
        case.t = _working_hours(case.t)
        _straight(
            case, rng, stop_after=stops[scenario], late="rectify" if rng.random() < 0.5 else None
        )
    elif scenario in ("reject", "duplicate"):
        case.wait(rng, 1, 8)
        if scenario == "reject":
            case.add("reject", centre, reason="经核实不属于安全隐患")
        else:
            found_before = [
                e for e in earlier if e.commands and e.commands[0]["at"] < case.t.isoformat()
            ]
            if not found_before:
                case.add("reject", centre, reason="经核实不属于安全隐患")
                return
            first = rng.choice(found_before[-30:])
            case.add("reject", centre, reason="与已立案隐患重复", duplicate_of=first.hazard_id)
    elif scenario == "return":
        _straight(case, rng, stop_after="rectify")
        case.wait(rng, 2, 20)
        if case.add("return", f"{case.unit}-{case.person}", reason="不属于本单位职责"):
            case.unit = "yjj" if case.unit != "yjj" else "zjj"
            case.person = {u: p for u, _, p in UNITS}[case.unit][0]
            _resume_from(case, rng, "assign")
    elif scenario == "reassign":
        _straight(case, rng, stop_after="rectify")
        case.wait(rng, 4, 48)
        if case.add("reassign", centre, unit="xf", person="吴刚", reason="属消防监管范围，转办"):
            case.unit, case.person = "xf", "吴刚"
            _resume_from(case, rng, "rectify")
    elif scenario == "extend":
        _straight(case, rng, stop_after="rectify")
        case.wait(rng, 24, 120)
        due = case.t + timedelta(days=rng.choice([35, 40, 50]))
        if case.add("extend", f"{case.unit}-{case.person}", due=due.isoformat(),
                    reason="需采购设备，申请延期", approved_by=leader):  # fmt: skip
            _resume_from(case, rng, "rectify")
    elif scenario in ("park_resume", "parked"):
        _straight(case, rng, stop_after="rectify")
        case.wait(rng, 4, 30)
        if case.add("park", centre, reason="需结合汛期后工程施工统一整改", approved_by=leader):
            if scenario == "parked":
                return
            case.wait(rng, 200, 500)
            if case.add("resume", centre, note="具备施工条件，恢复整改"):
                _resume_from(case, rng, "rectify")
    elif scenario == "rework":
        _straight(case, rng, stop_after="verify")
        case.wait(rng, 4, 40)
        plan = {"due": (case.t + timedelta(days=14)).isoformat()} if case.grade == "major" else {}
        if case.add("verify", gm, passed=False, note="整改不到位，需返工", **plan):
            _resume_from(case, rng, "rectify")
    elif scenario == "reopen":
        _straight(case, rng)
        if case.closed:
            case.wait(rng, 100, 300)
            if case.add("reopen", centre, reason="回头看发现隐患反弹"):
                case.closed = False
                _resume_from(case, rng, "assign")
    elif scenario == "regrade":
        case.wait(rng, 0.5, 3)
        new = "major" if case.grade == "general" else "general"
        if case.add("regrade", centre, grade=new, reason="经专家评估调整隐患等级"):
            case.grade = new
            _resume_from(case, rng, "report")
    elif scenario == "escalate":
        _straight(case, rng, stop_after="rectify")
        case.t = max(case.t, _working_hours(case.t + timedelta(days=18)))
        if case.add("escalate", centre, level="reminder", note="已超期，请尽快整改"):
            case.wait(rng, 80, 120)
            if case.add("escalate", centre, level="supervision_letter", note="发督办函"):
                case.wait(rng, 24, 200)
                _resume_from(case, rng, "rectify")


def _resume_from(case: _Case, rng: random.Random, step: str) -> None:
    """Carry on the straight line from `step` (an earlier side path brought the case here)."""
    order = ["report", "assign", "rectify", "verify", "close"]
    gm, _ = case.members
    centre = rng.choice(CENTRE)
    for name in order[order.index(step) :]:
        case.wait(rng, 2, 60)
        if name == "report":
            ok = case.add("report", gm)
        elif name == "assign":
            due = (
                {"due": (case.t + timedelta(days=30)).isoformat()} if case.grade == "major" else {}
            )
            ok = case.add("assign", centre, unit=case.unit, person=case.person, **due)
        elif name == "rectify":
            ok = case.add("rectify", f"{case.unit}-{case.person}", note="已整改")
        elif name == "verify":
            ok = case.add("verify", gm, passed=True)
        else:
            ok = case.add("close", centre)
            case.closed = ok
        if not ok:
            return


def build_district(db: str, hazards: int = 400, seed: int = 2026) -> dict[str, Any]:
    """Build the demo district into the SQLite file `db`; return what it holds."""
    cases = _generate(hazards, seed)
    commands = sorted((c for case in cases for c in case.commands), key=lambda c: c["at"])
    engine = build_engine(Settings(db=db), clock=lambda: AS_OF)
    try:
        results = list(engine.handle_many(map(parse_command, commands), batch_size=500))
        failed = [(c, r.error) for c, r in zip(commands, results, strict=True) if not r.ok]
        if failed:
            sample = "; ".join(f"{c['hazard_id']} {c['command']}: {e}" for c, e in failed[:5])
            raise RuntimeError(f"the demo generator made {len(failed)} refused commands: {sample}")
        states = [engine.get_hazard(case.hazard_id) for case in cases]
        events = sum(h.version for h in states)
    finally:
        engine.close()
    kinds = Counter(c["command"] for c in commands)
    status = Counter(h.status.value for h in states)
    overdue = sum(1 for h in states if h.due is not None and h.due < AS_OF)
    samples: dict[str, str] = {}
    for h in states:
        samples.setdefault(h.status.value, h.hazard_id)
    return {
        "db": db,
        "as_of": AS_OF.isoformat(),
        "hazards": len(states),
        "events": events,
        "status": dict(sorted(status.items())),
        "grade": dict(Counter(h.grade for h in states)),
        "category": dict(sorted(Counter(h.category for h in states).items())),
        "street": dict(sorted(Counter(h.grid[:7] for h in states).items())),
        "overdue_now": overdue,
        "provisional_deadlines": sum(1 for h in states if h.deadline and h.deadline["provisional"]),
        "side_paths": {
            "rejected": kinds["reject"],
            "returned": kinds["return"],
            "reassigned": kinds["reassign"],
            "extended": kinds["extend"],
            "parked": kinds["park"],
            "resumed": kinds["resume"],
            "rework": sum(h.rework_count for h in states),
            "reopened": kinds["reopen"],
            "regraded": kinds["regrade"],
            "fixed_on_spot": sum(1 for h in states if h.fixed_on_spot),
            "escalations": kinds["escalate"],
        },
        "samples": samples,
    }


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Show what the engine knows about the demo district."""
    console.print(
        Panel.fit(
            f"[bold]Demo district D01[/bold] — {summary['hazards']} hazards, "
            f"{summary['events']} events, as of {summary['as_of']}\n"
            f"store: {summary['db']}  ({summary.get('seconds', '?')} s)",
            title="hazard-loop",
        )
    )
    by_status = Table(title="Cases by status (as of the demo's now)")
    by_status.add_column("status")
    by_status.add_column("状态")
    by_status.add_column("cases", justify="right")
    for status, zh in STATUS_ZH.items():
        by_status.add_row(status, zh, str(summary["status"].get(status, 0)))
    console.print(by_status)
    streets = dict(STREETS)
    by_street = Table(title="Cases by street / town")
    by_street.add_column("grid")
    by_street.add_column("name")
    by_street.add_column("cases", justify="right")
    for code, n in summary["street"].items():
        by_street.add_row(code, streets.get(code[4:7], "区直管网格"), str(n))
    console.print(by_street)
    side = Table(title="Paths off the straight line")
    side.add_column("path")
    side.add_column("count", justify="right")
    for name, n in summary["side_paths"].items():
        side.add_row(name, str(n))
    console.print(side)
    console.print(
        f"Open cases past their current step's deadline: [bold]{summary['overdue_now']}[/bold]"
    )
    db = summary["db"]
    console.print("\nTry next:")
    for status in ("assigned", "closed", "parked"):
        hazard_id = summary["samples"].get(status)
        if hazard_id:
            console.print(f"  hazardloop show {hazard_id} --db {db}      # one that is {status}")
    if summary["samples"].get("closed"):
        console.print(f"  hazardloop history {summary['samples']['closed']} --db {db}")
