"""The scoreboard (考核计分排名): per assessed subject points, RMB counted, projects counted
and rank — every subject of the directory, zero rows included, with its held funds and why;
the quarterly signing targets, plan vs actual, county-wide and per unit; new starts; and the
three rates (履约率、落地率、资金到位率). What counts is in assessment.py and the ruleset.

Read from scoring's own tables (the ledger's credit lines: reversals net out). Served by
scoring's HTTP app (`GET /v1/scoreboard`) and printed by `investflow scoreboard`.

Subjects are ranked within their group (townships, parks, departments, county leaders, as
the directory says), highest points first; equal points share a rank (1, 2, 2, 4).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from shared.directory import Directory, load_directory
from shared.rules import Rules

from . import store
from .assessment import HOLD_LABELS, Assessment, Held, Rates, assess
from .decide import signing_targets
from .store import from_fen

GROUPS = {
    "township": "乡镇街道 / townships",
    "park": "园区 / parks",
    "department": "县直部门 / departments",
    "center": "中心 / the Center",
    "leader": "县级领导 / county leaders",
    "other": "其他 / not in the directory",
}
GROUP_ORDER = list(GROUPS)


@dataclass(frozen=True)
class SubjectScore:
    subject: str
    group: str
    name: str
    points: Decimal
    amount_rmb: Decimal
    projects: int
    rank: int = 0


@dataclass(frozen=True)
class QuarterTarget:
    quarter: int
    plan: int | None  # None: no scoring ruleset in force that quarter
    actual: int


@dataclass
class Scoreboard:
    year: int
    quarter: int | None
    subjects: list[SubjectScore]
    targets: list[QuarterTarget]
    signed_by_unit: dict[str, dict[int, int]]  # attracting unit → quarter → signed ≥ 100M
    held: dict[str, int] = field(default_factory=dict)  # why → funds records held
    assessment: Assessment | None = None

    def held_of(self, subject: str) -> Held:
        return (self.assessment.held.get(subject) if self.assessment else None) or Held()

    def to_json(self) -> dict[str, Any]:
        a = self.assessment
        min_amount = a.signing_min_amount if a else Decimal(100_000_000)
        out: dict[str, Any] = {
            "year": self.year,
            "quarter": self.quarter,
            "subjects": [
                {
                    **asdict(s),
                    "points": str(s.points),
                    "amount_rmb": str(s.amount_rmb),
                    **_held_json(self.held_of(s.subject)),
                }
                for s in self.subjects
            ],
            "targets": {
                "signed_min_amount": str(min_amount),
                "county": [asdict(t) for t in self.targets],
                "by_unit": [
                    {
                        "unit": unit,
                        **{f"Q{q}": n for q, n in sorted(quarters.items())},
                        "total": sum(quarters.values()),
                        "plan": a.unit_targets.get(unit) if a else None,
                    }
                    for unit, quarters in sorted(self.signed_by_unit.items())
                ],
            },
            "held": self.held,
        }
        if a is not None:
            out["targets"]["unit_plan_vs_actual"] = [
                {"unit": u, "plan": a.unit_targets.get(u), "actual": n}
                for u, n in _unit_actuals(self).items()
            ]
            out["targets"]["excluded"] = a.signings_excluded
            out["new_starts"] = {
                "min_amount": str(a.new_start_min_amount),
                "plan": a.new_start_target,
                "actual": sum(a.new_starts.values()),
                "by_quarter": {f"Q{q}": n for q, n in sorted(a.new_starts.items())},
                "by_unit": dict(sorted(a.new_starts_by_unit.items())),
            }
            out["rates"] = {
                "county": a.county_rates.to_json(),
                "by_unit": {u: r.to_json() for u, r in sorted(a.unit_rates.items())},
                "by_project": {p: r.to_json() for p, r in sorted(a.project_rates.items())},
            }
            out["flagged"] = a.outside_year
        return out


def _held_json(h: Held) -> dict[str, Any]:
    return {
        "held_records": h.records,
        "held_rmb": str(h.amount_rmb.quantize(Decimal("0.01"))),
        "held_reasons": dict(sorted(h.reasons.items())),
        "missing_proofs": dict(sorted(h.missing_proofs.items())),
    }


def _unit_actuals(board: Scoreboard) -> dict[str, int]:
    """Every unit with a target or a counted signing → signings counted this period."""
    a = board.assessment
    units = sorted(set(board.signed_by_unit) | set(a.unit_targets if a else {}))
    return {u: sum(board.signed_by_unit.get(u, {}).values()) for u in units}


# --- ranking (shared with the what-if) ---------------------------------------------------------


def group_of(code: str, directory: Directory | None) -> str:
    if directory is None:
        return "other"
    if directory.is_leader(code):
        return "leader"
    entry = directory.units.get(code)
    return entry.kind if entry is not None else "other"


def name_of(code: str, directory: Directory | None) -> str:
    if directory is None:
        return code
    entry = directory.units.get(code) or directory.leaders.get(code)
    return entry.name_zh if entry is not None else code


def ranked(
    totals: Mapping[str, tuple[Decimal, Decimal, int]], directory: Directory | None
) -> list[SubjectScore]:
    """Subjects with (points, amount_rmb, projects), ranked within their group."""
    rows = [
        SubjectScore(code, group_of(code, directory), name_of(code, directory), *values)
        for code, values in totals.items()
    ]
    rows.sort(key=lambda r: (GROUP_ORDER.index(r.group), -r.points, r.subject))
    out: list[SubjectScore] = []
    seen_in_group = 0
    for row in rows:
        prev = out[-1] if out and out[-1].group == row.group else None
        seen_in_group = seen_in_group + 1 if prev is not None else 1
        rank = prev.rank if prev is not None and prev.points == row.points else seen_in_group
        out.append(SubjectScore(**{**asdict(row), "rank": rank}))
    return out


# --- reading ---------------------------------------------------------------------------------


def subject_totals(
    session: Session, year: int, quarter: int | None = None
) -> dict[str, tuple[Decimal, Decimal, int]]:
    """subject → (points, RMB counted, projects counted), reversals netted out."""
    line = store.CreditLine
    query = select(
        line.subject, line.project_id, func.sum(line.points_fen), func.sum(line.amount_rmb_fen)
    ).where(line.year == year)
    if quarter is not None:
        query = query.where(line.quarter == quarter)
    query = query.group_by(line.subject, line.project_id)
    points: dict[str, int] = defaultdict(int)
    amounts: dict[str, int] = defaultdict(int)
    projects: dict[str, int] = defaultdict(int)
    for subject, _project, p, a in session.exec(query).all():
        points[subject] += int(p or 0)
        amounts[subject] += int(a or 0)
        projects[subject] += 1 if int(a or 0) > 0 else 0
    return {
        s: (from_fen(points[s]), from_fen(amounts[s]), projects[s])
        for s in points
        if points[s] or amounts[s]
    }


def _quarter_bounds(year: int, quarter: int) -> tuple[dt.date, dt.date]:
    start = dt.date(year, 3 * quarter - 2, 1)
    end = dt.date(year + 1, 1, 1) if quarter == 4 else dt.date(year, 3 * quarter + 1, 1)
    return start, end


def _plan(year: int, quarter: int, rules: Rules | None) -> int | None:
    start, _ = _quarter_bounds(year, quarter)
    try:
        return signing_targets(start, rules=rules).get(f"Q{quarter}")
    except LookupError:
        return None


def held_summary(session: Session, year: int, quarter: int | None = None) -> dict[str, int]:
    """Funds records held, by what they wait for (a record may wait for several things)."""
    f = store.FundsRecord
    start, end = (
        _quarter_bounds(year, quarter)
        if quarter
        else (dt.date(year, 1, 1), dt.date(year + 1, 1, 1))
    )
    query = select(f.hold_reason).where(
        f.state == "held",
        f.arrived_on >= start,  # type: ignore[operator]
        f.arrived_on < end,  # type: ignore[operator]
    )
    out: dict[str, int] = defaultdict(int)
    for reason in session.exec(query).all():
        for what in hold_kinds(reason or ""):
            out[what] += 1
    return dict(out)


def hold_kinds(reason: str) -> list[str]:
    kinds = []
    if "recognis" in reason:
        kinds.append("recognition")
    if "no CNY rate" in reason or "rate" in reason.split(" / ")[0].lower():
        kinds.append("exchange_rate")
    if "project.lead" in reason:
        kinds.append("lead")
    return kinds or ["other"]


def assessed_subjects(directory: Directory | None) -> list[str]:
    """The assessed subjects (考核对象): every unit but the Center, and every county leader."""
    if directory is None:
        return []
    units = [c for c, u in directory.units.items() if u.kind != "center"]
    return units + list(directory.leaders)


def read_assessment(
    session: Session, year: int, quarter: int | None, rules: Rules | None
) -> Assessment:
    """The assessment of `year` (or one quarter) from scoring's tables: what the scoreboard
    shows and score.rates publishes (assessment_rates.py), one reading for both."""
    rates = {
        (r.on, r.currency): r.rate
        for r in session.exec(select(store.Rate)).all()
        if r.rate is not None
    }
    return assess(
        year,
        session.exec(select(store.Project)).all(),
        session.exec(select(store.Signing)).all(),
        session.exec(select(store.Milestone)).all(),
        session.exec(select(store.FundsRecord)).all(),
        rates,
        rules,
        quarter,
    )


def build(
    engine: Engine,
    year: int,
    quarter: int | None = None,
    *,
    directory: Directory | None = None,
    rules: Rules | None = None,
) -> Scoreboard:
    with Session(engine) as session:
        totals = subject_totals(session, year, quarter)
        held = held_summary(session, year, quarter)
        a = read_assessment(session, year, quarter, rules)
    # Zero rows too: a subject with nothing credited is listed, with what it has held.
    zero = (Decimal(0), Decimal(0), 0)
    for code in [*assessed_subjects(directory), *a.held]:
        totals.setdefault(code, zero)
    quarters = [quarter] if quarter else [1, 2, 3, 4]
    targets = [QuarterTarget(q, _plan(year, q, rules), a.signings.get(q, 0)) for q in quarters]
    return Scoreboard(
        year, quarter, ranked(totals, directory), targets, a.signings_by_unit, held, a
    )


# --- rendering -----------------------------------------------------------------------------


def money(value: Decimal) -> str:
    return f"{value:,.2f}"


def pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _why(h: Held) -> str:
    """Why a subject's funds are held: each reason with its record count, proofs named."""
    parts = []
    for key, n in sorted(h.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        label = HOLD_LABELS.get(key, key).split(" / ")[0]
        if key == "landing_proofs" and h.missing_proofs:
            label += " (" + ", ".join(sorted(h.missing_proofs)) + ")"
        parts.append(f"{n}× {label}")
    return "; ".join(parts)


def _rates_line(label: str, r: Rates) -> str:
    return (
        f"  {label:<10}{r.signed:>7}{pct(r.performance_rate):>9}{pct(r.landing_rate):>9}"
        f"{pct(r.funds_rate):>9}{money(r.funds_rmb):>20}{money(r.contracted_rmb):>22}"
    )


def render_table(board: Scoreboard) -> str:
    period = f"Q{board.quarter}" if board.quarter else "all quarters"
    a = board.assessment
    lines = [f"Scoreboard {board.year}, {period} / {board.year}年度招商引资考核计分"]
    if not board.subjects:
        lines.append("  nothing credited yet / 暂无计分")
    group = None
    for s in board.subjects:
        if s.group != group:
            group = s.group
            lines.append(f"\n  {GROUPS[group]}")
            lines.append(
                f"  {'rank':>4}  {'subject':<9}{'points':>20}{'RMB counted':>20}{'projects':>10}"
                f"{'held':>6}{'RMB held':>18}  name; why held"
            )
        h = board.held_of(s.subject)
        why = _why(h)
        lines.append(
            f"  {s.rank:>4}  {s.subject:<9}{money(s.points):>20}{money(s.amount_rmb):>20}"
            f"{s.projects:>10}{h.records:>6}{money(h.amount_rmb):>18}  {s.name}"
            + (f"; {why}" if why else "")
        )
    min_amount = a.signing_min_amount if a else Decimal(100_000_000)
    lines.append(
        f"\nSigning targets: signed projects of at least {min_amount:,.0f} yuan / 签约过亿元项目"
    )
    lines.append(f"  {'quarter':<9}{'plan':>6}{'actual':>8}")
    for t in board.targets:
        plan = "-" if t.plan is None else str(t.plan)
        flag = "  behind / 未完成" if t.plan is not None and t.actual < t.plan else ""
        lines.append(f"  {'Q' + str(t.quarter):<9}{plan:>6}{t.actual:>8}{flag}")
    if a is not None and a.signings_excluded:
        why = ", ".join(
            f"{n} {k.replace('_', ' ')}" for k, n in sorted(a.signings_excluded.items())
        )
        lines.append(f"  not counted / 不计入: {why}")
    if board.signed_by_unit or (a and a.unit_targets):
        quarters = [t.quarter for t in board.targets]
        lines.append("  by attracting unit, plan vs actual / 按招商单位（目标/完成）:")
        lines.append(
            "    "
            + f"{'unit':<10}"
            + "".join(f"{'Q' + str(q):>5}" for q in quarters)
            + f"{'actual':>8}{'plan':>6}"
        )
        for unit, actual in _unit_actuals(board).items():
            qs = board.signed_by_unit.get(unit, {})
            plan = a.unit_targets.get(unit) if a else None
            lines.append(
                "    "
                + f"{unit:<10}"
                + "".join(f"{qs.get(q, 0):>5}" for q in quarters)
                + f"{actual:>8}{'-' if plan is None else plan:>6}"
            )
    if a is not None:
        plan = "-" if a.new_start_target is None else str(a.new_start_target)
        lines.append(
            f"\nNew starts of projects of at least {a.new_start_min_amount:,.0f} yuan / "
            f"新开工过亿元项目: actual {sum(a.new_starts.values())}, plan {plan}"
            + (
                " (" + ", ".join(f"Q{q} {n}" for q, n in sorted(a.new_starts.items())) + ")"
                if a.new_starts
                else ""
            )
        )
        lines.append(
            "\nRates of signed projects / 履约率、落地率、资金到位率 "
            "(performance = started/signed, landing = registered or started/signed, "
            "funds = funds in place/contracted):"
        )
        lines.append(
            f"  {'':<10}{'signed':>7}{'履约率':>7}{'落地率':>7}{'到位率':>7}"
            f"{'funds in place':>20}{'contracted':>22}"
        )
        lines.append(_rates_line("county", a.county_rates))
        for unit, r in sorted(a.unit_rates.items()):
            lines.append(_rates_line(unit, r))
        unconverted = a.county_rates.funds_unconverted
        if unconverted:
            lines.append(f"  ({unconverted} funds records without a rate left out / 缺汇率未计入)")
        nowhere = [f for f in a.outside_year if "every assessment year" in f["problem"]]
        if nowhere:
            lines.append(
                f"\nFlagged / 提示: {len(nowhere)} funds records dated outside every "
                "assessment year (no scoring ruleset in force) / 到位日期不在考核年度内"
            )
        other = [f for f in a.outside_year if f not in nowhere]
        if other:
            funds_n = sum("funds_id" in f for f in other)
            lines.append(
                f"Flagged / 提示: {funds_n} funds records and {len(other) - funds_n} milestones "
                "dated outside their project's assessment year (its lead's year): counted, "
                "marked / 非项目考核年度，已计入并标注"
            )
    if board.held:
        what = ", ".join(
            f"{n} waiting for {k.replace('_', ' ')}" for k, n in sorted(board.held.items())
        )
        lines.append(f"\nFunds records held / 暂缓计分: {what}")
    return "\n".join(lines)


CSV_COLUMNS = [
    "section",
    "year",
    "quarter",
    "group",
    "rank",
    "subject",
    "name",
    "points",
    "amount_rmb",
    "projects",
    "plan",
    "actual",
    "held_records",
    "held_rmb",
    "held_reasons",
    "performance_rate",
    "landing_rate",
    "funds_rate",
]


def render_csv(board: Scoreboard) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for s in board.subjects:
        writer.writerow(
            {
                "section": "subject",
                "year": board.year,
                "quarter": board.quarter or "",
                "group": s.group,
                "rank": s.rank,
                "subject": s.subject,
                "name": s.name,
                "points": s.points,
                "amount_rmb": s.amount_rmb,
                "projects": s.projects,
                "held_records": board.held_of(s.subject).records,
                "held_rmb": board.held_of(s.subject).amount_rmb.quantize(Decimal("0.01")),
                "held_reasons": _why(board.held_of(s.subject)),
            }
        )
    for t in board.targets:
        writer.writerow(
            {
                "section": "target",
                "year": board.year,
                "quarter": t.quarter,
                "plan": "" if t.plan is None else t.plan,
                "actual": t.actual,
            }
        )
    a = board.assessment
    if a is not None:
        for unit, r in [("county", a.county_rates), *sorted(a.unit_rates.items())]:
            writer.writerow(
                {
                    "section": "rates",
                    "year": board.year,
                    "quarter": board.quarter or "",
                    "subject": unit,
                    "actual": r.signed,
                    "performance_rate": r.performance_rate,
                    "landing_rate": r.landing_rate,
                    "funds_rate": r.funds_rate,
                }
            )
    return buf.getvalue()


def render(board: Scoreboard, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(board.to_json(), ensure_ascii=False, indent=2)
    if fmt == "csv":
        return render_csv(board)
    return render_table(board)


def parse_quarter(text: str | int | None) -> int | None:
    """`Q2`, `q2` or `2` → 2; None stays None. ValueError names what is accepted."""
    if text is None or text == "":
        return None
    raw = str(text).strip().upper().removeprefix("Q")
    if raw not in ("1", "2", "3", "4"):
        raise ValueError(f"quarter {text!r}: expected Q1, Q2, Q3 or Q4")
    return int(raw)


def default_directory() -> Directory | None:
    from shared.settings import Settings

    try:
        return load_directory(Settings.from_env().units_file)
    except Exception:
        return None


def scoring_database_url(data_dir: Path | None = None) -> str:
    """Scoring's database as the service finds it: SCORING_DATABASE_URL, DATABASE_URL, or
    `<data dir>/scoring.db` (the data dir: `data_dir`, else $INVESTFLOW_DATA_DIR)."""
    import os

    from shared.settings import Settings

    settings = Settings.from_env()
    if data_dir is not None and not (
        os.environ.get("SCORING_DATABASE_URL") or settings.database_url
    ):
        return f"sqlite:///{Path(data_dir) / 'scoring.db'}"
    return settings.database_url_for("scoring")


def render_for_demo(
    database_url: str | None = None, year: int = 2022, *, data_dir: Path | None = None
) -> str:
    """The scoreboard as the demo prints it at the end (give the URL, or the demo's data dir)."""
    from shared.db import create_tables, make_engine

    engine = make_engine(database_url or scoring_database_url(data_dir))
    try:
        create_tables(engine, store.TABLES)  # an empty board rather than an error
        return render_table(build(engine, year, directory=default_directory()))
    finally:
        engine.dispose()
