"""Applying one `project.*` event to its review case: what changes, what to announce.

Runs inside one transaction (app.py). Decisions come from `decide.py` (pure, rules as data);
this module only loads and stores the case and turns changed decisions into events.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlmodel import Session

from shared import subjects
from shared.contract import Decided, Lead, Outcome, Track
from shared.outbox import pending_for
from shared.rules import Rules

from . import decide, store


def apply(
    session: Session, subject: str, event: dict[str, Any], rules: Rules
) -> list[store.Outbox]:
    """Apply `event` once: a redelivered event only returns what is still unpublished."""
    event_id = event.get("event_id") or f"{subject}:{event.get('project_id')}"
    if session.get(store.Processed, event_id) is not None:
        return pending_for(session, store.Outbox, event_id)
    session.add(store.Processed(event_id=event_id, subject=subject))
    kind = subject.split(".", 1)[1]
    data = event.get("data", {})
    out: list[store.Outbox] = []
    emit = _emitter(out, event_id)

    if kind == "lead":
        _on_lead(session, event, emit, rules)
    elif kind == "document":
        session.add(
            store.FiledDocument(
                project_id=data["project_id"], type=data["type"], ref=data["ref"], event_id=event_id
            )
        )
        _reevaluate(session, data["project_id"], emit, rules)
    elif kind in ("milestone", "funds"):
        _reevaluate(session, data["project_id"], emit, rules, materials=False)
    elif kind == "meeting":
        for project_id in data["agenda"]:
            case = session.get(store.Case, project_id)
            if case is None:
                continue
            case.meeting_id, case.meeting_on = data["meeting_id"], dt.date.fromisoformat(data["on"])
            session.add(case)
            _reevaluate(session, project_id, emit, rules, recognition=False)
    elif kind == "decision":
        _on_decision(session, data, emit, rules)
    session.add_all(out)
    return out


def _emitter(out: list[store.Outbox], event_id: str):  # type: ignore[no-untyped-def]
    def emit(subject: str, project_id: str, body: str) -> None:
        out.append(
            store.Outbox(
                msg_id=f"{subject}:{project_id}:{event_id}",
                source=event_id,
                subject=subject,
                body=body,
            )
        )

    return emit


def _on_lead(session: Session, event: dict[str, Any], emit, rules: Rules) -> None:  # type: ignore[no-untyped-def]
    lead = Lead.model_validate(event["data"])
    project_id = event["project_id"]
    screening = decide.screen(lead, rules=rules)
    case = store.Case(
        project_id=project_id,
        lead=lead.model_dump_json(),
        attracting_unit=lead.attracting_unit,
        reported_on=lead.reported_on,
        outcome=screening.outcome.value,
        track=screening.track.value if screening.track else None,
    )
    session.add(case)
    emit(subjects.REVIEW_SCREENED, project_id, screening.to_event(project_id).model_dump_json())
    _reevaluate(session, project_id, emit, rules, case=case)


def _on_decision(session: Session, data: dict[str, Any], emit, rules: Rules) -> None:  # type: ignore[no-untyped-def]
    case = session.get(store.Case, data["project_id"])
    if case is None:
        return
    case.decision = data["decision"]
    if data["decision"] == "approved":
        case.sponsor_leader = data.get("sponsor_leader")
    session.add(case)
    hq = data.get("hq") or {}
    decided = Decided(
        project_id=case.project_id,
        meeting_id=data["meeting_id"],
        decision=data["decision"],
        minutes_ref=data["minutes_ref"],
        sponsor_leader=data.get("sponsor_leader"),
        responsible_leader=data.get("responsible_leader"),
        hq_commander=hq.get("commander"),
        hq_members=list(hq.get("members", [])),
    )
    emit(subjects.REVIEW_DECIDED, case.project_id, decided.model_dump_json())
    _reevaluate(session, case.project_id, emit, rules, materials=False, case=case)


def _reevaluate(  # type: ignore[no-untyped-def]
    session: Session,
    project_id: str,
    emit,
    rules: Rules,
    *,
    materials: bool = True,
    recognition: bool = True,
    case: store.Case | None = None,
) -> None:
    """Re-run the decisions the event may change; announce only what actually changed."""
    case = case or session.get(store.Case, project_id)
    if case is None:
        return  # intake only emits follow-ups for projects it announced; nothing to review
    session.flush()
    lead = Lead.model_validate_json(case.lead)
    filed = store.documents_of(session, project_id)
    if materials and case.outcome == Outcome.accepted.value and case.track == Track.major.value:
        result = decide.materials(lead, filed, case.meeting_on, rules=rules)
        state = json.dumps(
            [result.complete, sorted(result.missing_materials), str(result.deadline)]
        )
        if state != case.materials_state:
            case.materials_state = state
            emit(
                subjects.REVIEW_MATERIALS, project_id, result.to_event(project_id).model_dump_json()
            )
    if recognition:
        rec = decide.recognize(lead, filed, rules=rules, sponsor_leader=case.sponsor_leader)
        state = json.dumps(
            [rec.recognized, sorted(rec.recognition_blockers), sorted(rec.missing_proofs)]
        )
        if state != case.recognition_state:
            case.recognition_state = state
            case.recognized = rec.recognized
            emit(
                subjects.REVIEW_RECOGNITION, project_id, rec.to_event(project_id).model_dump_json()
            )
    session.add(case)
