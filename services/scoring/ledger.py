"""What to do with one funds-in-place record (到位资金), given what scoring knows. Pure.

A record is credited once its project's lead is known, the project is recognised (认定) and
the arrival day's rate is known; `decide.score` does the arithmetic and picks the multiplier.
Until then it is held, with every reason that still stands ("not recognised; no USD rate on
2022-04-27"), and a new held event goes out only when that reason changes. A credited record
is reversed when recognition is withdrawn, and reversed and credited again when the sponsor
leader (包保县级领导) it was credited to changes.

    settle(record, project, rate, rules)  ->  [Hold | Credit | Reverse, ...]   (empty: nothing to do)
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.rules import Rules, funds_dict, project_dict
from shared.rules.facts import FactsError

from .decide import Scored, ScoreHeld, score_checked

NO_LEAD = "waiting for the project's lead (project.lead) / 等待项目信息"
NOT_YET_RECOGNISED = "project not yet recognised for the assessment / 项目尚未认定"
NO_RULESET = "no scoring ruleset in force"
WITHDRAWN = "withdrawn / 已撤回"
COMMITTEE_REJECTED = "project rejected by the committee: not recognised for the assessment / 项目未通过集体决策，不予认定"


@dataclass(frozen=True)
class ProjectState:
    project_id: str
    lead: Mapping[str, Any] | None  # the Lead payload as JSON values; None until it arrives
    recognized: bool | None  # None: review has not said yet
    recognition_blockers: list[str] = field(default_factory=list)
    missing_proofs: list[str] = field(default_factory=list)
    sponsor_leader: str | None = None
    committee_rejected: bool = False  # 未通过集体决策: never recognised
    # The stored text `lead` was read from, when there is one: names the checked lead in
    # `_checked_leads`, so the same lead is checked once rather than at every record.
    lead_json: str | None = field(default=None, compare=False)
    # 撤回: the lead was withdrawn (entered by mistake, or the claim went to another unit);
    # the reason, as sent. Nothing of the project counts any more.
    withdrawn: str | None = None


@dataclass(frozen=True)
class ActiveCredit:
    points: Decimal
    credited_to: list[str]
    # The period and amount credited: a corrected date or amount with the same points still
    # moves the credit (another quarter, another RMB amount).
    period: tuple[int, int] | None = None
    amount_rmb: Decimal | None = None


@dataclass(frozen=True)
class FundsState:
    project_id: str
    funds_id: str
    funds: Mapping[str, Any]  # the Funds payload as JSON values
    currency: str
    arrived_on: dt.date
    held_because: str | None  # the reason last announced, when held
    credit: ActiveCredit | None  # the credit standing, when credited


@dataclass(frozen=True)
class Hold:
    reason: str


@dataclass(frozen=True)
class Credit:
    scored: Scored
    cause: str | None = None  # why it replaces an earlier credit


@dataclass(frozen=True)
class Reverse:
    reason: str


Step = Hold | Credit | Reverse


def not_recognised(project: ProjectState) -> str:
    """Names the review rules that block recognition; not the missing proofs one by one,
    which shrink with every document filed (review.recognition lists them): a held record
    is announced again only when what blocks it changes, not at every document."""
    if project.recognized is None:
        return NOT_YET_RECOGNISED
    if project.committee_rejected:
        return COMMITTEE_REJECTED
    blockers = sorted(project.recognition_blockers)
    detail = f": blocked by {', '.join(blockers)}" if blockers else ""
    return f"project not recognised for the assessment{detail} / 项目未通过认定"


def evaluate(
    record: FundsState, project: ProjectState, rate: Decimal | None, rules: Rules
) -> Scored | ScoreHeld | str:
    """decide.score on this record, or why it cannot be scored (no lead, bad facts, no ruleset)."""
    if project.lead is None:
        return NO_LEAD
    funds = {k: v for k, v in record.funds.items() if k not in ("unit", "project_id")}
    rates = {record.currency: rate} if rate is not None else {}
    try:
        p = _checked_lead(project.lead, project.lead_json)
        f = funds_dict(funds)
        return score_checked(p, f, rates, sponsor_leader=project.sponsor_leader, rules=rules)
    except FactsError as exc:
        return f"the facts cannot be scored: {exc} / 数据无法计分"
    except LookupError:  # no scoring ruleset in force on the arrival day
        day = record.arrived_on
        return f"{NO_RULESET} on {day}: held until one is published / {day} 无生效的计分规则集"


_CHECKED_LEADS = 1024  # projects; a county handles a few hundred a year
_checked_leads: OrderedDict[str, dict[str, Any]] = OrderedDict()
_checked_lock = threading.Lock()  # transactions run on a thread pool


def _checked_lead(lead: Mapping[str, Any], text: str | None) -> dict[str, Any]:
    """`project_dict(lead)`, from the cache when `lead` was read from `text` before.

    A lead never changes once stored, and checking is deterministic, so the same text always
    checks to the same values (or the same FactsError, never cached). A copy goes out: the
    facts and explanations built from it must not share objects with the cache.
    """
    if text is None:
        return project_dict(lead)
    with _checked_lock:
        checked = _checked_leads.get(text)
        if checked is not None:
            _checked_leads.move_to_end(text)
    if checked is None:
        checked = project_dict(lead)
        with _checked_lock:
            _checked_leads[text] = checked
            while len(_checked_leads) > _CHECKED_LEADS:
                _checked_leads.popitem(last=False)
    return _fresh(checked)


def _fresh(value: Any) -> Any:
    """A copy of the dicts and lists; the values in them (Decimal, date, enum members, text,
    numbers) are immutable and shared. Several times cheaper than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


def settle(
    record: FundsState,
    project: ProjectState,
    rate: Decimal | None,
    rules: Rules,
    *,
    rescore: bool = False,
    cause: str | None = None,
) -> list[Step]:
    """The steps that bring `record` in line with what is known now.

    `rescore`: the sponsor leader changed, or the record or its lead was corrected (更正,
    `cause` says which); a credit whose points, subjects, period or amount would differ now
    is reversed and credited again. Otherwise a standing credit is only ever reversed (when
    recognition or the project is withdrawn): a ruleset published later never rewrites past
    credits.
    """
    if project.withdrawn is not None:
        reason = f"project {WITHDRAWN}: {project.withdrawn}"
        if record.credit is not None:
            return [Reverse(reason)]
        return [] if reason == record.held_because else [Hold(reason)]
    if record.credit is not None:
        if project.recognized is not True:
            return [Reverse(f"recognition withdrawn: {not_recognised(project)}")]
        if not rescore:
            return []
        result = evaluate(record, project, rate, rules)
        if not isinstance(result, Scored):
            if cause is None:
                return []  # cannot rescore (should not happen: it was scored before); keep it
            # A correction made it unscorable (a currency without a rate, say): the old
            # credit no longer stands, and the record waits like a new one.
            held = result if isinstance(result, str) else result.reason
            return [Reverse(f"{cause}; {held}"), Hold(held)]
        credit = record.credit
        if (result.points, result.credited_to) == (credit.points, credit.credited_to) and (
            credit.period is None
            or ((result.year, result.quarter), result.amount_rmb)
            == (credit.period, credit.amount_rmb)
        ):
            return []
        why = cause or (
            f"credited again: sponsor leader is now {project.sponsor_leader} / 包保县级领导变更"
        )
        return [Reverse(why), Credit(result, why)]

    reasons = []
    if project.recognized is not True:
        reasons.append(not_recognised(project))
    result = evaluate(record, project, rate, rules)
    if isinstance(result, str):
        reasons.append(result)
    elif isinstance(result, ScoreHeld):
        reasons.append(result.reason)
    if reasons:
        reason = "; ".join(reasons)
        return [] if reason == record.held_because else [Hold(reason)]
    assert isinstance(result, Scored)
    return [Credit(result)]
