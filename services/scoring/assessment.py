"""What the assessment counts besides points: signings against targets, new starts, the three
rates, and why funds are held — all from scoring's own tables, every number from the scoring
ruleset. Pure over the rows given (no database access here); scoreboard.py reads and renders.

Counted signings (签约过亿元项目, 实施方案·三（一）): a project's `signed` milestone in the year,
of at least `signing_min_amount`, of a project in scope: not terminated at screening, not
rejected by the committee, its investor's origin not in `signing_excluded_origins`.

New starts (新开工过亿元项目, 实施方案·三（三）): a project in scope that `started` in the year,
planned investment at least `new_start_min_amount`; target `new_start_target`.

Rates (履约率、落地率、资金到位率, 实施方案·三（三）; `rate_definitions`), over the projects in
scope signed in the year (any amount):
- performance 履约率 = those that reached a milestone of `performance` (started) / signed
- landing 落地率 = those that reached one of `landing` (registered, started) / signed
- funds 资金到位率 = funds in place by the year's end, in RMB / their signed amounts
A funds record in a currency without a rate for its day is left out of the RMB sum and
counted as such (never guessed).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.rules import Rules, default_registry

from . import store
from .store import from_fen

RULESET = "scoring"
DEFAULTS: dict[str, Any] = {
    "signing_min_amount": 100_000_000,
    "signing_excluded_origins": ["inside_county"],
    "unit_signing_targets": {},
    "new_start_min_amount": 100_000_000,
    "new_start_target": None,
    "rate_definitions": {"performance": ["started"], "landing": ["registered", "started"]},
    "credit_roles": ["attracting_unit", "landing_area", "sponsor_leader"],
}

# Why a record is held, by key; what the scoreboard prints for each.
HOLD_LABELS = {
    "committee_rejected": "rejected by the committee / 未通过集体决策",
    "committee_approval_missing": "awaiting the committee's approval / 待集体决策批准",
    "environment_not_assessed": "not assessed / 未评估",
    "landing_proofs": "landing proofs missing / 缺落地证明材料",
    "inside_county_source": "investment from inside the county / 县内投资",
    "terminated": "terminated at screening / 已告知终止洽谈",
    "exchange_rate": "no exchange rate / 缺汇率",
    "outside_assessment_year": "dated outside the assessment year / 不在考核年度内",
    "review_pending": "waiting for review / 待审查认定",
    "other": "other / 其他",
}


def parameter(rules: Rules | None, name: str, day: dt.date) -> Any:
    """A scoring parameter in force on `day`; the documented default when the ruleset in
    force has none (rulesets written before it) or no ruleset is in force."""
    try:
        return (rules or default_registry()).parameter(RULESET, name, day)
    except (KeyError, LookupError):
        return DEFAULTS[name]


@dataclass
class ProjectFacts:
    project_id: str
    lead: dict[str, Any]
    attracting_unit: str | None
    landing_area: str | None
    sponsor_leader: str | None
    recognition: dict[str, Any]
    withdrawn: bool = False  # 撤回: the lead was withdrawn; nothing of it counts

    @classmethod
    def of(cls, row: store.Project) -> ProjectFacts:
        return cls(
            row.project_id,
            json.loads(row.lead) if row.lead else {},
            row.attracting_unit,
            row.landing_area,
            row.sponsor_leader,
            json.loads(row.recognition) if row.recognition else {},
            row.withdrawn is not None,
        )

    @property
    def lead_year(self) -> int | None:
        """The project's assessment year: the year its lead reports it (当年度引进)."""
        reported = self.lead.get("reported_on")
        return int(str(reported)[:4]) if reported else None

    def out_of_scope(self, excluded_origins: Iterable[str]) -> str | None:
        """Why the project's signings and starts do not count, or None."""
        if not self.lead:
            return "lead_unknown"
        if self.withdrawn:
            return "withdrawn"
        if self.recognition.get("terminated"):
            return "terminated"
        if self.recognition.get("committee_rejected"):
            return "committee_rejected"
        origin = (self.lead.get("investor") or {}).get("origin")
        if origin in set(excluded_origins):
            return str(origin)
        return None

    def subjects(self, roles: Iterable[str]) -> list[str]:
        values = {
            "attracting_unit": self.attracting_unit,
            "landing_area": self.landing_area,
            "sponsor_leader": self.sponsor_leader,
        }
        return list(dict.fromkeys(v for r in roles if (v := values.get(r) or self.lead.get(r))))

    @property
    def planned_investment(self) -> Decimal:
        return Decimal(str(self.lead.get("planned_investment") or 0))


@dataclass
class Rates:
    signed: int = 0
    performed: int = 0  # reached a `performance` milestone (started)
    landed: int = 0  # reached a `landing` milestone (registered or started)
    contracted_rmb: Decimal = Decimal(0)
    funds_rmb: Decimal = Decimal(0)
    funds_unconverted: int = 0  # records left out: no rate for their day

    @staticmethod
    def _ratio(a: Decimal | int, b: Decimal | int) -> Decimal | None:
        return (Decimal(a) / Decimal(b)).quantize(Decimal("0.0001")) if b else None

    @property
    def performance_rate(self) -> Decimal | None:
        return self._ratio(self.performed, self.signed)

    @property
    def landing_rate(self) -> Decimal | None:
        return self._ratio(self.landed, self.signed)

    @property
    def funds_rate(self) -> Decimal | None:
        return self._ratio(self.funds_rmb, self.contracted_rmb)

    def add(self, other: Rates) -> None:
        self.signed += other.signed
        self.performed += other.performed
        self.landed += other.landed
        self.contracted_rmb += other.contracted_rmb
        self.funds_rmb += other.funds_rmb
        self.funds_unconverted += other.funds_unconverted

    def to_json(self) -> dict[str, Any]:
        def pct(v: Decimal | None) -> str | None:
            return None if v is None else str(v)

        return {
            "signed": self.signed,
            "performed": self.performed,
            "landed": self.landed,
            "contracted_rmb": str(self.contracted_rmb.quantize(Decimal("0.01"))),
            "funds_rmb": str(self.funds_rmb.quantize(Decimal("0.01"))),
            "funds_unconverted": self.funds_unconverted,
            "performance_rate": pct(self.performance_rate),
            "landing_rate": pct(self.landing_rate),
            "funds_rate": pct(self.funds_rate),
        }


@dataclass
class Held:
    """A subject's held funds records, their RMB where a rate is known, and why."""

    records: int = 0
    amount_rmb: Decimal = Decimal(0)
    reasons: Counter[str] = field(default_factory=Counter)
    missing_proofs: Counter[str] = field(default_factory=Counter)


@dataclass
class Assessment:
    signing_min_amount: Decimal
    signings: dict[int, int]  # quarter → counted signings, county-wide
    signings_by_unit: dict[str, dict[int, int]]
    unit_targets: dict[str, int]
    signings_excluded: dict[str, int]  # why → signings of ≥ the amount not counted
    new_start_min_amount: Decimal
    new_start_target: int | None
    new_starts: dict[int, int]
    new_starts_by_unit: dict[str, int]
    county_rates: Rates
    unit_rates: dict[str, Rates]
    project_rates: dict[str, Rates]
    held: dict[str, Held]  # subject → held records
    outside_year: list[dict[str, str]]  # funds records dated outside any assessment year


def _rmb(record: store.FundsRecord, rates: Mapping[tuple[dt.date, str], Decimal]) -> Decimal | None:
    amount = from_fen(record.amount_fen)
    if record.currency == "CNY":
        return amount
    rate = rates.get((record.arrived_on, record.currency))
    return None if rate is None else amount * rate


def _hold_keys(record: store.FundsRecord, project: ProjectFacts | None) -> list[str]:
    reason = record.hold_reason or ""
    keys: list[str] = []
    if project is None or not project.lead:
        keys.append("review_pending")
    elif project.recognition.get("committee_rejected"):
        keys.append("committee_rejected")
    elif project.recognition.get("terminated"):
        keys.append("terminated")
    elif not project.recognition:
        keys.append("review_pending")
    elif not project.recognition.get("recognized"):
        blockers = [str(b) for b in project.recognition.get("recognition_blockers", [])]
        keys.extend(b if b in HOLD_LABELS else "other" for b in blockers)
    if "no CNY rate" in reason:
        keys.append("exchange_rate")
    if "no scoring ruleset in force" in reason:
        keys.append("outside_assessment_year")
    return list(dict.fromkeys(keys)) or ["other"]


def _outside_lead_year(
    year: int,
    facts: Mapping[str, ProjectFacts],
    signings: list[store.Signing],
    milestones: list[store.Milestone],
    funds: list[store.FundsRecord],
    already: list[dict[str, str]],
) -> list[dict[str, str]]:
    """Records dated in another year than their project's lead (非当年度): accepted and
    counted in the year they are dated, marked here (and `out_of_year` on their score events)
    when either year is this one."""
    seen = {(f["project_id"], f.get("funds_id", "")) for f in already}
    out = []

    def flag(pid: str, what: dict[str, str], day: dt.date) -> None:
        pf = facts.get(pid)
        lead_year = pf.lead_year if pf is not None and not pf.withdrawn else None
        if lead_year is None or day.year == lead_year or year not in (day.year, lead_year):
            return
        problem = (
            f"dated {day.year}, outside the project's assessment year {lead_year} (its lead's "
            f"year) / 非项目考核年度（{lead_year}年）"
        )
        out.append({"project_id": pid, **what, "problem": problem})

    for r in funds:
        if (r.project_id, r.funds_id) not in seen:
            flag(
                r.project_id,
                {"funds_id": r.funds_id, "arrived_on": r.arrived_on.isoformat()},
                r.arrived_on,
            )
    for s in signings:
        flag(s.project_id, {"milestone": "signed", "on": s.signed_on.isoformat()}, s.signed_on)
    for m in milestones:
        flag(m.project_id, {"milestone": m.milestone, "on": m.on.isoformat()}, m.on)
    return out


def assess(
    year: int,
    projects: Iterable[store.Project],
    signings: Iterable[store.Signing],
    milestones: Iterable[store.Milestone],
    funds: Iterable[store.FundsRecord],
    rates: Mapping[tuple[dt.date, str], Decimal],
    rules: Rules | None,
    quarter: int | None = None,
) -> Assessment:
    start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
    p = lambda name: parameter(rules, name, start)  # noqa: E731 - the year's parameters
    min_signing = Decimal(str(p("signing_min_amount")))
    excluded_origins = [str(o) for o in p("signing_excluded_origins")]
    min_start = Decimal(str(p("new_start_min_amount")))
    definitions = p("rate_definitions")
    performance = set(definitions.get("performance", []))
    landing = set(definitions.get("landing", []))
    roles = [str(r) for r in p("credit_roles")]

    facts = {row.project_id: ProjectFacts.of(row) for row in projects}
    signings, milestones = list(signings), list(milestones)
    # A withdrawn record (撤回) counts for nothing: not in place, not held.
    funds = [r for r in funds if r.state != "withdrawn"]
    reached: dict[str, dict[str, dt.date]] = defaultdict(dict)
    for m in milestones:
        reached[m.project_id][m.milestone] = m.on

    def q_of(day: dt.date) -> int:
        return (day.month - 1) // 3 + 1

    def wanted(day: dt.date) -> bool:
        return start <= day <= end and (quarter is None or q_of(day) == quarter)

    county: dict[int, int] = defaultdict(int)
    by_unit: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    excluded: Counter[str] = Counter()
    signed_in_year: dict[str, store.Signing] = {}
    for s in signings:
        if not wanted(s.signed_on):
            continue
        pf = facts.get(s.project_id)
        why = pf.out_of_scope(excluded_origins) if pf else "lead_unknown"
        big = from_fen(s.amount_fen) >= min_signing
        if why is not None:
            if big:
                excluded[why] += 1
            continue
        assert pf is not None
        signed_in_year[s.project_id] = s
        if big:
            county[q_of(s.signed_on)] += 1
            by_unit[pf.attracting_unit or "?"][q_of(s.signed_on)] += 1

    starts: dict[int, int] = defaultdict(int)
    starts_by_unit: dict[str, int] = defaultdict(int)
    for pid, done in reached.items():
        on = done.get("started")
        pf = facts.get(pid)
        if on is None or pf is None or not wanted(on) or pf.out_of_scope(excluded_origins):
            continue
        if pf.planned_investment >= min_start:
            starts[q_of(on)] += 1
            starts_by_unit[pf.attracting_unit or "?"] += 1

    funds = list(funds)
    in_place: dict[str, Rates] = defaultdict(Rates)
    for record in funds:
        if record.project_id in signed_in_year and record.arrived_on <= end:
            rmb = _rmb(record, rates)
            if rmb is None:
                in_place[record.project_id].funds_unconverted += 1
            else:
                in_place[record.project_id].funds_rmb += rmb
    project_rates: dict[str, Rates] = {}
    unit_rates: dict[str, Rates] = defaultdict(Rates)
    county_rates = Rates()
    for pid, s in signed_in_year.items():
        done = {k for k, on in reached.get(pid, {}).items() if on <= end}
        r = Rates(
            signed=1,
            performed=int(bool(done & performance)),
            landed=int(bool(done & landing)),
            contracted_rmb=from_fen(s.amount_fen),
            funds_rmb=in_place[pid].funds_rmb,
            funds_unconverted=in_place[pid].funds_unconverted,
        )
        project_rates[pid] = r
        unit_rates[facts[pid].attracting_unit or "?"].add(r)
        county_rates.add(r)

    held: dict[str, Held] = defaultdict(Held)
    outside: list[dict[str, str]] = []
    for record in funds:
        if record.state != "held":
            continue
        if "no scoring ruleset in force" in (record.hold_reason or ""):
            outside.append(
                {
                    "project_id": record.project_id,
                    "funds_id": record.funds_id,
                    "arrived_on": record.arrived_on.isoformat(),
                    "problem": "dated outside every assessment year (no scoring ruleset in "
                    "force) / 到位日期不在考核年度内",
                }
            )
        if not wanted(record.arrived_on):
            continue
        pf = facts.get(record.project_id)
        keys = _hold_keys(record, pf)
        rmb = _rmb(record, rates)
        proofs = [str(x) for x in (pf.recognition.get("missing_proofs", []) if pf else [])]
        for subject in pf.subjects(roles) if pf else []:
            h = held[subject]
            h.records += 1
            h.amount_rmb += rmb or Decimal(0)
            h.reasons.update(keys)
            h.missing_proofs.update(proofs)

    outside += _outside_lead_year(year, facts, signings, milestones, funds, outside)
    return Assessment(
        signing_min_amount=min_signing,
        signings=dict(county),
        signings_by_unit={u: dict(q) for u, q in by_unit.items()},
        unit_targets={str(u): int(n) for u, n in (p("unit_signing_targets") or {}).items()},
        signings_excluded=dict(excluded),
        new_start_min_amount=min_start,
        new_start_target=None if p("new_start_target") is None else int(p("new_start_target")),
        new_starts=dict(starts),
        new_starts_by_unit=dict(starts_by_unit),
        county_rates=county_rates,
        unit_rates=dict(unit_rates),
        project_rates=project_rates,
        held=dict(held),
        outside_year=outside,
    )
