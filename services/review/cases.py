"""Applying one `project.*` event to its review case: what changes, what to announce.

Runs inside one transaction (app.py). Decisions come from `decide.py` (pure, rules as data);
this module only loads and stores the case and turns changed decisions into events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from shared import subjects
from shared.contract import Decided, Lead, Outcome, Track
from shared.outbox import pending_for
from shared.rules import AnyRuleset, Rules, RulesetRegistry

from . import decide, store


def apply(
    session: Session, subject: str, event: dict[str, Any], rules: Rules
) -> list[store.Outbox]:
    """Apply `event` once: a redelivered event only returns what is still unpublished."""
    event_id = event.get("event_id") or f"{subject}:{event.get('project_id')}"
    if store.processed(session, event_id):
        return pending_for(session, store.Outbox, event_id)
    store.mark_processed(session, event_id, subject)
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
    filed = store.documents_of(session, project_id)
    parsed: list[Lead] = []

    def lead() -> Lead:
        if not parsed:
            parsed.append(Lead.model_validate_json(case.lead))
        return parsed[0]

    if materials and case.outcome == Outcome.accepted.value and case.track == Track.major.value:
        result = decide.materials(lead(), filed, case.meeting_on, rules=rules)
        state = json.dumps(
            [result.complete, sorted(result.missing_materials), str(result.deadline)]
        )
        if state != case.materials_state:
            case.materials_state = state
            emit(
                subjects.REVIEW_MATERIALS, project_id, result.to_event(project_id).model_dump_json()
            )
    if recognition:
        rec, state = _recognize(case, filed, rules, lead)
        if state != case.recognition_state:
            case.recognition_state = state
            case.recognized = rec.recognized
            emit(
                subjects.REVIEW_RECOGNITION, project_id, rec.to_event(project_id).model_dump_json()
            )
    session.add(case)


# --- remembered recognitions ---------------------------------------------------------------------
#
# Most project events (funds, milestones: many per project) change nothing recognition reads,
# yet each must re-run it: a ruleset published since the last event may decide differently.
# Recognition is a pure function of the lead, the filed document types, the sponsor leader and
# the ruleset version in force on the lead's day, so a result is remembered with exactly those
# inputs and reused only while all of them are the same again. Nothing is skipped on the
# event's kind, and the result is still compared with the stored state (another replica, a
# lost update). Per process: a restart costs one evaluation per project.


@dataclass(frozen=True)
class _Recognised:
    lead: str  # the Lead JSON as stored: the project as the rules see it
    filed: tuple[str, ...]
    sponsor_leader: str | None
    rules: RulesetRegistry
    on: dt.date  # the lead's reported_on: picks the version
    # Compared by identity: every load or publication makes a new object, so a version
    # republished (even under the same id and version) never matches an older result.
    ruleset: AnyRuleset
    result: decide.RecognitionResult
    state: str

    def still_holds(
        self, lead: str, filed: tuple[str, ...], sponsor_leader: str | None, rules: Rules
    ) -> bool:
        if not (
            self.rules is rules
            and self.lead == lead
            and self.filed == filed
            and self.sponsor_leader == sponsor_leader
        ):
            return False
        try:
            return rules.in_force(decide.RULESET, self.on) is self.ruleset
        except LookupError:  # withdrawn since: evaluating says so
            return False


_REMEMBERED = 4096  # projects; a county handles a few hundred a year
_remembered: OrderedDict[str, _Recognised] = OrderedDict()
_remembered_lock = threading.Lock()  # transactions run on a thread pool


def _recognize(
    case: store.Case, filed: list[str], rules: Rules, lead: Callable[[], Lead]
) -> tuple[decide.RecognitionResult, str]:
    """decide.recognize on the case, and the state stored to tell a change."""
    key, documents = case.project_id, tuple(filed)
    with _remembered_lock:
        known = _remembered.get(key)
    if known is not None and known.still_holds(case.lead, documents, case.sponsor_leader, rules):
        with _remembered_lock:
            if key in _remembered:
                _remembered.move_to_end(key)
        return known.result, known.state
    project = lead()
    ruleset = None
    # Only the registry tells versions apart by identity (a view's overrides may change).
    if isinstance(rules, RulesetRegistry) and isinstance(project.reported_on, dt.date):
        # Before evaluating: a publication in between makes the entry stale, never wrong.
        # None in force: not remembered, and evaluating raises as before.
        with contextlib.suppress(LookupError):
            ruleset = rules.in_force(decide.RULESET, project.reported_on)
    rec = decide.recognize(project, filed, rules=rules, sponsor_leader=case.sponsor_leader)
    state = json.dumps(
        [rec.recognized, sorted(rec.recognition_blockers), sorted(rec.missing_proofs)]
    )
    if ruleset is not None:
        assert isinstance(rules, RulesetRegistry)
        entry = _Recognised(
            case.lead,
            documents,
            case.sponsor_leader,
            rules,
            project.reported_on,
            ruleset,
            rec,
            state,
        )
        with _remembered_lock:
            _remembered[key] = entry
            _remembered.move_to_end(key)
            while len(_remembered) > _REMEMBERED:
                _remembered.popitem(last=False)
    return rec, state
