"""A realistic demo district, built deterministically through the engine's public contract.

`build_district` invents a district (区) with streets and towns (街道/镇) and their communities and
villages (社区/村), the departments and enterprises that rectify, the grid members who discover,
the command centre that registers, assigns and closes, and the leaders who approve extensions and
parking. The organisation is built through the contract too: at the start of the quarter every
grid is established, every unit and person registered, and each grid's chain of responsibility
(grid manager, first responsible, in charge, directly responsible, leader in liaison) appointed;
in August some posts change hands (a rotation of grid members, a transfer, a post left vacant
for two weeks), so a step that went overdue before a change is charged to the old holder. It then
plays a quarter's worth of hazards (2026-07-01 … 2026-09-30) through the six-step
closed loop and every side path, as commands of the contract, sorted by business time and fed to
one `handle_many`. Nothing reads the wall clock: the engine's clock is fixed at
2026-11-20 18:00 (+08:00) and every business time lies before it.

The generator simulates each case with the lifecycle table and the policy's deadline arithmetic
before it sends anything, so a command the engine refuses is a bug (here or in the engine) and
stops the build.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from adapters.bootstrap import Settings, build_engine
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.lifecycle import (
    BEFORE_PARKING,
    HOLDING_STEP,
    OPEN_STATUSES,
    UNCHANGED,
    Status,
    find_transition,
)
from loop.organisation import POSTS
from loop.policy import Deadline, Policy, WorkCalendar

__all__ = ["AS_OF", "STATUS_ZH", "build_district", "print_summary"]

TZ = ZoneInfo("Asia/Shanghai")
#: The engine's fixed clock: the demo is "as of" this moment.
AS_OF = datetime(2026, 11, 20, 18, 0, tzinfo=TZ)
QUARTER = (date(2026, 7, 1), date(2026, 9, 30))
#: When the organisation is set up: before the first patrol of the quarter.
ORG_AT = datetime(2026, 7, 1, 8, 0, tzinfo=TZ)
#: August's changes of post holders: a relief, the rotations and a transfer, the vacancy filled.
RELIEVE_AT = datetime(2026, 8, 10, 9, 0, tzinfo=TZ)
REAPPOINT_AT = datetime(2026, 8, 17, 9, 0, tzinfo=TZ)
FILL_AT = datetime(2026, 8, 24, 9, 0, tzinfo=TZ)
#: The actor who keeps the organisation's register (the command centre's system administrator).
ORG_ACTOR = "区网格化服务管理指挥中心"
#: Nothing is planned later than this (a margin under the engine's clock).
LATEST = datetime(2026, 11, 20, 17, 30, tzinfo=TZ)
#: Cases meant to stand open get their last step in this window when they are "recent".
RECENT_FROM = datetime(2026, 10, 26, 8, 30, tzinfo=TZ)

STATUS_ZH: dict[str, str] = {
    "discovered": "已发现",
    "reported": "已上报/立案",
    "assigned": "已交办",
    "rectified": "已整改",
    "verified": "已核查",
    "closed": "已销号",
    "rejected": "不予立案",
    "parked": "挂账",
}
CATEGORY_ZH: dict[str, str] = {
    "fire": "人员密集场所消防",
    "gas": "燃气",
    "construction": "建筑施工",
    "industry_trade": "工贸",
    "road_traffic": "道路交通",
    "hazchem": "危险化学品",
    "fireworks": "烟花爆竹",
    "non_coal_mine": "非煤矿山",
}
GRADE_ZH = {"general": "一般", "major": "重大"}
SOURCE_ZH = {
    "patrol": "网格巡查",
    "inspection": "监管检查",
    "self_check": "企业自查",
    "public_tip": "群众举报",
}

# ----------------------------------------------------------------- the district

DISTRICT = ("D01", "江滨区")
STREETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("S01", "滨江街道", ("望江社区", "临江社区", "码头社区")),
    ("S02", "新华街道", ("新华里社区", "红星社区", "书院社区")),
    ("S03", "城南街道", ("南湖社区", "枫林社区", "工业园社区")),
    ("S04", "青山镇", ("青山村", "石桥村", "柳塘村")),
)
ROADS: dict[str, tuple[str, ...]] = {
    "S01": ("滨江大道", "沿江路", "码头街", "望江路"),
    "S02": ("新华路", "解放路", "书院街", "红星路"),
    "S03": ("南湖路", "枫林大道", "工业二路", "科创路"),
    "S04": ("青山大道", "石桥路", "柳塘组", "矿山路"),
}

#: Category weights (the district's mix) and where a category is found.
CATEGORY_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("fire", 28),
    ("construction", 16),
    ("industry_trade", 16),
    ("gas", 14),
    ("road_traffic", 10),
    ("hazchem", 8),
    ("fireworks", 4),
    ("non_coal_mine", 4),
)
ONLY_IN_STREETS: dict[str, tuple[str, ...]] = {
    "non_coal_mine": ("S04",),
    "hazchem": ("S03", "S04"),
}

#: Departments (district level) and the categories they take.
DEPARTMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("区应急管理局", ("hazchem", "non_coal_mine", "fireworks", "industry_trade")),
    ("区住房和城乡建设局", ("construction", "gas")),
    ("区市场监督管理局", ("industry_trade", "gas")),
    ("区消防救援大队", ("fire",)),
    ("区交通运输局", ("road_traffic",)),
    ("公安江滨分局交警大队", ("road_traffic",)),
    ("区城市管理局", ("gas", "construction")),
)
#: Enterprises per street, and their categories.
ENTERPRISES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "S01": (
        ("滨江万达广场有限公司", ("fire",)),
        ("江滨港务物流有限公司", ("road_traffic", "industry_trade")),
        ("江滨华润燃气有限公司", ("gas",)),
    ),
    "S02": (
        ("新华商业大厦物业公司", ("fire", "gas")),
        ("江滨第一建工集团新华府项目部", ("construction",)),
        ("新华百货有限公司", ("fire",)),
    ),
    "S03": (
        ("城南精细化工有限公司", ("hazchem",)),
        ("城南机械制造有限公司", ("industry_trade",)),
        ("南湖建设集团枫林苑项目部", ("construction",)),
    ),
    "S04": (
        ("青山石料有限公司", ("non_coal_mine",)),
        ("青山烟花爆竹批发部", ("fireworks",)),
        ("柳塘木业加工厂", ("industry_trade", "fire")),
    ),
}

TITLES: dict[str, tuple[str, ...]] = {
    "fire": (
        "安全出口被锁闭",
        "疏散通道堆放杂物",
        "室内消火栓无水",
        "灭火器过期失效",
        "电动自行车在楼道内充电",
        "消防控制室无人值守",
        "私拉乱接电线",
        "应急照明灯损坏",
    ),
    "gas": (
        "燃气管道锈蚀严重",
        "液化气瓶与灶具间距不足",
        "餐饮场所未安装燃气泄漏报警装置",
        "燃气软管老化开裂",
        "地下室违规使用液化石油气",
    ),
    "construction": (
        "脚手架未设置连墙件",
        "深基坑临边未设防护栏杆",
        "塔吊限位装置失效",
        "高处作业人员未系安全带",
        "临时用电未做到一机一闸一漏",
    ),
    "industry_trade": (
        "粉尘涉爆车间除尘系统未接地",
        "有限空间作业未审批",
        "冲压设备无安全防护装置",
        "涉氨制冷车间氨气报警失灵",
        "叉车司机无证上岗",
    ),
    "road_traffic": (
        "交叉口信号灯损坏",
        "急弯路段缺少警示标志",
        "路侧护栏缺失",
        "客运车辆动态监控不在线",
        "学校门口缺少减速设施",
    ),
    "hazchem": (
        "危化品仓库超量储存",
        "储罐区可燃气体报警器失效",
        "危化品混存混放",
        "装卸作业无静电接地",
    ),
    "fireworks": (
        "零售点超量存储烟花爆竹",
        "居民楼内违规储存烟花爆竹",
        "批发仓库防雷设施未检测",
    ),
    "non_coal_mine": (
        "露天采场边坡超高超陡",
        "排土场排水设施堵塞",
        "爆破器材库管理不规范",
    ),
}
FIXES: dict[str, tuple[str, ...]] = {
    "fire": (
        "已打开安全出口并拆除锁具",
        "已清理通道杂物并设置警示标识",
        "已更换灭火器并建立检查台账",
    ),
    "gas": ("已更换燃气管道及软管", "已安装燃气泄漏报警装置并联动切断阀", "已调整气瓶存放位置"),
    "construction": (
        "已按方案补设连墙件",
        "已增设临边防护栏杆和安全网",
        "已更换限位装置并经检测合格",
    ),
    "industry_trade": ("已完成除尘系统接地改造", "已建立有限空间作业审批制度", "已加装防护装置"),
    "road_traffic": ("已修复信号灯", "已增设警示标志和减速带", "已补设护栏"),
    "hazchem": ("已清理超量物料并规范分区储存", "已更换报警器并联网", "已加装静电接地装置"),
    "fireworks": ("已清退超量存储的烟花爆竹", "已完成防雷检测"),
    "non_coal_mine": ("已按设计削坡减载", "已疏通排水设施", "已完善爆破器材出入库台账"),
}
MEASURES: dict[str, str] = {
    "fire": "立即清除障碍，确保疏散通道畅通，落实每日防火巡查",
    "gas": "立即停用隐患部位，由燃气企业上门整改并检测",
    "construction": "停止相关部位作业，按专项方案整改，监理复核后复工",
    "industry_trade": "停用相关设备，落实整改措施并开展全员培训",
    "road_traffic": "设置临时警示设施，协调养护单位限期修复",
    "hazchem": "控制储量，规范储存，完善监测报警设施",
    "fireworks": "清退超量物品，规范储存条件",
    "non_coal_mine": "暂停相关区域作业，编制整改设计并组织实施",
}
PARK_REASONS = (
    "需结合汛期后道路改造工程一并实施",
    "涉及燃气主管网改造，需待停气窗口施工",
    "涉及产权纠纷，待法院裁定后整改",
    "需纳入明年财政预算统筹资金",
)
REJECT_REASONS = (
    "经现场核实，不属于安全生产隐患",
    "属于物业服务纠纷，已转12345热线处理",
    "经核实为正常施工围挡，不构成隐患",
)
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵"
)
GIVEN = (
    "建国",
    "建华",
    "志强",
    "秀英",
    "桂英",
    "丽娟",
    "海燕",
    "国庆",
    "晓明",
    "伟",
    "芳",
    "敏",
    "静",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "霞",
    "平",
    "刚",
    "红梅",
    "玉兰",
    "文斌",
    "新民",
    "春燕",
    "志华",
    "家豪",
    "子涵",
    "雨婷",
    "俊杰",
    "思远",
    "佳怡",
    "浩然",
    "立新",
    "卫东",
    "凤英",
    "德华",
    "海涛",
    "晓东",
    "永红",
    "金凤",
    "学文",
    "长青",
    "宏伟",
)

#: Scenarios and their share of the hazards (with a floor so small demos still show them).
STOPS: tuple[tuple[str, float, int], ...] = (
    ("discovered", 0.015, 2),
    ("reported", 0.03, 2),
    ("assigned", 0.07, 3),
    ("rectified", 0.04, 2),
    ("verified", 0.025, 2),
    ("parked", 0.007, 2),
    ("rejected", 0.04, 2),
    ("duplicate", 0.03, 2),
    ("rejected_reopened", 0.008, 1),
)
FLAGS: tuple[tuple[str, float, int], ...] = (
    ("fixed_on_spot", 0.08, 2),
    ("return", 0.04, 2),
    ("reassign", 0.05, 2),
    ("extend", 0.07, 3),
    ("extend_twice", 0.015, 1),
    ("park_resume", 0.03, 2),
    ("rework", 0.06, 3),
    ("reopen", 0.025, 2),
    ("regrade", 0.04, 2),
)
#: Which stops a flag can live with (None: the case runs to closure).
FLAG_STOPS: dict[str, tuple[str | None, ...]] = {
    "fixed_on_spot": (None, "rectified", "verified"),
    "return": (None, "assigned", "rectified", "verified"),
    "reassign": (None, "assigned", "rectified", "verified"),
    "extend": (None, "rectified", "verified", "assigned"),
    "extend_twice": (None, "rectified", "verified"),
    "park_resume": (None, "assigned", "rectified", "verified"),
    "rework": (None, "verified", "assigned"),
    "reopen": (None,),
    "regrade": (None, "reported", "assigned", "rectified", "verified", "parked"),
}
LATE_P = {"report": 0.05, "assign": 0.08, "rectify": 0.15, "verify": 0.08, "close": 0.05}
LATE_DAYS = (1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 11, 15)
LADDER = (("reminder", 1), ("supervision_letter", 3), ("public_notice", 10))


# ----------------------------------------------------------------- cast


@dataclass(frozen=True)
class Unit:
    """A responsible unit (department, street office or enterprise) and its people."""

    name: str
    kind: str
    categories: tuple[str, ...]
    people: tuple[str, ...]
    street: str | None = None


@dataclass(frozen=True)
class Grid:
    """A grid of one of the three levels, with the members who patrol it."""

    code: str
    name: str
    level: str
    street: str | None
    members: tuple[str, ...]


@dataclass
class Cast:
    """Everyone in the district who acts in the demo."""

    grids: dict[str, Grid]
    units: list[Unit]
    centre: tuple[str, ...]
    leaders: tuple[str, ...]
    top_leader: str
    inspectors: tuple[str, ...]
    people: int


def _names(rng: random.Random, taken: set[str] | None = None) -> Callable[[], str]:
    used: set[str] = set(taken or ())

    def one() -> str:
        while True:
            name = rng.choice(SURNAMES) + rng.choice(GIVEN)
            if name not in used:
                used.add(name)
                return name

    return one


def _cast(rng: random.Random) -> Cast:
    name = _names(rng)
    code, dname = DISTRICT
    inspectors = tuple(name() for _ in range(3))
    grids: dict[str, Grid] = {
        code: Grid(code, f"{dname}直管网格（区应急管理局执法大队）", "district", None, inspectors)
    }
    units: list[Unit] = []
    for dept, cats in DEPARTMENTS:
        units.append(
            Unit(dept, "department", cats, tuple(name() for _ in range(rng.randint(2, 3))))
        )
    for s_code, s_name, communities in STREETS:
        street_code = f"{code}-{s_code}"
        grids[street_code] = Grid(
            street_code, f"{s_name}基本网格", "street", s_code, (name(), name())
        )
        for i, c_name in enumerate(communities, start=1):
            c_code = f"{street_code}-C{i:02d}"
            grids[c_code] = Grid(
                c_code, f"{s_name}{c_name}微网格", "community", s_code, (name(), name())
            )
        office = "办事处" if s_name.endswith("街道") else "人民政府"
        units.append(
            Unit(
                f"{s_name}{office}",
                "street_office",
                ("fire", "gas", "industry_trade", "road_traffic"),
                tuple(name() for _ in range(rng.randint(2, 3))),
                s_code,
            )
        )
        for e_name, cats in ENTERPRISES[s_code]:
            units.append(
                Unit(
                    e_name,
                    "enterprise",
                    cats,
                    tuple(name() for _ in range(rng.randint(2, 3))),
                    s_code,
                )
            )
    centre = tuple(name() for _ in range(4))
    leaders = tuple(name() for _ in range(3))
    top = name()
    people = (
        sum(len(g.members) for g in grids.values())
        + sum(len(u.people) for u in units)
        + len(centre)
        + len(leaders)
        + 1
    )
    return Cast(grids, units, centre, leaders, top, inspectors, people)


# ----------------------------------------------------------------- organisation


@dataclass
class Organisation:
    """The organisation's commands (stamped with business time) and what they set up."""

    commands: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    people: int = 0
    appointments: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)  # August's changes, in order

    def add(self, at: datetime, command: str, **fields: Any) -> None:
        self.commands.append(
            (at, {"command": command, "actor": ORG_ACTOR, "at": at.isoformat(), **fields})
        )

    def person(self, at: datetime, name: str, role: str, **where: str) -> None:
        self.add(at, "register_person", person=name, name=name, role=role, **where)
        self.people += 1

    def appoint(self, at: datetime, grid: str, post: str, person: str, note: str) -> None:
        self.add(at, "appoint", grid=grid, post=post, person=person, note=note)
        self.appointments += 1


def _everyone(cast: Cast) -> set[str]:
    return {
        *(m for g in cast.grids.values() for m in g.members),
        *(p for u in cast.units for p in u.people),
        *cast.centre,
        *cast.leaders,
        cast.top_leader,
        *cast.inspectors,
    }


def _organisation(cast: Cast, seed: int) -> Organisation:
    """Grids, units, people and each grid's chain, as commands; then August's changes.

    Its own random stream (the hazards' stays as it was), and names no one in the cast has.
    People are registered by name: the name is the id that hazard commands use for them, and a
    unit's code is its name for the same reason.
    """
    rng = random.Random(f"organisation-{seed}")
    name = _names(rng, _everyone(cast))
    org = Organisation()
    at = ORG_AT
    district = DISTRICT[0]
    for grid in cast.grids.values():
        parent = None
        if grid.level == "street":
            parent = district
        elif grid.level == "community":
            parent = f"{district}-{grid.street}"
        fields: dict[str, Any] = {"grid": grid.code, "name": grid.name, "level": grid.level}
        if parent is not None:
            fields["parent"] = parent
        org.add(at, "establish_grid", **fields)
    homes: dict[str | None, list[str]] = {}
    for unit in cast.units:
        if unit.kind == "department":
            grid_code = district
        elif unit.kind == "street_office":
            grid_code = f"{district}-{unit.street}"
        else:  # an enterprise: in one of its street's communities, in turn
            homes.setdefault(unit.street, [])
            homes[unit.street].append(unit.name)
            grid_code = f"{district}-{unit.street}-C{len(homes[unit.street]):02d}"
        org.add(at, "register_unit", unit=unit.name, name=unit.name, grid=grid_code, kind=unit.kind)
    roles = {"department": "业务科室负责人", "street_office": "安监站工作人员",
             "enterprise": "企业安全管理员"}  # fmt: skip
    for unit in cast.units:
        for person in unit.people:
            org.person(at, person, roles[unit.kind], unit=unit.name)
    for person in cast.inspectors:
        org.person(at, person, "执法检查员", unit=DEPARTMENTS[0][0], grid=district)
    for grid in cast.grids.values():
        if grid.level != "district":
            role = "专职网格员" if grid.level == "street" else "网格员"
            for person in grid.members:
                org.person(at, person, role, grid=grid.code)
    for person in cast.centre:
        org.person(at, person, "指挥中心坐席", grid=district)
    for person in cast.leaders:
        org.person(at, person, "区领导", grid=district)
    org.person(at, cast.top_leader, "区长", grid=district)
    # the chains
    leaders = cast.leaders
    org.appoint(at, district, "grid_manager", cast.inspectors[0], "执法大队长兼直管网格长")
    org.appoint(at, district, "first_responsible", cast.top_leader, "区政府主要负责人")
    org.appoint(at, district, "in_charge", leaders[0], "分管安全生产的副区长")
    org.appoint(at, district, "directly_responsible", cast.inspectors[1], "执法中队长")
    org.appoint(at, district, "leader_in_liaison", leaders[1], "挂点区领导")
    street_chain: dict[str, dict[str, str]] = {}
    for i, (s_code, s_name, _) in enumerate(STREETS):
        code = f"{district}-{s_code}"
        grid = cast.grids[code]
        village = not s_name.endswith("街道")
        secretary, deputy = name(), name()
        org.person(at, secretary, "镇党委书记" if village else "街道党工委书记", grid=code)
        org.person(at, deputy, "分管安全副镇长" if village else "分管安全副主任", grid=code)
        chain = {
            "grid_manager": grid.members[0],
            "first_responsible": secretary,
            "in_charge": deputy,
            "directly_responsible": grid.members[1],
            "leader_in_liaison": leaders[i % len(leaders)],
        }
        street_chain[s_code] = chain
        for post, person in chain.items():
            org.appoint(at, code, post, person, f"{s_name}网格责任体系")
    for grid in cast.grids.values():
        if grid.level != "community":
            continue
        assert grid.street is not None
        manager, head = name(), name()
        village = grid.name.endswith("村微网格")
        org.person(at, manager, "村党支部书记" if village else "社区党委书记", grid=grid.code)
        org.person(at, head, "村委会主任" if village else "社区居委会主任", grid=grid.code)
        chain = {
            "grid_manager": manager,
            "first_responsible": head,
            "in_charge": street_chain[grid.street]["in_charge"],
            "directly_responsible": grid.members[0],
            "leader_in_liaison": street_chain[grid.street]["leader_in_liaison"],
        }
        for post, person in chain.items():
            org.appoint(at, grid.code, post, person, f"{grid.name}责任到人")
    # August: S03's deputy is transferred out, leaving the post vacant in the street's grid and
    # its micro-grids for two weeks; the first micro-grid of every street rotates its grid
    # members; S02 gets a new secretary.
    s03_grids = [g.code for g in cast.grids.values() if g.street == "S03"]
    leaving = street_chain["S03"]["in_charge"]
    for code in s03_grids:
        org.add(RELIEVE_AT, "relieve", grid=code, post="in_charge", person=leaving,
                note="调任区直部门")  # fmt: skip
        org.changes.append({"grid": code, "post": "in_charge", "from": leaving, "to": None,
                            "at": RELIEVE_AT.isoformat()})  # fmt: skip
    for s_code, _, _ in STREETS:
        code = f"{district}-{s_code}-C01"
        old, new = cast.grids[code].members
        org.appoint(REAPPOINT_AT, code, "directly_responsible", new, "网格员轮岗")
        org.changes.append({"grid": code, "post": "directly_responsible", "from": old,
                            "to": new, "at": REAPPOINT_AT.isoformat()})  # fmt: skip
    s02 = f"{district}-S02"
    newcomer = name()
    org.person(REAPPOINT_AT, newcomer, "街道党工委书记", grid=s02)
    org.appoint(REAPPOINT_AT, s02, "first_responsible", newcomer, "街道主要负责人调整")
    org.changes.append({"grid": s02, "post": "first_responsible",
                        "from": street_chain["S02"]["first_responsible"], "to": newcomer,
                        "at": REAPPOINT_AT.isoformat()})  # fmt: skip
    successor = name()
    org.person(FILL_AT, successor, "分管安全副主任", grid=s03_grids[0])
    for code in s03_grids:
        org.appoint(FILL_AT, code, "in_charge", successor, "补齐分管责任人")
        org.changes.append({"grid": code, "post": "in_charge", "from": None, "to": successor,
                            "at": FILL_AT.isoformat()})  # fmt: skip
    return org


# ----------------------------------------------------------------- time


class Clock:
    """Working days and working hours, on the engine's own calendar."""

    def __init__(self, calendar: WorkCalendar, rng: random.Random) -> None:
        self.calendar = calendar
        self.rng = rng

    def is_workday(self, day: date) -> bool:
        answer = self.calendar.is_workday(day)
        return day.weekday() < 5 if answer is None else answer

    def workdays(self, first: date, last: date) -> list[date]:
        out: list[date] = []
        day = first
        while day <= last:
            if self.is_workday(day):
                out.append(day)
            day += timedelta(days=1)
        return out

    def after(self, day: date, n: int) -> date:
        """The n-th working day after `day`."""
        found = 0
        while found < n:
            day += timedelta(days=1)
            found += self.is_workday(day)
        return day

    def at_work(self, day: date, start: time = time(8, 30), end: time = time(17, 30)) -> datetime:
        lo = start.hour * 60 + start.minute
        hi = end.hour * 60 + end.minute
        minute = self.rng.randint(lo, hi)
        return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=TZ)

    def between(self, lo: datetime, hi: datetime, skew: float = 1.6) -> datetime:
        """A working-hours moment in [lo, hi], early ones likelier; any moment if none fits."""
        if hi <= lo:
            return lo
        days = self.workdays(lo.date(), hi.date())[:30]
        for _ in range(6 if days else 0):
            day = days[int(len(days) * self.rng.random() ** skew)]
            t = self.at_work(day)
            if lo <= t <= hi:
                return t
        # No office hours fit (a 2-hour limit at 17:00): overtime, as soon as it can be.
        evening = datetime.combine(lo.date(), time(21, 0), tzinfo=TZ)
        t = lo + (min(hi, max(lo, evening)) - lo) * self.rng.random()
        return max(lo, t.replace(second=0, microsecond=0))

    def end_of(self, day: date) -> datetime:
        return datetime.combine(day, time(23, 59, 59), tzinfo=TZ)


# ----------------------------------------------------------------- one case


@dataclass
class Spec:
    """What will happen to one hazard: where, what, and which paths it takes."""

    index: int
    hazard_id: str
    discovered_at: datetime
    stop: str | None = None
    flags: set[str] = field(default_factory=set)
    grade: str = "general"
    recent: bool = False


@dataclass
class Case:
    """The generator's own model of a case, moved by the lifecycle table."""

    hazard_id: str
    grade: str
    street: str | None
    category: str
    discovered_by: str = ""
    verifier_pool: tuple[str, ...] = ()
    status: Status | None = None
    deadline: Deadline | None = None
    last_at: datetime = AS_OF
    unit: Unit | None = None
    person: str | None = None
    rectified_by: str | None = None
    parked_from: Status | None = None
    parked_at: datetime | None = None
    closed_at: datetime | None = None
    commands: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)


class Generator:
    """Plays every hazard's path as commands, checking each against the rules as it goes."""

    def __init__(self, rng: random.Random, policy: Policy, calendar: WorkCalendar) -> None:
        self.rng = rng
        self.policy = policy
        self.calendar = calendar
        self.clock = Clock(calendar, rng)
        self.cast = _cast(rng)
        self.cases: list[Case] = []
        self.late: Counter[str] = Counter()

    # ----------------------------------------------------------- emitting

    def emit(self, case: Case, name: str, at: datetime, actor: str, **fields: Any) -> None:
        """Record one command after checking it as the engine will."""
        condition = ""
        if name == "verify":
            condition = "passed=true" if fields["passed"] else "passed=false"
        elif name == "discover":
            condition = (
                "fixed_on_spot=true" if fields.get("fixed_on_spot") else "fixed_on_spot=false"
            )
        row = find_transition(case.status, name, condition)
        if row is None:
            raise RuntimeError(f"generator bug: {name} in {case.status} for {case.hazard_id}")
        if at < case.last_at and case.status is not None:
            raise RuntimeError(f"generator bug: {case.hazard_id} {name} goes back in time")
        if at > LATEST:
            raise RuntimeError(f"generator bug: {case.hazard_id} {name} at {at} is in the future")
        due = fields.get("due")
        if name == "verify" and fields["passed"] and actor == case.rectified_by:
            raise RuntimeError(f"generator bug: {case.hazard_id} verified by its rectifier")
        if name in ("extend", "park") and fields["approved_by"] == actor:
            raise RuntimeError(f"generator bug: {case.hazard_id} {name} approved by its requester")
        if name == "extend":
            assert case.deadline is not None
            assert isinstance(due, datetime)
            if due <= case.deadline.due:
                raise RuntimeError(f"generator bug: {case.hazard_id} extension not later")
        if name == "regrade" and fields["grade"] == case.grade:
            raise RuntimeError(f"generator bug: {case.hazard_id} regrade to the same grade")
        # the new status, as the table says
        before = case.status
        if row.to == UNCHANGED:
            new = before
        elif row.to == BEFORE_PARKING:
            new = case.parked_from
        else:
            assert isinstance(row.to, Status)
            new = row.to
        assert new is not None
        # the deadline, as the policy decides
        if name == "regrade":
            case.grade = fields["grade"]
        if row.starts_step:
            step = HOLDING_STEP[new]
            if isinstance(due, datetime):
                if due <= at:
                    raise RuntimeError(f"generator bug: {case.hazard_id} due before start")
                case.deadline = self.policy.given_deadline(due)
            else:
                case.deadline = self.policy.deadline(case.grade, step, at, self.calendar)
        elif name == "extend":
            assert isinstance(due, datetime)
            case.deadline = self.policy.given_deadline(due)
        elif name == "resume":
            assert case.deadline is not None
            assert case.parked_at is not None
            case.deadline = self.policy.shift_for_pause(
                case.deadline, case.parked_at, at, self.calendar
            )
        elif name in ("close", "reject"):
            case.deadline = None
        # the rest of the state
        if name == "discover":
            case.discovered_by = actor
            if fields.get("fixed_on_spot"):
                case.rectified_by = actor
        elif name in ("assign", "reassign"):
            case.unit = next(u for u in self.cast.units if u.name == fields["unit"])
            case.person = fields["person"]
        elif name == "rectify":
            case.rectified_by = actor
        elif name == "return" or (name == "reopen" and before == Status.CLOSED):
            case.unit = None
            case.person = None
        elif name == "park":
            case.parked_from = before
            case.parked_at = at
        elif name == "resume":
            case.parked_from = None
            case.parked_at = None
        elif name == "close":
            case.closed_at = at
        case.status = new
        case.last_at = at
        body: dict[str, Any] = {
            "command": name,
            "hazard_id": case.hazard_id,
            "actor": actor,
            "at": at.isoformat(),
        }
        for key, value in fields.items():
            body[key] = value.isoformat() if isinstance(value, datetime) else value
        case.commands.append((at, body))

    # ----------------------------------------------------------- timing

    def _due(self, case: Case) -> datetime:
        assert case.deadline is not None
        return case.deadline.due

    def _step_time(self, case: Case, step: str, recent: bool = False) -> datetime:
        due = self._due(case)
        if recent and case.last_at < RECENT_FROM:
            return self.clock.between(RECENT_FROM, LATEST - timedelta(hours=8), skew=1.0)
        if self.rng.random() < LATE_P[step]:
            day = self.clock.after(due.date(), self.rng.choice(LATE_DAYS))
            return max(self.clock.at_work(day), case.last_at)
        lo = case.last_at + timedelta(minutes=self.rng.randint(10, 90))
        if lo >= due:
            lo = case.last_at + (due - case.last_at) / 3
            lo = max(case.last_at, lo.replace(microsecond=0))
        return self.clock.between(lo, due)

    def _during(self, case: Case, within_days: int = 4) -> datetime | None:
        """A moment inside the current step, before its deadline; None if the clock ran out."""
        due = self._due(case)
        hi = min(due, case.last_at + timedelta(days=within_days), LATEST)
        lo = case.last_at + timedelta(minutes=30)
        if hi <= lo:
            return None
        return self.clock.between(lo, hi)

    def escalate_until(self, case: Case, until: datetime) -> None:
        """Supervision steps up while the case sits overdue, before `until` (or now)."""
        if case.status not in HOLDING_STEP or case.deadline is None:
            return
        due = case.deadline.due
        if until <= due or self.rng.random() < 0.35:
            return
        notes = {
            "reminder": "电话催办，请尽快办理并反馈",
            "supervision_letter": f"下发督办函（江滨安督〔2026〕{self.rng.randint(10, 99)}号）",
            "public_notice": "在全区安全生产工作例会上予以通报",
        }
        for level, k in LADDER:
            at = self.clock.at_work(self.clock.after(due.date(), k), time(9, 0), time(10, 30))
            if at >= until or at > LATEST:
                break
            if at < case.last_at:
                continue
            if level == "public_notice" and self.rng.random() < 0.5:
                break
            actor = (
                self.rng.choice(self.cast.centre) if level == "reminder" else self.cast.leaders[0]
            )
            self.emit(case, "escalate", at, actor, level=level, note=notes[level])

    def step(self, case: Case, name: str, actor: str, recent: bool = False, **fields: Any) -> bool:
        """Do the command that completes the current step; False if it would lie in the future."""
        step = HOLDING_STEP.get(case.status, name) if case.status else name
        at = self._step_time(case, step, recent)
        if at > LATEST:
            self.escalate_until(case, LATEST)
            return False
        if at > self._due(case):
            self.late[step] += 1
        self.escalate_until(case, at)
        at = max(at, case.last_at)
        self.emit(case, name, at, actor, **fields)
        return True

    def stall(self, case: Case) -> None:
        """The case stands open as of now: it may have been chased meanwhile."""
        self.escalate_until(case, LATEST)

    # ----------------------------------------------------------- actors

    def units_for(self, case: Case) -> list[Unit]:
        fit = [u for u in self.cast.units if case.category in u.categories]
        near = [u for u in fit if u.street in (None, case.street)]
        return near or fit

    def _evidence(self, label: str, n: int) -> list[dict[str, str]]:
        return [
            {"name": f"{label}{i + 1}.jpg", "sha256": f"{self.rng.getrandbits(256):064x}"}
            for i in range(n)
        ]

    # ----------------------------------------------------------- the loop

    def play(self, spec: Spec, others: list[Case]) -> Case:
        rng, cast = self.rng, self.cast
        flags, stop = spec.flags, spec.stop
        # where and what
        original: Case | None = None
        if stop == "duplicate":
            earlier = [c for c in others if c.commands and c.status not in (Status.REJECTED,)]
            if earlier:
                original = rng.choice(earlier[-40:])
        if original is not None:
            first = original.commands[0][1]
            grid_code, category = first["grid"], first["category"]
            title, location = first["title"], first.get("location")
        else:
            category = _weighted(rng, CATEGORY_WEIGHTS)
            streets = ONLY_IN_STREETS.get(category, tuple(s[0] for s in STREETS))
            s_code = rng.choice(streets)
            r = rng.random()
            level = "community" if r < 0.82 else "street" if r < 0.97 else "district"
            if level == "district":
                grid_code = DISTRICT[0]
            elif level == "street":
                grid_code = f"{DISTRICT[0]}-{s_code}"
            else:
                n = len(next(s for s in STREETS if s[0] == s_code)[2])
                grid_code = f"{DISTRICT[0]}-{s_code}-C{rng.randint(1, n):02d}"
            title = rng.choice(TITLES[category])
            location = f"{_street_name(s_code)}{rng.choice(ROADS[s_code])}{rng.randint(1, 300)}号"
            if level == "community":
                location = (
                    f"{cast.grids[grid_code].name.removesuffix('微网格')}"
                    + location[len(_street_name(s_code)) :]
                )
        grid = cast.grids[grid_code]
        case = Case(spec.hazard_id, spec.grade, grid.street, category)
        # who found it
        source = "patrol" if grid.level == "community" else "inspection"
        r = rng.random()
        if grid.level == "community" and r < 0.12:
            source = "public_tip"
        elif grid.level != "district" and r > 0.9 and "fixed_on_spot" not in flags:
            source = "self_check"
        reporter: str | None = None
        verifiers = grid.members
        if source == "self_check":
            company = rng.choice(self.units_for(case))
            actor = company.people[0]
            verifiers = (actor, *grid.members)
        else:
            actor = rng.choice(grid.members)
        if source == "public_tip":
            reporter = f"市民{rng.choice(SURNAMES)}某（12350举报）"
        fixed = "fixed_on_spot" in flags
        discover: dict[str, Any] = {
            "grid": grid_code,
            "category": category,
            "grade": spec.grade,
            "title": title,
            "description": f"{SOURCE_ZH[source]}发现：{title}，{CATEGORY_ZH[category]}领域",
            "location": location,
            "source": source,
            "evidence": self._evidence("现场照片", rng.randint(1, 3)),
        }
        if reporter:
            discover["reporter"] = reporter
        if fixed:
            discover["fixed_on_spot"] = True
            discover["description"] += "；已督促当场整改"
        self.emit(case, "discover", spec.discovered_at, actor, **discover)
        centre = cast.centre

        def c_actor() -> str:
            return rng.choice(centre)

        def verifier() -> str:
            pool = [v for v in verifiers if v != case.rectified_by]
            return case.discovered_by if case.discovered_by in pool else rng.choice(pool)

        if fixed:
            if not self.step(
                case,
                "verify",
                verifier(),
                stop == "rectified",
                passed=True,
                note="现场复核，整改到位",
            ):
                return case
            if stop in ("rectified", "verified"):
                self.stall(case)
                return case
            self.step(case, "close", c_actor(), note="当场整改到位，予以销号")
            return case
        if stop == "discovered":
            self.stall(case)
            return case
        # report (上报/立案)
        if not self.step(case, "report", c_actor(), stop == "reported", note="已登记入隐患台账"):
            return case
        if stop in ("rejected", "duplicate", "rejected_reopened"):
            at = self._during(case, 2) or case.last_at
            reason = rng.choice(REJECT_REASONS)
            extra: dict[str, Any] = {}
            if original is not None:
                reason = f"重复上报，与{original.hazard_id}为同一隐患，予以合并"
                extra["duplicate_of"] = original.hazard_id
            self.emit(case, "reject", at, c_actor(), reason=reason, **extra)
            if stop == "rejected_reopened":
                at = self.clock.between(max(RECENT_FROM, at), LATEST - timedelta(hours=8))
                self.emit(
                    case, "reopen", at, cast.leaders[1], reason="复核认为属于安全生产隐患，重新受理"
                )
                self.stall(case)
            return case
        regraded = False
        if "regrade" in flags and rng.random() < 0.4:
            regraded = self._regrade(case)
        parked_early = ("park_resume" in flags or stop == "parked") and rng.random() < 0.3
        if parked_early and not self._park(case, resume=stop != "parked"):
            return case
        if stop == "reported":
            self.stall(case)
            return case
        # assign (交办: 定人、定责、定时)
        if "return" in flags:
            wrong = rng.choice([u for u in cast.units if category not in u.categories])
            if not self._assign(case, wrong):
                return case
            back = self._during(case, 3)
            if back is None:
                return case
            self.emit(
                case,
                "return",
                back,
                wrong.people[0],
                reason=f"不属于{wrong.name}职责范围，请重新交办",
            )
        units = self.units_for(case)
        if not self._assign(case, rng.choice(units), recent=stop == "assigned"):
            return case
        if "reassign" in flags:
            assert case.unit is not None
            choices = [u for u in units if u != case.unit] or [
                u for u in cast.units if u != case.unit
            ]
            new = rng.choice(choices)
            when = self._during(case, 5)
            if when is not None:
                self.emit(
                    case,
                    "reassign",
                    when,
                    c_actor(),
                    unit=new.name,
                    person=rng.choice(new.people),
                    reason=f"经会商，由{new.name}牵头整改更为适宜",
                )
        if "regrade" in flags and not regraded:
            regraded = self._regrade(case)
        late_park = ("park_resume" in flags or stop == "parked") and not parked_early
        if late_park and not self._park(case, resume=stop != "parked"):
            return case
        if stop == "parked":
            return case
        if "extend" in flags or "extend_twice" in flags:
            self._extend(case, 1)
            if "extend_twice" in flags:
                self._extend(case, 2)
        if stop == "assigned" and "rework" not in flags:
            self.stall(case)
            return case
        # rectify (整改反馈)
        if not self._rectify(case, recent=stop == "rectified"):
            return case
        if "rework" in flags:
            at = self._step_time(case, "verify")
            if at > LATEST:
                self.stall(case)
                return case
            self.escalate_until(case, at)
            new_due = self.clock.end_of(self.clock.after(at.date(), rng.randint(5, 10)))
            self.emit(
                case,
                "verify",
                at,
                verifier(),
                passed=False,
                note="复查发现整改不彻底，责令返工",
                due=new_due,
            )
            if stop == "assigned":
                self.stall(case)
                return case
            if not self._rectify(case):
                return case
        if stop == "rectified":
            self.stall(case)
            return case
        # verify (核查)
        if not self.step(
            case, "verify", verifier(), stop == "verified", passed=True, note="现场核查，整改到位"
        ):
            return case
        if stop == "verified":
            self.stall(case)
            return case
        if not self.step(case, "close", c_actor(), note="整改核查合格，予以销号"):
            return case
        if "reopen" in flags:
            self._reopen_and_replay(case, c_actor)
        return case

    def _assign(self, case: Case, unit: Unit, recent: bool = False) -> bool:
        fields: dict[str, Any] = {
            "unit": unit.name,
            "person": self.rng.choice(unit.people),
            "measures": MEASURES[case.category],
        }
        if case.grade == "major":
            fields["due"] = None  # decided once `at` is known
        at = self._step_time(case, "assign", recent)
        if at > LATEST:
            self.stall(case)
            return False
        if at > self._due(case):
            self.late["assign"] += 1
        self.escalate_until(case, at)
        at = max(at, case.last_at)
        if case.grade == "major":
            plan_days = self.rng.choice((30, 45, 60, 90))
            fields["due"] = self.clock.end_of(at.date() + timedelta(days=plan_days))
            fields["measures"] = (
                f"治理方案：{MEASURES[case.category]}；经费和物资已落实；"
                f"负责人{fields['person']}；限{plan_days}日内完成；落实安全防范措施和应急预案"
            )
        self.emit(case, "assign", at, self.rng.choice(self.cast.centre), **fields)
        return True

    def _rectify(self, case: Case, recent: bool = False) -> bool:
        assert case.unit is not None
        assert case.person is not None
        fix = self.rng.choice(FIXES[case.category])
        cost = self.rng.choice((300, 800, 1500, 3200, 6800, 12000, 45000))
        actor = case.person
        if self.rng.random() < 0.3:
            actor = self.rng.choice(case.unit.people)
        return self.step(
            case,
            "rectify",
            actor,
            recent,
            note=f"{fix}，整改费用约{cost}元",
            evidence=self._evidence("整改后照片", self.rng.randint(1, 2)),
        )

    def _regrade(self, case: Case) -> bool:
        at = self._during(case, 2)
        if at is None:
            return False
        if case.grade == "general":
            grade, reason = "major", "经专家论证，需局部停产停业治理，升级为重大隐患"
        else:
            grade, reason = "general", "经专家复核，可通过局部整改消除，降为一般隐患"
        self.emit(case, "regrade", at, self.cast.leaders[0], grade=grade, reason=reason)
        return True

    def _park(self, case: Case, resume: bool) -> bool:
        at = self._during(case, 3)
        if at is None:
            return True
        self.emit(
            case,
            "park",
            at,
            self.rng.choice(self.cast.centre),
            reason=self.rng.choice(PARK_REASONS),
            approved_by=self.rng.choice(self.cast.leaders),
        )
        if not resume:
            return False
        day = self.clock.after(at.date(), self.rng.randint(10, 30))
        back = self.clock.at_work(day)
        if back > LATEST:
            days = self.clock.workdays(self.clock.after(at.date(), 1), LATEST.date() - timedelta(1))
            if not days:
                return False
            back = self.clock.at_work(self.rng.choice(days))
        self.emit(
            case, "resume", back, self.rng.choice(self.cast.centre), note="施工条件具备，恢复办理"
        )
        return True

    def _extend(self, case: Case, nth: int) -> None:
        at = self._during(case, 12)
        if at is None or case.person is None:
            return
        new_due = self.clock.end_of(
            self.clock.after(self._due(case).date(), self.rng.randint(5, 15))
        )
        approver = self.cast.top_leader if nth > 1 else self.rng.choice(self.cast.leaders)
        self.emit(
            case,
            "extend",
            at,
            case.person,
            due=new_due,
            reason="整改需采购专用设备，到货周期较长" if nth == 1 else "施工方案调整，需再次延期",
            approved_by=approver,
        )

    def _reopen_and_replay(self, case: Case, c_actor: Callable[[], str]) -> None:
        assert case.closed_at is not None
        first = self.clock.after(case.closed_at.date(), 5)
        days = self.clock.workdays(max(first, RECENT_FROM.date()), LATEST.date() - timedelta(1))
        if not days:
            return
        at = self.clock.at_work(self.rng.choice(days))
        self.emit(
            case, "reopen", at, self.cast.leaders[1], reason="回头看复查发现隐患反弹，重新立案整改"
        )
        if self.rng.random() < 0.3:
            self.stall(case)
            return
        if not self._assign(case, self.rng.choice(self.units_for(case))):
            return
        if not self._rectify(case):
            return
        pool = [v for v in (case.discovered_by, *self.cast.inspectors) if v != case.rectified_by]
        if not self.step(case, "verify", pool[0], passed=True, note="复查合格"):
            return
        self.step(case, "close", c_actor(), note="复查合格，再次销号")


def _street_name(code: str) -> str:
    return next(s[1] for s in STREETS if s[0] == code)


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _specs(rng: random.Random, clock: Clock, hazards: int) -> list[Spec]:
    days = clock.workdays(*QUARTER)
    times = sorted(clock.at_work(rng.choice(days)) for _ in range(hazards))
    specs = [
        Spec(
            i,
            f"{DISTRICT[0]}-2026-{i + 1:05d}",
            t,
            grade="major" if rng.random() < 0.1 else "general",
        )
        for i, t in enumerate(times)
    ]
    order = list(range(hazards))
    rng.shuffle(order)
    taken = iter(order)
    for stop, share, floor in STOPS:
        for _ in range(min(max(floor, round(share * hazards)), hazards // 12 or 1)):
            i = next(taken, None)
            if i is None:
                break
            if stop == "duplicate" and i < 5:
                continue
            specs[i].stop = stop
    for flag, share, floor in FLAGS:
        want = max(floor, round(share * hazards))
        pool = [
            s
            for s in specs
            if s.stop in FLAG_STOPS[flag] and len(s.flags) < 2 and "fixed_on_spot" not in s.flags
        ]
        if flag == "fixed_on_spot":
            pool = [s for s in pool if not s.flags and s.grade == "general"]
        for s in rng.sample(pool, min(want, len(pool))):
            s.flags.add(flag)
    for s in specs:
        if "fixed_on_spot" in s.flags:
            s.grade = "general"
        if s.stop in ("reported", "assigned", "rectified", "verified", "parked"):
            s.recent = rng.random() < 0.5
    return specs


# ----------------------------------------------------------------- build


def build_district(db: str, hazards: int = 400, seed: int = 2026) -> dict[str, Any]:
    """Build the demo district in the store `db` (a SQLite file, or a PostgreSQL database by its
    URL); return what it holds (deterministic)."""
    rng = random.Random(seed)
    engine = build_engine(Settings(db=db), clock=lambda: AS_OF)
    try:
        gen = Generator(rng, engine.policy, engine.calendar)
        specs = _specs(rng, gen.clock, hazards)
        for spec in specs:
            gen.cases.append(gen.play(spec, gen.cases))
        org = _organisation(gen.cast, seed)
        # The organisation's commands first: at equal times a stable sort keeps them ahead.
        stamped = [*org.commands, *(item for case in gen.cases for item in case.commands)]
        stamped.sort(key=lambda item: item[0])
        commands = [body for _, body in stamped]
        errors: list[str] = []
        results = engine.handle_many(map(parse_command, commands), batch_size=500)
        for body, result in zip(commands, results, strict=True):
            if not result.ok and len(errors) < 5:
                assert result.error is not None
                assert result.subject is not None
                errors.append(f"{result.subject.id} {body['command']}: {result.error.message}")
            elif not result.ok:
                errors.append("…")
        if errors:
            raise RuntimeError(
                f"the demo generator sent {len(errors)} refused command(s): "
                + "; ".join(errors[:5])
            )
        summary = _summarise(engine, gen, org, db, hazards, seed, len(commands))
    finally:
        engine.close()
    return summary


def _summarise(
    engine: HazardLoop,
    gen: Generator,
    org: Organisation,
    db: str,
    hazards: int,
    seed: int,
    commands: int,
) -> dict[str, Any]:
    by_status: Counter[str] = Counter({s.value: 0 for s in Status})
    by_grade: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    event_types: Counter[str] = Counter()
    escalations: Counter[str] = Counter()
    streets: dict[str, dict[str, Any]] = {}
    samples: dict[str, str] = {}
    side_samples: dict[str, str] = {}
    counts: Counter[str] = Counter()
    events = 0
    overdue = 0
    richest = ("", 0)
    mismatched: list[str] = []
    for case in gen.cases:
        history = engine.history(case.hazard_id)
        hazard = engine.get_hazard(case.hazard_id)
        events += len(history)
        if len(history) > richest[1]:
            richest = (case.hazard_id, len(history))
        status = hazard.status.value
        if case.status is not None and hazard.status != case.status:
            mismatched.append(f"{case.hazard_id}: engine {status}, generator {case.status}")
        by_status[status] += 1
        by_grade[hazard.grade] += 1
        by_category[hazard.category] += 1
        by_source[hazard.source] += 1
        samples.setdefault(status, case.hazard_id)
        street_code = "-".join(hazard.grid.split("-")[:2])
        name = _street_name(street_code.split("-")[1]) if "-" in street_code else "区直管网格"
        row = streets.setdefault(
            name, {"code": street_code, "hazards": 0, "open": 0, "closed": 0, "overdue": 0}
        )
        row["hazards"] += 1
        is_overdue = hazard.due is not None and hazard.due < AS_OF
        if hazard.status in OPEN_STATUSES:
            row["open"] += 1
        if hazard.status == Status.CLOSED:
            row["closed"] += 1
        if is_overdue:
            row["overdue"] += 1
            overdue += 1
        names = [type(e).__name__ for e in history]
        event_types.update(names)
        for e in history:
            if isinstance(e, hazard.Escalated):
                escalations[e.level] += 1
        if hazard.rework_count:
            counts["rework"] += 1
            side_samples.setdefault("rework", case.hazard_id)
        if hazard.extension_count:
            counts["extended"] += 1
            side_samples.setdefault("extended", case.hazard_id)
        if hazard.reopen_count:
            counts["reopened"] += 1
            side_samples.setdefault("reopened", case.hazard_id)
        if hazard.fixed_on_spot:
            counts["fixed_on_spot"] += 1
            side_samples.setdefault("fixed_on_spot", case.hazard_id)
        if hazard.duplicate_of:
            counts["duplicates"] += 1
            side_samples.setdefault("duplicate", case.hazard_id)
        for event, key in (
            ("Returned", "returned"),
            ("Reassigned", "reassigned"),
            ("Parked", "ever_parked"),
            ("Regraded", "regraded"),
            ("Escalated", "escalated"),
        ):
            if event in names:
                counts[key] += 1
                side_samples.setdefault(key, case.hazard_id)
        if hazard.grade == "major" and hazard.status in OPEN_STATUSES:
            counts["major_open"] += 1
    if mismatched:
        raise RuntimeError("engine and generator disagree: " + "; ".join(mismatched[:5]))
    cast = gen.cast
    # The organisation's events: every grid's (establishment and appointments), one per unit
    # and person registered.
    events += sum(engine.get_grid(code).version for code in cast.grids)
    events += len(cast.units) + org.people
    vacant = [
        (code, post)
        for code in cast.grids
        for post in POSTS
        if engine.get_grid(code).holder(post) is None
    ]
    ordered_streets = dict(sorted(streets.items(), key=lambda kv: str(kv[1]["code"])))
    return {
        "db": db,
        "seed": seed,
        "as_of": AS_OF.isoformat(),
        "period": f"{QUARTER[0].isoformat()} … {QUARTER[1].isoformat()}",
        "district": {"code": DISTRICT[0], "name": DISTRICT[1]},
        "grids": {
            "district": sum(g.level == "district" for g in cast.grids.values()),
            "street": sum(g.level == "street" for g in cast.grids.values()),
            "community": sum(g.level == "community" for g in cast.grids.values()),
        },
        "units": len(cast.units),
        "people": org.people,
        "organisation": {
            "appointments": org.appointments,
            "changes": org.changes,
            "vacant_posts": len(vacant),
        },
        "hazards": hazards,
        "commands": commands,
        "events": events,
        "by_status": dict(by_status),
        "by_grade": dict(sorted(by_grade.items())),
        "by_category": dict(by_category.most_common()),
        "by_source": dict(sorted(by_source.items())),
        "by_street": ordered_streets,
        "open": sum(by_status[s.value] for s in OPEN_STATUSES),
        "overdue": overdue,
        "major_open": counts["major_open"],
        "late_steps": {step: gen.late[step] for step in LATE_P},
        "rework": counts["rework"],
        "extensions": event_types["Extended"],
        "extended": counts["extended"],
        "parked": by_status["parked"],
        "ever_parked": counts["ever_parked"],
        "rejected": by_status["rejected"],
        "duplicates": counts["duplicates"],
        "reopened": counts["reopened"],
        "returned": counts["returned"],
        "reassigned": counts["reassigned"],
        "regraded": counts["regraded"],
        "fixed_on_spot": counts["fixed_on_spot"],
        "escalated": counts["escalated"],
        "escalations": sum(escalations.values()),
        "escalations_by_level": dict(sorted(escalations.items())),
        "event_types": dict(sorted(event_types.items())),
        "samples": {s.value: samples[s.value] for s in Status if s.value in samples},
        "side_path_samples": dict(sorted(side_samples.items())),
        "richest": {"hazard_id": richest[0], "events": richest[1]},
    }


# ----------------------------------------------------------------- print


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Show the demo district: counts by status and street, side paths, and what to try next."""
    district = summary["district"]
    grids = summary["grids"]
    lines = [
        f"[bold]Demo district {district['code']} {district['name']}[/bold] · 隐患排查治理六步闭环",
        f"{summary['hazards']} hazards discovered {summary['period']}, as of {summary['as_of']}",
        f"{grids['district']} district grid · {grids['street']} street/town grids · "
        f"{grids['community']} community/village grids · {summary['units']} units · "
        f"{summary['people']} people",
        f"{summary['organisation']['appointments']} appointments to the grids' chains of "
        f"responsibility, {len(summary['organisation']['changes'])} changes in August",
        f"{summary['commands']} commands accepted → {summary['events']} events in "
        f"{_shown(summary['db'])}" + (f" ({summary['seconds']} s)" if "seconds" in summary else ""),
    ]
    console.print(Panel("\n".join(lines), title="hazardloop demo", expand=False))

    status = Table(title="By status")
    for col in ("status", "状态", "hazards", "sample"):
        status.add_column(col, justify="right" if col == "hazards" else "left")
    for key, count in summary["by_status"].items():
        status.add_row(key, STATUS_ZH.get(key, ""), str(count), summary["samples"].get(key, ""))
    console.print(status)

    streets = Table(title="By street / town")
    for col in ("street", "grid", "hazards", "open", "closed", "overdue"):
        streets.add_column(col, justify="left" if col in ("street", "grid") else "right")
    for name, row in summary["by_street"].items():
        streets.add_row(
            name,
            row["code"],
            str(row["hazards"]),
            str(row["open"]),
            str(row["closed"]),
            str(row["overdue"]),
        )
    console.print(streets)

    changes = Table(title="Chain of responsibility: August's changes (charged by who held it then)")
    for col in ("at", "grid", "post", "from", "to"):
        changes.add_column(col)
    for change in summary["organisation"]["changes"]:
        changes.add_row(
            change["at"][:10],
            change["grid"],
            change["post"],
            change["from"] or "(vacant)",
            change["to"] or "(vacant)",
        )
    console.print(changes)

    other = Table(title="Grade, category, side paths")
    other.add_column("what")
    other.add_column("count", justify="right")
    other.add_column("sample")
    for grade, count in summary["by_grade"].items():
        other.add_row(f"grade {grade} {GRADE_ZH.get(grade, '')}", str(count), "")
    for cat, count in summary["by_category"].items():
        other.add_row(f"category {cat} {CATEGORY_ZH.get(cat, '')}", str(count), "")
    samples = summary["side_path_samples"]
    for label, key, sample in (
        ("rejected 不予立案", "rejected", "duplicate"),
        ("  of which duplicates 合并", "duplicates", "duplicate"),
        ("returned 回退", "returned", "returned"),
        ("reassigned 转办", "reassigned", "reassigned"),
        ("extended 延期 (cases)", "extended", "extended"),
        ("extensions 延期 (total)", "extensions", "extended"),
        ("ever parked 挂账", "ever_parked", "ever_parked"),
        ("still parked", "parked", "ever_parked"),
        ("rework 返工", "rework", "rework"),
        ("reopened 重新立案", "reopened", "reopened"),
        ("regraded 调整等级", "regraded", "regraded"),
        ("fixed on the spot 当场整改", "fixed_on_spot", "fixed_on_spot"),
        ("escalated cases 督办", "escalated", "escalated"),
        ("escalations 督办 (total)", "escalations", "escalated"),
        ("open and overdue 超期未办", "overdue", ""),
        ("major hazards open 重大隐患在办", "major_open", ""),
    ):
        value = summary.get(key, 0)
        other.add_row(label, str(value), samples.get(sample, ""))
    console.print(other)

    db = _shown(summary["db"])
    sample = summary["richest"]["hazard_id"]
    console.print(
        f"[bold]Try next[/bold] (the busiest case, {sample}, has "
        f"{summary['richest']['events']} events)"
    )
    for line in _try_next(db, sample, summary["samples"]):
        console.print(f"  {line}", markup=False, highlight=False)


def _shown(db: str) -> str:
    """The store as printed: a PostgreSQL URL without its password."""
    from adapters.store import parse_db

    return db if "://" not in db else parse_db(db).display


def _try_next(db: str, sample: str, by_status: dict[str, str]) -> Iterator[str]:
    yield f"hazardloop show {sample} --db {db}"
    yield f"hazardloop history {sample} --db {db}"
    for status in ("parked", "assigned"):
        if status in by_status:
            yield f"hazardloop show {by_status[status]} --db {db}    # {status}"
