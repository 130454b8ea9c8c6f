"""Scoring decisions (招商引资考核办法·计分方法). Pure: no NATS, no database.

One funds-in-place record (到位资金) of a recognised project scores

    amount_rmb = amount × rate(currency, arrived_on)         (CNY: rate 1)
    points     = amount_rmb × multiplier, rounded to the fen (分) once, half up

where the multiplier is the highest among the scoring rules that match ("同一个项目不重复计算，
取最高值"), or the ruleset's `default_multiplier` (1) when none does. Ties go to the rule
written first. A missing exchange rate never becomes a guess: the record is held, naming the
currency and the day. The ruleset version is the one in force on `arrived_on`.

`amount_rmb` is reported rounded to the fen as well, but points are computed from the
unrounded amount so that rounding happens once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from shared.contract import Credited, Explanation, Funds, Held, Lead, Rates
from shared.rules import (
    Evaluation,
    Rules,
    default_registry,
    explanation,
    funds_dict,
    project_dict,
    project_facts,
)
from shared.rules.decision import decision_input
from shared.rules.facts import FactsError, get_path

RULESET = "scoring"
FEN = Decimal("0.01")

Project = Lead | Mapping[str, Any]


@dataclass(frozen=True)
class Scored:
    amount_rmb: Decimal
    rate: Decimal
    multiplier: Decimal
    points: Decimal
    matched: list[str]
    deciding_rule: str | None
    year: int
    quarter: int
    credit_roles: list[str]  # e.g. attracting_unit, landing_area, sponsor_leader
    credited_to: list[str]  # the codes those roles name on this project, each once
    explanation: Explanation
    evaluation: Evaluation | None = field(default=None, repr=False, compare=False)
    # The rules whose multipliers make up `multiplier` (one under `highest`; a boost and a
    # reduction under `highest_boost_then_reductions`).
    combined: list[str] = field(default_factory=list)

    def to_event(self, project_id: str, funds_id: str) -> Credited:
        return Credited(
            project_id=project_id,
            funds_id=funds_id,
            year=self.year,
            quarter=self.quarter,
            amount_rmb=self.amount_rmb,
            multiplier=self.multiplier,
            points=self.points,
            matched=self.matched,
            deciding_rule=self.deciding_rule,
            credited_to=self.credited_to,
            explanation=self.explanation,
            combined=self.combined,
        )


@dataclass(frozen=True)
class ScoreHeld:
    """Not scored yet: waiting for something (an exchange rate), never guessed."""

    reason: str
    currency: str
    arrived_on: dt.date

    def to_event(self, project_id: str, funds_id: str) -> Held:
        return Held(project_id=project_id, funds_id=funds_id, reason=self.reason)


def quarter_of(day: dt.date) -> int:
    return (day.month - 1) // 3 + 1


def _rate(currency: str, day: dt.date, rates: Rates | Mapping[str, Any] | None) -> Decimal | str:
    """The CNY rate, or why there is none."""
    if currency == "CNY":
        return Decimal(1)
    table: Mapping[str, Any] = {}
    if isinstance(rates, Rates):
        if rates.on != day:
            return (
                f"no CNY rate for {currency} on {day}: the rates given are of {rates.on} "
                f"/ 缺少 {day} 的 {currency} 汇率（所给汇率为 {rates.on}）"
            )
        table = rates.rates
    elif rates is not None:
        table = rates
    raw = table.get(currency)
    if raw is None:
        return f"no CNY rate for {currency} on {day} / 缺少 {day} 的 {currency} 兑人民币汇率"
    try:
        rate = raw if isinstance(raw, Decimal) else Decimal(str(raw))
    except InvalidOperation:
        return f"the {currency} rate {raw!r} is not a number / 汇率不是数值"
    if not rate.is_finite() or rate <= 0:
        return f"the {currency} rate {raw!r} is not a positive number / 汇率须为正数"
    return rate


def score(
    project: Project,
    funds: Funds | Mapping[str, Any],
    rates: Rates | Mapping[str, Any] | None = None,
    *,
    sponsor_leader: str | None = None,
    on: dt.date | None = None,
    rules: Rules | None = None,
) -> Scored | ScoreHeld:
    """Points for one funds record of a recognised project (recognition is checked by review).

    `rates`: the Center's `Rates` of the arrival day, or a mapping currency → CNY per unit.
    `sponsor_leader`: the 包保县级领导 once the committee named one (credited if a role).
    `on`: pick the ruleset version of another day than `arrived_on` (what-if, rule tests).
    """
    p = project_dict(project)
    f = funds_dict(funds)
    return score_checked(p, f, rates, sponsor_leader=sponsor_leader, on=on, rules=rules)


def score_checked(
    p: dict[str, Any],
    f: dict[str, Any],
    rates: Rates | Mapping[str, Any] | None = None,
    *,
    sponsor_leader: str | None = None,
    on: dt.date | None = None,
    rules: Rules | None = None,
) -> Scored | ScoreHeld:
    """`score` on a project and record already checked by `project_dict` and `funds_dict`
    (scoring keeps each project's checked lead: checking it is most of the work)."""
    arrived: dt.date = f["arrived_on"]
    day = on or arrived
    currency = str(f["currency"])
    rate = _rate(currency, arrived, rates)
    if isinstance(rate, str):
        return ScoreHeld(rate, currency, arrived)
    amount_exact = Decimal(f["amount"]) * rate
    facts = project_facts(p, [str(d["type"]) for d in p.get("documents", [])], sponsor_leader)
    facts["funds"] = {**f, "amount_rmb": amount_exact}
    source = rules or default_registry()
    ev = source.evaluate(RULESET, facts, day)
    ruleset = ev.resolved.ruleset

    multipliers = {r: m for r in ev.matched if (m := ev.outcome(r).multiplier) is not None}
    mode = _combination(source, day)
    default = Decimal(str(ruleset.default_multiplier))  # type: ignore[union-attr]
    multiplier, deciding, combined = combine(multipliers, list(ev.matched), mode, default)

    roles = [str(r) for r in source.parameter(RULESET, "credit_roles", day)]
    credited = list(dict.fromkeys(v for r in roles if (v := get_path(facts, r)) is not None))
    record, digest = decision_input(
        {"project": p, "funds": f, "rate": rate, "sponsor_leader": sponsor_leader, "on": day}
    )
    extra = ["credit_roles"] + (["multiplier_combination"] if mode != HIGHEST else [])
    return Scored(
        amount_rmb=amount_exact.quantize(FEN, ROUND_HALF_UP),
        rate=rate,
        multiplier=multiplier,
        points=(amount_exact * multiplier).quantize(FEN, ROUND_HALF_UP),
        matched=list(ev.matched),
        deciding_rule=deciding,
        year=arrived.year,
        quarter=quarter_of(arrived),
        credit_roles=roles,
        credited_to=[str(c) for c in credited],
        explanation=explanation(
            ev,
            [r.id for r in ev.resolved.rules],
            deciding,
            digest,
            extra_parameters=extra,
            record_input=record,
        ),
        evaluation=ev,
        combined=combined,
    )


# 同一个项目不重复计算，取最高值: the two readings a ruleset's `multiplier_combination` picks.
HIGHEST = "highest"
BOOST_THEN_REDUCTIONS = "highest_boost_then_reductions"
COMBINATIONS = (HIGHEST, BOOST_THEN_REDUCTIONS)


def _combination(source: Rules, day: dt.date) -> str:
    """The ruleset's reading; `highest` when it names none (rulesets older than the choice)."""
    try:
        mode = str(source.parameter(RULESET, "multiplier_combination", day))
    except (KeyError, LookupError):
        return HIGHEST
    if mode not in COMBINATIONS:
        # Validated with the ruleset's own rule tests; a typo must not silently pick one.
        raise FactsError(
            [
                (
                    "multiplier_combination",
                    f"{mode!r}: expected one of {', '.join(COMBINATIONS)} / 倍数取值方式无效",
                )
            ]
        )
    return mode


def combine(
    multipliers: Mapping[str, Decimal], order: list[str], mode: str, default: Decimal
) -> tuple[Decimal, str | None, list[str]]:
    """(multiplier, deciding rule, rules combined) from the matched rules' multipliers.

    `highest`: the single highest of all, ties to the rule written first; none: `default`.
    `highest_boost_then_reductions`: the highest boost (> 1, else 1) times the lowest
    reduction (< 1), each taken once; the deciding rule is the boost (else the reduction).
    """
    if not multipliers:
        return default, None, []
    if mode == HIGHEST:
        top = max(multipliers.values())
        deciding = next(r for r in order if multipliers.get(r) == top)
        return top, deciding, [deciding]
    boosts = {r: m for r, m in multipliers.items() if m > 1}
    cuts = {r: m for r, m in multipliers.items() if m < 1}
    picked: list[str] = []
    value = Decimal(1)
    if boosts:
        top = max(boosts.values())
        boost = next(r for r in order if boosts.get(r) == top)
        picked.append(boost)
        value *= top
    if cuts:
        low = min(cuts.values())
        cut = next(r for r in order if cuts.get(r) == low)
        picked.append(cut)
        value *= low
    if not picked:  # only ×1 rules matched
        one = next(r for r in order if r in multipliers)
        return Decimal(1), one, [one]
    return value, picked[0], picked


def credit_roles(on: dt.date, *, rules: Rules | None = None) -> list[str]:
    """Who is credited the full points of a record arriving on `on` (计分对象)."""
    return [str(r) for r in (rules or default_registry()).parameter(RULESET, "credit_roles", on)]


def signing_targets(on: dt.date, *, rules: Rules | None = None) -> dict[str, int]:
    """The year's quarterly targets of signed projects ≥ 100 million yuan: {Q1: n, ...}."""
    targets = (rules or default_registry()).parameter(RULESET, "signing_targets", on)
    return {str(q): int(n) for q, n in targets.items()}


def case_result(case: Any, rules: Rules) -> dict[str, Any]:
    """Every outcome a scoring rule test may expect (see shared/rules/ruletest.py)."""
    funds = dict(case.funds)
    if case.on is not None:
        funds.setdefault("arrived_on", case.on)
    result = score(
        case.project, funds, case.rates, sponsor_leader=case.sponsor_leader, on=case.on, rules=rules
    )
    version = rules.in_force(RULESET, case.on or funds_dict(funds)["arrived_on"])
    common = {"_version": version.key, "_rules": [r.id for r in version.rules]}
    if isinstance(result, ScoreHeld):
        return {**common, "held": True, "reason": result.reason}
    return {
        **common,
        "held": False,
        "multiplier": result.multiplier,
        "matched": result.matched,
        "deciding_rule": result.deciding_rule,
        "combined": result.combined,
        "amount_rmb": result.amount_rmb,
        "points": result.points,
        "credited_to": result.credited_to,
        "year": result.year,
        "quarter": result.quarter,
    }


__all__ = [
    "FactsError",
    "ScoreHeld",
    "Scored",
    "credit_roles",
    "quarter_of",
    "score",
    "score_checked",
    "signing_targets",
]
