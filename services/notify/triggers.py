"""Who must be told what: pure functions from events and facts to alerts.

Each alert has a cause key that names the cause and its period (a project and a deadline,
a project and the week of an overdue visit, a quarter), so the outbox's unique key makes
"once per period" hold whatever the redeliveries, replicas and clock ticks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .model import Alert, ProjectCard, ProjectView, Snapshot, period, quarter_of
from .params import Params

CENTER = "CENTER"
TERMINAL_OUTCOMES = ("terminated", "withdrawn")  # screening ended it, or its lead was withdrawn


def _project_data(p: ProjectView | ProjectCard | None) -> dict[str, Any]:
    if p is None:
        return {}
    return {
        "title": p.title,
        "attracting_unit": p.attracting_unit,
        "landing_area": p.landing_area,
        "kind": p.kind,
        "planned_investment": str(p.planned_investment),
        "sponsor_leader": p.sponsor_leader,
    }


def _codes(*codes: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for c in codes if c))


# --- event triggers ---------------------------------------------------------------------------

RuleTitles = Callable[[str, str | None], dict[str, dict[str, str]]]
EventTrigger = Callable[[dict[str, Any], ProjectCard | None, RuleTitles], list[Alert]]


def _base(event: dict[str, Any], project: ProjectCard | None) -> dict[str, Any]:
    return _project_data(project) | {"project_id": event.get("project_id")}


def _lead_assigned(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    if project is None:
        return []
    pid = event.get("project_id")
    data = event["data"]
    return [
        Alert(
            f"lead_assigned:{pid}",
            "lead_assigned",
            _codes(project.attracting_unit, project.landing_area),
            pid,
            _base(event, project)
            | {
                "industry": data.get("industry"),
                "investor": data.get("investor", {}).get("name"),
                "reported_on": data.get("reported_on"),
            },
        )
    ]


def _duplicate_claim(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    pid = event.get("project_id")
    return [
        Alert(
            f"duplicate:{pid}",
            "duplicate_claim",
            (CENTER,),
            pid,
            _base(event, project)
            | {
                "duplicate_of": event["duplicate_of"],
                "units": event["units"],
                "reason": event["reason"],
            },
        )
    ]


def _terminated(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    if project is None or event["outcome"] != "terminated":
        return []
    pid = event.get("project_id")
    expl = event.get("explanation") or {}
    titles = rule_titles(expl.get("ruleset_id", "review"), expl.get("version"))
    reasons = [{"id": r, **titles.get(r, {"zh": r, "en": r})} for r in event.get("reasons", [])]
    return [
        Alert(
            f"terminated:{pid}",
            "terminated",
            _codes(project.attracting_unit, project.landing_area),
            pid,
            _base(event, project)
            | {
                "reasons": reasons,
                "ruleset": f"{expl.get('ruleset_id', '')}@{expl.get('version', '')}",
            },
        )
    ]


def _materials_missing(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    if project is None or event["complete"]:
        return []
    pid = event.get("project_id")
    deadline = event.get("deadline") or "unscheduled"
    return [
        Alert(
            f"materials_missing:{pid}:{deadline}",
            "materials_missing",
            _codes(project.attracting_unit),
            pid,
            _base(event, project)
            | {"missing": event["missing_materials"], "deadline": event.get("deadline")},
        )
    ]


def _approved(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    if project is None or event["decision"] != "approved":
        return []
    pid = event.get("project_id")
    return [
        Alert(
            f"approved:{pid}",
            "approved",
            _codes(
                event.get("sponsor_leader"),
                event.get("responsible_leader"),
                event.get("hq_commander"),
                *event.get("hq_members", []),
                project.attracting_unit,
            ),
            pid,
            _base(event, project)
            | {
                "sponsor_leader": event.get("sponsor_leader"),
                "responsible_leader": event.get("responsible_leader"),
                "hq_commander": event.get("hq_commander"),
                "hq_members": event.get("hq_members", []),
                "minutes_ref": event.get("minutes_ref"),
                "meeting_id": event.get("meeting_id"),
            },
        )
    ]


def _rejected(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    """未通过集体决策: the track ends; the attracting unit, the landing area and the Center
    are told (the funds are held, the project is not recognised)."""
    if project is None or event["decision"] != "rejected":
        return []
    pid = event.get("project_id")
    return [
        Alert(
            f"rejected:{pid}:{event.get('meeting_id')}",
            "rejected",
            _codes(project.attracting_unit, project.landing_area, CENTER),
            pid,
            _base(event, project)
            | {"minutes_ref": event.get("minutes_ref"), "meeting_id": event.get("meeting_id")},
        )
    ]


def _decided(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    return _approved(event, project, rule_titles) + _rejected(event, project, rule_titles)


def _credited(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    if project is None:
        return []
    pid = event.get("project_id")
    return [
        Alert(
            f"credited:{pid}:{event['funds_id']}",
            "credited",
            _codes(*event.get("credited_to", [])),
            pid,
            _base(event, project)
            | {
                key: str(event.get(key))
                for key in (
                    "funds_id",
                    "year",
                    "quarter",
                    "amount_rmb",
                    "multiplier",
                    "points",
                    "deciding_rule",
                )
            },
        )
    ]


_RECORD_ZH = {"lead": "项目信息", "funds": "到位资金记录", "milestone": "进度节点"}
_RECORD_EN = {"lead": "lead", "funds": "funds record", "milestone": "milestone"}


def _amended(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    """更正 / 撤回: the sponsor leader (包保县级领导), the unit that reported the record and,
    when another sends it (the Center), that sender too."""
    pid = event.get("project_id")
    corrected = "after" in event
    kind = "corrected" if corrected else "withdrawn"
    target = event["data"]["target"]
    recipients = _codes(
        project.sponsor_leader if project else None,
        event.get("owner"),
        project.attracting_unit if project else None,
        event.get("unit"),
    )
    data = _base(event, project) | {
        "target": f"{target['kind']}:{target.get('funds_id') or target.get('milestone') or pid}",
        "target_kind": _RECORD_EN.get(target["kind"], target["kind"]),
        "target_kind_zh": _RECORD_ZH.get(target["kind"], target["kind"]),
        "version": event.get("version"),
        "unit": event.get("unit"),
        "owner": event.get("owner"),
        "reason": event["data"].get("reason"),
        "changes": [
            {"field": c["field"], "old": str(c.get("old")), "new": str(c.get("new"))}
            for c in event.get("changes", [])
        ],
    }
    return [Alert(f"{kind}:{event['event_id']}", kind, recipients, pid, data)]


def _claim_resolved(
    event: dict[str, Any], project: ProjectCard | None, rule_titles: RuleTitles
) -> list[Alert]:
    pid = event.get("project_id")
    data = event["data"]
    return [
        Alert(
            f"claim_resolved:{pid}",
            "claim_resolved",
            _codes(*event.get("units", []), CENTER),
            pid,
            _base(event, project)
            | {
                "duplicate_of": event["duplicate_of"],
                "units": event["units"],
                "resolution": data["resolution"],
                "assign_to": data.get("assign_to"),
                "withdrawn": event.get("withdrawn"),
                "reason": data["reason"],
            },
        )
    ]


def minutes_alerts(
    event: dict[str, Any], project: ProjectCard | None, principals: tuple[str, ...]
) -> list[Alert]:
    """会议纪要报县委主要领导: each decision's minutes reference to the directory's principal
    leaders (role `principal`), once per project and meeting."""
    if project is None or not principals:
        return []
    pid = event.get("project_id")
    zh = {"approved": "准予落户", "rejected": "未通过"}.get(event["decision"], event["decision"])
    return [
        Alert(
            f"minutes:{pid}:{event.get('meeting_id')}",
            "minutes",
            principals,
            pid,
            _base(event, project)
            | {
                "decision": event["decision"],
                "decision_zh": zh,
                "minutes_ref": event.get("minutes_ref"),
                "meeting_id": event.get("meeting_id"),
            },
        )
    ]


# The one list of subjects that can alert: the consumer skips loading the project for any
# other subject, so a trigger added here is all it takes for a new subject to alert.
EVENT_TRIGGERS: dict[str, EventTrigger] = {
    "project.lead": _lead_assigned,
    "project.duplicate": _duplicate_claim,
    "review.screened": _terminated,
    "review.materials": _materials_missing,
    "review.decided": _decided,
    "score.credited": _credited,
    "project.correction": _amended,
    "project.withdrawal": _amended,
    "project.claim": _claim_resolved,
}
ALERTING_SUBJECTS = frozenset(EVENT_TRIGGERS)


def event_alerts(
    subject: str,
    event: dict[str, Any],
    project: ProjectCard | None,
    rule_titles: RuleTitles,
    principals: tuple[str, ...] = (),
) -> list[Alert]:
    """The alerts one consumed event causes (`project` as known after applying it);
    `principals`: the county's principal leaders, who receive the committee's minutes."""
    trigger = EVENT_TRIGGERS.get(subject)
    alerts = trigger(event, project, rule_titles) if trigger else []
    if subject == "review.decided":
        alerts += minutes_alerts(event, project, principals)
    return alerts


# --- time triggers ----------------------------------------------------------------------------


def time_alerts(
    snapshot: Snapshot,
    day: dt.date,
    params: Params,
    targets: Callable[[dt.date], dict[str, int] | None],
) -> list[Alert]:
    """Every alert due on `day`, judged on the facts dated on or before it."""
    alerts: list[Alert] = []
    for p in snapshot.projects.values():
        if p.reported_on > day:
            continue
        alerts.extend(_sponsorship(p, day, params))
        alerts.extend(_materials_due(p, day, params))
        alerts.extend(_stalled(p, day, params))
    alerts.extend(_signing_behind(snapshot, day, params, targets))
    return alerts


def _sponsorship(p: ProjectView, day: dt.date, params: Params) -> list[Alert]:
    """包保: the sponsor leader visits at least weekly; past two weeks the Center is told."""
    approved = p.approved_on(day)
    if approved is None or not p.sponsored(day) or not p.sponsor_leader:
        return []
    since = max(approved, p.last_visit(day) or approved)
    days = (day - since).days
    data = _project_data(p) | {
        "project_id": p.project_id,
        "last_visit": p.last_visit(day).isoformat() if p.last_visit(day) else None,
        "approved_on": approved.isoformat(),
        "days": days,
        "on": day.isoformat(),
    }
    out = []
    n = period(days, params.visit_overdue_days, 7)
    if n:
        out.append(
            Alert(
                f"visit_overdue:{p.project_id}:{since}:{n}",
                "visit_overdue",
                (p.sponsor_leader,),
                p.project_id,
                data,
            )
        )
    m = period(days, params.visit_escalate_days, 7)
    if m:
        out.append(
            Alert(
                f"visit_escalated:{p.project_id}:{since}:{m}",
                "visit_escalated",
                (CENTER,),
                p.project_id,
                data,
            )
        )
    return out


def _materials_due(p: ProjectView, day: dt.date, params: Params) -> list[Alert]:
    deadline = p.materials_deadline
    if p.materials_complete is not False or deadline is None or p.outcome in TERMINAL_OUTCOMES:
        return []
    if p.decision is not None or not 0 <= (deadline - day).days <= params.materials_due_within_days:
        return []
    missing = p.missing_materials_now()
    if not missing:
        return []
    return [
        Alert(
            f"materials_due:{p.project_id}:{deadline}",
            "materials_due",
            (p.attracting_unit,),
            p.project_id,
            _project_data(p)
            | {
                "project_id": p.project_id,
                "missing": missing,
                "deadline": deadline.isoformat(),
                "days_left": (deadline - day).days,
            },
        )
    ]


def _stalled(p: ProjectView, day: dt.date, params: Params) -> list[Alert]:
    status = p.status(day)
    if status in ("terminated", "rejected", "completed", "started", "fast", "withdrawn", None):
        return []
    out = []
    recipients = tuple(dict.fromkeys(c for c in (p.sponsor_leader, p.attracting_unit) if c))
    signed = p.signed(day)
    checks = [
        ("stalled_signed", "signed_not_started", signed[0] if signed else None),
        ("stalled_land", "waiting_for_land", p.waiting_for_land_since(day)),
        ("stalled_funds", "lacking_funds", p.lacking_funds_since(day)),
    ]
    for kind, name, since in checks:
        if since is None:
            continue
        rule = getattr(params.stalled, name)
        days = (day - since).days
        n = period(days, rule.after_days, rule.repeat_days)
        if n:
            out.append(
                Alert(
                    f"{kind}:{p.project_id}:{since}:{n}",
                    kind,
                    recipients,
                    p.project_id,
                    _project_data(p)
                    | {"project_id": p.project_id, "since": since.isoformat(), "days": days},
                )
            )
    return out


def signings_in(snapshot: Snapshot, start: dt.date, end: dt.date, min_amount: int) -> list[str]:
    """Projects whose first signing of at least `min_amount` yuan falls in [start, end]."""
    out = []
    for p in snapshot.projects.values():
        firsts = sorted(
            on
            for on, m, amount in p.milestones
            if m == "signed" and amount is not None and amount >= Decimal(min_amount)
        )
        if firsts and start <= firsts[0] <= end:
            out.append(p.project_id)
    return sorted(out)


def _signing_behind(
    snapshot: Snapshot,
    day: dt.date,
    params: Params,
    targets: Callable[[dt.date], dict[str, int] | None],
) -> list[Alert]:
    rule = params.signing_behind
    q, start, end = quarter_of(day)
    length = (end - start).days + 1
    from fractions import Fraction

    if Fraction((day - start).days, length) < rule.check_after:
        return []
    plan = targets(day)
    if not plan or f"Q{q}" not in plan:
        return []
    target = plan[f"Q{q}"]
    signed = signings_in(snapshot, start, day, rule.min_amount)
    expected = rule.expected_share * target
    if len(signed) >= expected:
        return []
    return [
        Alert(
            f"signing_behind:{day.year}Q{q}",
            "signing_behind",
            (CENTER,),
            None,
            {
                "year": day.year,
                "quarter": q,
                "signed": len(signed),
                "target": target,
                "expected": float(expected),
                "min_amount": rule.min_amount,
                "on": day.isoformat(),
                "quarter_end": end.isoformat(),
            },
        )
    ]
