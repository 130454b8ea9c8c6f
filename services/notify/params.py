"""The time triggers' parameters: the notify ruleset in force (rulesets/notify-*.yaml, issue
14.9), validated like every ruleset; and the rule-test decider that judges a situation with
them, as the triggers do (services/notify/triggers.py)."""

from __future__ import annotations

import datetime as dt
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.rules.notify import WEEKDAYS, NotifyParams, SigningBehind, Stall, Stalled, notify_params
from shared.rules.notify import WeeklyReport as WeeklyReport

Params = NotifyParams  # what triggers.py and the scheduler read
__all__ = ["WEEKDAYS", "Params", "ParamsError", "SigningBehind", "Stall", "Stalled"]

RULESET = "notify"


class ParamsError(ValueError):
    pass


def _rulesets_dir() -> Path:
    from shared.rules.registry import rulesets_dir

    return rulesets_dir()


def load_params(path: Path | None = None, on: dt.date | None = None) -> Params:
    """The notify ruleset's parameters: `path` (or $NOTIFY_TRIGGERS) naming a notify ruleset
    file, else the version in rulesets/ in force on `on` (default today), else the newest."""
    from shared.rules import RulesetError
    from shared.rules.load import load_file

    chosen = path or (
        Path(os.environ["NOTIFY_TRIGGERS"]) if os.environ.get("NOTIFY_TRIGGERS") else None
    )
    try:
        if chosen is not None:
            ruleset = load_file(chosen)
            if ruleset.id != RULESET:
                raise ParamsError(
                    f"{chosen}: a {ruleset.id} ruleset, not notify / 不是 notify 规则集"
                )
        else:
            ruleset = _in_force(str(_rulesets_dir()), on or dt.date.today())
        return notify_params(dict(ruleset.parameters))
    except RulesetError as exc:
        raise ParamsError(str(exc)) from exc
    except ValidationError as exc:  # checked by load already; kept for a clear message
        raise ParamsError(str(exc)) from exc


# Validated settings per loaded version: a tick judges up to a month of days.
_by_version: dict[int, tuple[Any, Params]] = {}


def params_in_force(rules: Any, day: dt.date) -> Params:
    """The thresholds of the notify version `rules` (the registry following the published
    rulesets) has in force on `day`, else its newest (a wall-clock day past the last version,
    as load_params does)."""
    try:
        ruleset = rules.in_force(RULESET, day)
    except LookupError:
        versions = rules.versions(RULESET)
        if not versions:
            raise ParamsError("no notify ruleset loaded / 未加载 notify 规则集") from None
        ruleset = versions[-1]
    cached = _by_version.get(id(ruleset))
    if cached is None or cached[0] is not ruleset:
        if len(_by_version) > 16:
            _by_version.clear()
        cached = (ruleset, notify_params(dict(ruleset.parameters)))
        _by_version[id(ruleset)] = cached
    return cached[1]


def targets_in_force(rules: Any, day: dt.date) -> dict[str, int] | None:
    """`signing_targets` of the notify version in force on `day` ({Q1: 6, ...}), or None."""
    try:
        param = rules.in_force(RULESET, day).parameters.get("signing_targets")
    except LookupError:
        return None
    return {str(k): int(v) for k, v in param.value.items()} if param else None


@lru_cache(maxsize=4)
def _rulesets(rulesets_dir: str) -> tuple[Any, ...]:
    from shared.rules.load import load_paths

    return tuple(r for r, _ in load_paths([rulesets_dir]))


def _in_force(rulesets_dir: str, day: dt.date) -> Any:
    versions = [r for r in _rulesets(rulesets_dir) if r.id == RULESET]
    if not versions:
        raise ParamsError(f"no notify ruleset in {rulesets_dir} / 未找到 notify 规则集")
    for ruleset in versions:
        if ruleset.effective.covers(day):
            return ruleset
    return max(versions, key=lambda r: r.effective.from_)


def signing_targets(rulesets_dir: Path, day: dt.date) -> dict[str, int] | None:
    """`signing_targets` of the notify ruleset in force on `day` ({Q1: 6, ...}), or None."""
    for ruleset in _rulesets(str(rulesets_dir)):
        if ruleset.id == RULESET and ruleset.effective.covers(day):
            param = ruleset.parameters.get("signing_targets")
            return {str(k): int(v) for k, v in param.value.items()} if param else None
    return None


def rule_titles(
    rulesets_dir: Path, ruleset_id: str, version: str | None
) -> dict[str, dict[str, str]]:
    """Rule id -> {zh, en} title, from the named version (or every version of the id)."""
    titles: dict[str, dict[str, str]] = {}
    for ruleset in _rulesets(str(rulesets_dir)):
        if ruleset.id != ruleset_id or (version and ruleset.version != version):
            continue
        for rule in ruleset.rules:
            titles[rule.id] = {"zh": rule.title.zh, "en": rule.title.en}
    return titles


# --- rule tests: a situation judged with the thresholds ------------------------------------


def judge(situation: Any, day: dt.date, params: Params) -> list[str]:
    """The alerts the triggers raise on `day` for a situation, with these parameters."""
    from .model import period, quarter_of

    alerts = []
    s = situation
    if s.days_without_visit is not None:
        if period(s.days_without_visit, params.visit_overdue_days, 7):
            alerts.append("visit_overdue")
        if period(s.days_without_visit, params.visit_escalate_days, 7):
            alerts.append("visit_escalated")
    left = s.days_to_agenda_deadline
    if left is not None and 0 <= left <= params.materials_due_within_days:
        alerts.append("materials_due")
    for kind, name, days in (
        ("stalled_signed", "signed_not_started", s.signed_not_started_days),
        ("stalled_land", "waiting_for_land", s.waiting_for_land_days),
        ("stalled_funds", "lacking_funds", s.lacking_funds_days),
    ):
        rule = getattr(params.stalled, name)
        if days is not None and period(days, rule.after_days, rule.repeat_days):
            alerts.append(kind)
    if s.signed_this_quarter is not None:
        q, start, end = quarter_of(day)
        gone = Fraction((day - start).days, (end - start).days + 1)
        target = getattr(params.signing_targets, f"Q{q}")
        rule = params.signing_behind
        if gone >= rule.check_after and s.signed_this_quarter < rule.expected_share * target:
            alerts.append("signing_behind")
    return alerts


def case_result(case: Any, rules: Any) -> dict[str, Any]:
    """A notify rule-test case's outcome (shared/rules/ruletest.py runs it)."""
    ruleset = rules.in_force(RULESET, case.on)
    values = {name: rules.parameter(RULESET, name, case.on) for name in ruleset.parameters}
    params = NotifyParams.model_validate(values)
    return {
        "alerts": judge(case.situation, case.on, params),
        "_version": ruleset.key,
        "_rules": [],
    }
