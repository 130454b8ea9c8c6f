"""Applying one consumed event to notify's facts, and reading the facts back as a Snapshot.

Runs inside the consumer's transaction: the facts, the message id and the notifications the
event causes are committed together (app.py). Every write is keyed by the fact's own
natural key, so applying an event twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlmodel import Session, select

from shared.messaging import Retry

from . import store
from .model import Credit, FundsRecord, ProjectCard, ProjectView, Snapshot

BUSINESS_DATE = "business_date"


class ProjectNotYetKnown(Retry):
    """A review/score event overtook its project's lead on another stream: retry it shortly."""


def _day(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


Facts = Callable[[Session, dict[str, Any]], "dt.date | None"]


def apply(session: Session, subject: str, event: dict[str, Any]) -> None:
    """Record what `event` tells; raise ProjectNotYetKnown if it needs a project not seen yet."""
    record = FACTS.get(subject)
    if record is None and subject.startswith("review."):
        record = _about_a_known_project  # every review event is about a project notify knows
    try:
        business_day = record(session, event) if record is not None else None
    except ProjectNotYetKnown:
        pid = event.get("project_id")
        raise ProjectNotYetKnown(f"{subject} for {pid} before its project.lead") from None
    if business_day is not None:
        store.advance_date(session, BUSINESS_DATE, business_day)


def _lead(session: Session, event: dict[str, Any]) -> dt.date | None:
    data, pid = event.get("data") or {}, event.get("project_id")
    if store.kept(session, store.Project, pid) is None:
        store.keep(
            session,
            store.Project(
                project_id=pid,
                title=data["title"],
                attracting_unit=data["attracting_unit"],
                landing_area=data["landing_area"],
                kind=data["kind"],
                planned_investment=str(data["planned_investment"]),
                reported_on=_day(data["reported_on"]),
            ),
            pid,
        )
    return _day(data["reported_on"])


def _meeting(session: Session, event: dict[str, Any]) -> None:
    data = event.get("data") or {}
    if session.get(store.Meeting, data["meeting_id"]) is None:
        session.add(store.Meeting(meeting_id=data["meeting_id"], on=_day(data["on"])))
        session.flush()  # one copy per agenda project: the next finds it


def _milestone(session: Session, event: dict[str, Any]) -> dt.date | None:
    data = event.get("data") or {}
    store.insert_ignore(
        session,
        store.MilestoneFact,
        [
            {
                "project_id": event.get("project_id"),
                "milestone": data["milestone"],
                "on": _day(data["on"]),
                "amount": str(data["amount"]) if data.get("amount") else None,
            }
        ],
        ["project_id", "milestone", "on"],
    )
    return _day(data["on"])


def _visit(session: Session, event: dict[str, Any]) -> dt.date | None:
    data, pid = event.get("data") or {}, event.get("project_id")
    store.insert_ignore(
        session,
        store.VisitFact,
        [{"project_id": pid, "leader": data["leader"], "on": _day(data["on"])}],
        ["project_id", "leader", "on"],
    )
    return _day(data["on"])


def _funds(session: Session, event: dict[str, Any]) -> dt.date | None:
    data = event.get("data") or {}
    store.insert_ignore(
        session,
        store.FundsFact,
        [
            {
                "project_id": event.get("project_id"),
                "funds_id": data["funds_id"],
                "amount": str(data["amount"]),
                "currency": data["currency"],
                "arrived_on": _day(data["arrived_on"]),
            }
        ],
        ["project_id", "funds_id"],
    )
    return _day(data["arrived_on"])


def _rates(session: Session, event: dict[str, Any]) -> dt.date | None:
    data = event.get("data") or {}
    on = _day(data["on"])
    store.insert_ignore(
        session,
        store.RateFact,
        [{"on": on, "currency": c, "rate": str(r)} for c, r in data["rates"].items()],
        ["on", "currency"],
    )
    return on


def _document(session: Session, event: dict[str, Any]) -> None:
    data = event.get("data") or {}
    store.insert_ignore(
        session,
        store.DocumentFact,
        [{"project_id": event.get("project_id"), "type": data["type"]}],
        ["project_id", "type"],
    )


def _intake_decision(session: Session, event: dict[str, Any]) -> None:
    _decision(session, event.get("data") or {}, require=False)


def _withdrawal(session: Session, event: dict[str, Any]) -> None:
    if (event.get("data") or {})["target"]["kind"] != "lead":
        return
    project = store.kept(session, store.Project, event.get("project_id"))
    if project is not None:  # 撤回: no more reminders for it
        project.outcome = "withdrawn"
        session.add(project)


def _known_project(session: Session, event: dict[str, Any]) -> store.Project:
    pid = event.get("project_id")
    project = store.kept(session, store.Project, pid)
    if project is None:
        raise ProjectNotYetKnown(pid)  # `apply` says which event
    return project  # type: ignore[no-any-return]


def _about_a_known_project(session: Session, event: dict[str, Any]) -> None:
    _known_project(session, event)


def _screened(session: Session, event: dict[str, Any]) -> None:
    project = _known_project(session, event)
    project.outcome = event["outcome"]
    project.track = event.get("track")
    project.reasons = json.dumps(event.get("reasons", []))
    session.add(project)


def _materials(session: Session, event: dict[str, Any]) -> None:
    _known_project(session, event)
    pid = event.get("project_id")
    row = session.get(store.MaterialsFact, pid) or store.MaterialsFact(
        project_id=pid, complete=True
    )
    row.complete = bool(event["complete"])
    row.missing = json.dumps(event.get("missing_materials", []))
    row.deadline = _day(event.get("deadline"))
    session.add(row)


def _decided(session: Session, event: dict[str, Any]) -> None:
    _known_project(session, event)
    _decision(
        session,
        {
            "project_id": event.get("project_id"),
            "meeting_id": event["meeting_id"],
            "decision": event["decision"],
            "sponsor_leader": event.get("sponsor_leader"),
            "responsible_leader": event.get("responsible_leader"),
            "hq": {
                "commander": event.get("hq_commander"),
                "members": event.get("hq_members", []),
            },
        },
        require=True,
    )


def _credited(session: Session, event: dict[str, Any]) -> None:
    _known_project(session, event)
    store.insert_ignore(
        session,
        store.CreditFact,
        [
            {
                "project_id": event.get("project_id"),
                "funds_id": event["funds_id"],
                "year": int(event["year"]),
                "quarter": int(event["quarter"]),
                "points": str(event["points"]),
                "amount_rmb": str(event["amount_rmb"]),
                "credited_to": json.dumps(event.get("credited_to", [])),
            }
        ],
        ["project_id", "funds_id"],
    )


# Each event type → the facts it records (and the business day it states, if any). Other
# types record nothing; any review event needs its project (`apply`).
FACTS: dict[str, Facts] = {
    "project.lead": _lead,
    "project.meeting": _meeting,
    "project.milestone": _milestone,
    "project.visit": _visit,
    "project.funds": _funds,
    "project.rates": _rates,
    "project.document": _document,
    "project.decision": _intake_decision,
    "project.withdrawal": _withdrawal,
    "review.screened": _screened,
    "review.materials": _materials,
    "review.decided": _decided,
    "score.credited": _credited,
}


def _decision(session: Session, data: dict[str, Any], *, require: bool) -> None:
    """集体决策, from intake's project.decision (until review speaks) or review's
    review.decided, which governs: review refuses a decision it does not take, and a later
    meeting's decision (re-review, 复议) replaces the earlier one."""
    project = store.kept(session, store.Project, data["project_id"])
    if project is None:
        if require:
            raise ProjectNotYetKnown(f"decision for {data['project_id']} before its project.lead")
        return
    if project.decision is not None and not require:
        return
    meeting = session.get(store.Meeting, data["meeting_id"])
    project.decision = data["decision"]
    project.meeting_id = data["meeting_id"]
    project.decided_on = meeting.on if meeting else None
    if data["decision"] == "approved":
        project.sponsor_leader = data.get("sponsor_leader")
        project.responsible_leader = data.get("responsible_leader")
        project.hq = json.dumps(data.get("hq") or {})
    else:  # a rejection ends the track: nobody sponsors it any more
        project.sponsor_leader = None
    session.add(project)


def project_card(session: Session, project_id: str | None) -> ProjectCard | None:
    """The project's own row (what event triggers read): one primary-key lookup, answered
    from the rows the transaction holds since `apply` has just read the same row."""
    if not project_id:
        return None
    session.flush()  # a lead applied in this transaction is still pending
    row = store.kept(session, store.Project, project_id)
    if row is None:
        return None
    return ProjectCard(
        project_id=row.project_id,
        title=row.title,
        attracting_unit=row.attracting_unit,
        landing_area=row.landing_area,
        kind=row.kind,
        planned_investment=Decimal(row.planned_investment),
        sponsor_leader=row.sponsor_leader,
    )


def project_view(session: Session, project_id: str | None) -> ProjectView | None:
    if not project_id:
        return None
    snap = load_snapshot(session, [project_id])
    return snap.projects.get(project_id)


def load_snapshot(session: Session, project_ids: list[str] | None = None) -> Snapshot:
    """Every fact (or those of `project_ids`) as plain values."""

    def q(table: Any) -> Any:
        query = select(table)
        if project_ids is not None:
            query = query.where(table.project_id.in_(project_ids))
        return session.exec(query).all()

    snap = Snapshot()
    counting: dict[str, set[str]] = {}  # project → the leaders whose visits count
    for row in q(store.Project):
        commander = (json.loads(row.hq or "{}") or {}).get("commander")
        counting[row.project_id] = {c for c in (row.sponsor_leader, commander) if c}
        snap.projects[row.project_id] = ProjectView(
            project_id=row.project_id,
            title=row.title,
            attracting_unit=row.attracting_unit,
            landing_area=row.landing_area,
            kind=row.kind,
            planned_investment=Decimal(row.planned_investment),
            reported_on=row.reported_on,
            outcome=row.outcome,
            track=row.track,
            reasons=json.loads(row.reasons),
            decision=row.decision,
            decided_on=row.decided_on,
            sponsor_leader=row.sponsor_leader,
        )
    for m in q(store.MilestoneFact):
        if m.project_id in snap.projects:
            snap.projects[m.project_id].milestones.append(
                (m.on, m.milestone, Decimal(m.amount) if m.amount else None)
            )
    # 包保: only the sponsor leader's (or the HQ commander's) own visit counts as the week's
    # site visit (实施方案·三（三）); another leader's is kept apart.
    for v in q(store.VisitFact):
        if v.project_id in snap.projects:
            if v.leader in counting.get(v.project_id, set()):
                snap.projects[v.project_id].visits.append(v.on)
            else:
                snap.projects[v.project_id].other_visits.append((v.on, v.leader))
    for f in q(store.FundsFact):
        if f.project_id in snap.projects:
            snap.projects[f.project_id].funds.append(
                FundsRecord(f.funds_id, Decimal(f.amount), f.currency, f.arrived_on)
            )
    for d in q(store.DocumentFact):
        if d.project_id in snap.projects:
            snap.projects[d.project_id].documents.add(d.type)
    for mat in q(store.MaterialsFact):
        if mat.project_id in snap.projects:
            p = snap.projects[mat.project_id]
            p.materials_complete = mat.complete
            p.materials_missing = json.loads(mat.missing)
            p.materials_deadline = mat.deadline
    for c in q(store.CreditFact):
        snap.credits.append(
            Credit(
                c.project_id,
                c.funds_id,
                c.year,
                c.quarter,
                Decimal(c.points),
                Decimal(c.amount_rmb),
                tuple(json.loads(c.credited_to)),
            )
        )
    for p in snap.projects.values():
        p.milestones.sort(key=lambda m: (m[0], m[1]))
        p.visits.sort()
        p.other_visits.sort()
    if project_ids is None:
        for r in session.exec(select(store.RateFact)).all():
            snap.rates[(r.on, r.currency)] = Decimal(r.rate)
    return snap


def business_date(session: Session) -> dt.date | None:
    value = store.get_state(session, BUSINESS_DATE)
    return dt.date.fromisoformat(value) if value else None
