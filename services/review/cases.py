"""Applying one `project.*` event to its review case: what changes, what to announce.

Runs inside one transaction (app.py). Decisions come from `decide.py` (pure, rules as data);
this module only loads and stores the case and turns changed decisions into events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session

from shared import subjects
from shared.contract import (
    CommitteeDecision,
    Decided,
    DecisionTaken,
    FieldError,
    Funds,
    Lead,
    Meeting,
    Outcome,
    RecordCorrected,
    RecordKind,
    RecordWithdrawn,
    Refused,
    Track,
)
from shared.contract.events import EVENT_MODELS
from shared.contract.inbound import SHANGHAI, received_day
from shared.rules import AnyRuleset, Rules, RulesetRegistry
from shared.rules.facts import document_types, project_dict

from . import decide, store

CLOCK = os.environ.get("REVIEW_CLOCK", "wall")  # business: replays of a past year (the demo)

Emit = Callable[[str, str, str], None]  # (event type, project id, body)


def filing_day(session: Session, event: BaseModel, document: bool = False) -> dt.date:
    """The filing date (报送日期) of what `event` reports: intake's receipt date in
    Asia/Shanghai (the contract's definition); on a replay (REVIEW_CLOCK=business) the
    business date, since the receipt time of a replayed year is today.

    A replayed document is filed on its own date (`issued_on`) when it has one, else on the
    latest day its own unit's events reached: units' inboxes are read side by side, so the
    latest day of every unit could be another unit's, months ahead, and make an on-time
    document late (the demo had 84 of 92 committee decisions refused as 材料逾期 for that)."""
    if CLOCK == "business":
        issued = getattr(getattr(event, "data", None), "issued_on", None)
        if issued and document:
            return issued  # type: ignore[no-any-return]
        unit = getattr(event, "unit", None)
        day = (store.business_date(session, unit) if unit else None) or store.business_date(session)
        if day is not None:
            return day
    at: dt.datetime | None = getattr(event, "received_at", None)
    return received_day(None) if at is None else _shanghai(at)


def _shanghai(at: dt.datetime) -> dt.date:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(SHANGHAI).date()


def apply(
    session: Session, subject: str, event: dict[str, Any], rules: Rules
) -> list[store.Outbox]:
    """`event` as a dict (in-process replays and tests): parsed into its contract model as
    the consumer parses a message, then handled (handlers.py). The transport fields a caller
    may leave out read as on a message without them: no unit, received now."""
    from . import handlers

    model = EVENT_MODELS.get(subject)
    if model is None:
        return []
    defaults = {"unit": "", "idempotency_key": "", "received_at": dt.datetime.now(dt.UTC)}
    defaults = {k: v for k, v in defaults.items() if k in model.model_fields}  # its own only
    return handlers.handle(session, subject, model.model_validate({**defaults, **event}), rules)


def _param(rules: Rules, name: str, case: store.Case, default: Any) -> Any:
    """A review parameter in force on the project's day; `default` for rulesets without it."""
    try:
        return rules.parameter(decide.RULESET, name, case.reported_on)
    except (KeyError, LookupError):
        return default


def on_lead(
    session: Session, project_id: str, lead: Lead, emit: Emit, rules: Rules, today: dt.date
) -> None:
    screening = decide.screen(lead, rules=rules)
    case = store.Case(
        project_id=project_id,
        lead=lead.model_dump_json(),
        attracting_unit=lead.attracting_unit,
        reported_on=lead.reported_on,
        outcome=screening.outcome.value,
        track=screening.track.value if screening.track else None,
    )
    store.add_case(session, case)
    emit(subjects.REVIEW_SCREENED, project_id, screening.to_event(project_id).model_dump_json())
    reevaluate(session, project_id, emit, rules, case=case, today=today)


def funds_voucher(
    session: Session, data: Funds | dict[str, Any], event_id: str, rules: Rules, today: dt.date
) -> store.Case | None:
    """The voucher a funds record carries files the `funds_voucher` proof (资金到位凭证),
    unless the ruleset's `funds_voucher_from_funds_record` says a separate document is needed.
    Returns the project's case (None: review has not seen the project). `data`: the record,
    or a correction's `after` (intake's version of it, a dict)."""
    if isinstance(data, Funds):
        project_id, funds_id = data.project_id, data.funds_id
        v = data.voucher  # always there on the wire; a handler's caller may leave it out
        voucher = {"kind": v.kind.value, "ref": v.ref} if v is not None else {}
    else:
        project_id, funds_id, voucher = data["project_id"], data["funds_id"], data.get("voucher")
    case = store.case(session, project_id)
    voucher = voucher or {}
    if case is None or not voucher or not _param(rules, FUNDS_VOUCHER_PARAM, case, False):
        return case
    store.file_document(
        session,
        project_id=case.project_id,
        type="funds_voucher",
        ref=f"funds:{funds_id}:{voucher.get('kind')}:{voucher.get('ref')}"[:500],
        event_id=event_id,
        filed_on=today,
    )
    return case


FUNDS_VOUCHER_PARAM = "funds_voucher_from_funds_record"


def on_amendment(
    session: Session,
    event: RecordCorrected | RecordWithdrawn,
    emit: Emit,
    rules: Rules,
    today: dt.date,
) -> None:
    """更正 / 撤回: review decides again on the record as it stands now. A corrected lead is
    screened again (announced if the outcome or track changed); a withdrawn lead ends the
    case (not recognised: withdrawn); a withdrawn funds record no longer files its voucher."""
    target = event.data.target
    after = event.after if isinstance(event, RecordCorrected) else None
    case = store.case(session, target.project_id)
    if case is None:
        return
    if target.kind == RecordKind.lead:
        if after is None:  # withdrawn
            case.status = WITHDRAWN
        else:
            lead = Lead.model_validate(after)
            case.lead = lead.model_dump_json()
            case.reported_on = lead.reported_on  # picks the ruleset version in force
            screening = decide.screen(lead, rules=rules)
            outcome = screening.outcome.value
            track = screening.track.value if screening.track else None
            if (outcome, track) != (case.outcome, case.track):
                case.outcome, case.track = outcome, track
                emit(
                    subjects.REVIEW_SCREENED,
                    case.project_id,
                    screening.to_event(case.project_id).model_dump_json(),
                )
        session.add(case)
    elif target.kind == RecordKind.funds:
        prefix = f"funds:{target.funds_id}:"
        for doc in store.vouchers_of(session, case.project_id):
            if doc.ref.startswith(prefix):
                session.delete(doc)
        if after is not None:
            funds_voucher(session, after, event.event_id, rules, today)
    reevaluate(session, case.project_id, emit, rules, case=case, today=today)


def on_meeting(
    session: Session, data: Meeting, about: str | None, emit: Emit, rules: Rules, today: dt.date
) -> None:
    """`about`: the agenda project this copy of the meeting is for (intake sends one per
    project, in its partition); None for a meeting published before copies, about all."""
    on = data.on
    if session.get(store.Meeting, data.meeting_id) is None:
        session.add(
            store.Meeting(meeting_id=data.meeting_id, on=on, agenda=json.dumps(data.agenda))
        )
        session.flush()  # the next copy of this meeting in the same transaction finds it
    for project_id in [about] if about else data.agenda:
        case = store.case(session, project_id)
        if case is None:
            continue
        if case.meeting_on is not None and on < case.meeting_on:
            continue  # an older meeting announced late: the project is on a later one
        # A late project (材料逾期) moves here; a decided one is here for re-review (复议).
        case.meeting_id, case.meeting_on = data.meeting_id, on
        if case.status == LATE:
            case.status = None
        session.add(case)
        reevaluate(session, project_id, emit, rules, recognition=False, today=today)


LATE, APPROVED, REJECTED, WITHDRAWN = "late", "approved", "rejected", "withdrawn"
SHOULD_NAME = {
    "responsible_leader": "the responsible leader / 责任领导",
    "sponsor_leader": "the sponsor leader / 包保县级领导",
    "hq_commander": "the HQ commander, a county leader / 指挥部指挥长（县级领导）",
}


def _counted_materials(
    session: Session, case: store.Case, lead: Lead, meeting_on: dt.date, rules: Rules
) -> decide.Materials:
    """The committee materials as of the agenda deadline: documents filed after it do not
    count for this meeting."""
    deadline = decide.materials(lead, (), meeting_on, rules=rules).deadline
    filed = store.documents_of(session, case.project_id, filed_by=deadline)
    return decide.materials(lead, filed, meeting_on, rules=rules)


def on_decision(
    session: Session, event: DecisionTaken, emit: Emit, rules: Rules, today: dt.date
) -> None:
    """集体决策: taken, or refused with every reason (review.refused); a refusal changes nothing."""
    data = event.data
    case = store.case(session, data.project_id)
    if case is None:
        return
    pid, meeting_id = case.project_id, data.meeting_id
    decision = data.decision.value
    lead = Lead.model_validate_json(case.lead)
    problems: list[tuple[str, str]] = []
    meeting = session.get(store.Meeting, meeting_id)
    if meeting is None:
        problems.append(("meeting_id", f"unknown meeting {meeting_id!r} / 会议不存在"))
    elif pid not in json.loads(meeting.agenda):
        problems.append(
            ("project_id", f"not on the agenda of meeting {meeting_id} / 不在该次评审会议题中")
        )
    if session.get(store.Decision, (pid, meeting_id)) is not None:
        problems.append(
            (
                "meeting_id",
                f"meeting {meeting_id} already decided on this project; a second decision "
                "needs a new meeting (re-review) / 该次评审会已作出决定，复议须另行上会",
            )
        )
    if meeting is not None and case.decided_meeting_on and meeting.on < case.decided_meeting_on:
        problems.append(
            (
                "meeting_id",
                f"a later meeting ({case.decided_meeting_on}) already decided: the latest "
                "meeting governs / 以最近一次评审会决定为准",
            )
        )
    if case.outcome == Outcome.terminated.value:
        problems.append(("project_id", "terminated at screening / 已告知终止洽谈"))
    if meeting is not None and case.track == Track.major.value and not problems:
        counted = _counted_materials(session, case, lead, meeting.on, rules)
        if not counted.complete:
            problems.append(
                (
                    "project_id",
                    f"committee materials not filed by the agenda deadline {counted.deadline} "
                    f"(missing: {', '.join(counted.missing_materials)}): the project moves to "
                    "the next meeting / 材料逾期，顺延至下次评审会",
                )
            )
            _mark_late(case, counted, meeting_id, emit)
    if decision == APPROVED:
        problems.extend(_approval_problems(data, case, lead, rules))
    if problems:
        refused = Refused(
            project_id=pid,
            kind="decision",
            meeting_id=meeting_id,
            unit=event.unit,
            event_id=event.event_id,
            errors=[FieldError(field=f, problem=p) for f, p in problems],
        )
        emit(subjects.REVIEW_REFUSED, pid, refused.model_dump_json())
        session.add(case)
        return
    assert meeting is not None
    session.add(
        store.Decision(
            project_id=pid,
            meeting_id=meeting_id,
            decision=decision,
            event_id=event.event_id,
        )
    )
    case.decision = case.status = decision
    case.decided_meeting_on = meeting.on
    # A rejection ends the track: no sponsor; an approval names one (re-review may change it).
    case.sponsor_leader = data.sponsor_leader if decision == APPROVED else None
    session.add(case)
    decided = Decided(
        project_id=pid,
        meeting_id=meeting_id,
        decision=data.decision,
        minutes_ref=data.minutes_ref,
        sponsor_leader=data.sponsor_leader,
        responsible_leader=data.responsible_leader,
        hq_commander=data.hq.commander if data.hq else None,
        hq_members=list(data.hq.members) if data.hq else [],
    )
    emit(subjects.REVIEW_DECIDED, pid, decided.model_dump_json())
    reevaluate(session, pid, emit, rules, materials=False, case=case, today=today)


def _approval_problems(
    data: CommitteeDecision, case: store.Case, lead: Lead, rules: Rules
) -> list[tuple[str, str]]:
    """What an approval must name (the review ruleset's `approval_requires`)."""
    required = [str(r) for r in _param(rules, "approval_requires", case, [])]
    members = list(data.hq.members) if data.hq else []
    values = {
        "responsible_leader": data.responsible_leader,
        "sponsor_leader": data.sponsor_leader,
        "hq_commander": data.hq.commander if data.hq else None,
    }
    problems = []
    for need in required:
        if need in values and not values[need]:
            field = "hq.commander" if need == "hq_commander" else need
            problems.append((field, f"an approval must name {SHOULD_NAME[need]}"))
        elif need == "hq_includes_attracting_unit" and lead.attracting_unit not in members:
            problems.append(
                (
                    "hq.members",
                    f"must include the attracting unit {lead.attracting_unit} / "
                    "指挥部成员须含招商单位",
                )
            )
        elif need == "hq_includes_landing_area" and lead.landing_area not in members:
            problems.append(
                (
                    "hq.members",
                    f"must include the landing area {lead.landing_area} / 指挥部成员须含落地乡镇（园区）",
                )
            )
    return problems


def _mark_late(case: store.Case, counted: decide.Materials, meeting_id: str, emit: Emit) -> None:
    """材料逾期: announced once per missed meeting; the project waits for the next one."""
    if case.status == LATE and case.late_for == meeting_id:
        return
    case.status, case.late_for = LATE, meeting_id
    event = counted.to_event(case.project_id).model_copy(
        update={"late": True, "meeting_id": meeting_id}
    )
    case.materials_state = _materials_state(counted, late=True)
    emit(subjects.REVIEW_MATERIALS, case.project_id, event.model_dump_json())


def _materials_state(result: decide.Materials, *, late: bool) -> str:
    return json.dumps(
        [result.complete, sorted(result.missing_materials), str(result.deadline), late]
    )


def reevaluate(
    session: Session,
    project_id: str,
    emit: Emit,
    rules: Rules,
    *,
    materials: bool = True,
    recognition: bool = True,
    case: store.Case | None = None,
    today: dt.date | None = None,
) -> None:
    """Re-run the decisions the event may change; announce only what actually changed."""
    case = case or store.case(session, project_id)
    if case is None:
        return  # intake only emits follow-ups for projects it announced; nothing to review
    session.flush()
    filed = store.documents_of(session, project_id)
    parsed: list[Lead] = []

    def lead() -> Lead:
        if not parsed:
            parsed.append(Lead.model_validate_json(case.lead))
        return parsed[0]

    undecided = case.status not in (APPROVED, REJECTED, WITHDRAWN)
    if (
        materials
        and undecided
        and case.outcome == Outcome.accepted.value
        and case.track == Track.major.value
    ):
        result = decide.materials(lead(), filed, case.meeting_on, rules=rules)
        late = False
        if case.meeting_on is not None and result.deadline is not None:
            # Only what was filed by the agenda deadline counts for this meeting.
            result = _counted_materials(session, case, lead(), case.meeting_on, rules)
            late = not result.complete and today is not None and today > result.deadline
        if late:
            assert case.meeting_id is not None
            _mark_late(case, result, case.meeting_id, emit)
        else:
            state = _materials_state(result, late=False)
            if state != case.materials_state:
                case.materials_state = state
                event = result.to_event(project_id).model_copy(
                    update={"meeting_id": case.meeting_id}
                )
                emit(subjects.REVIEW_MATERIALS, project_id, event.model_dump_json())
    if recognition:
        rec, state = _recognize(case, filed, rules, lead)
        rec, state = _committee(rec, state, case)
        if state != case.recognition_state:
            case.recognition_state = state
            case.recognized = rec.recognized
            event = rec.to_event(project_id).model_copy(
                update={
                    "terminated": case.outcome == Outcome.terminated.value,
                    "committee_rejected": case.status == REJECTED,
                    "sponsor_leader": case.sponsor_leader,
                }
            )
            emit(subjects.REVIEW_RECOGNITION, project_id, event.model_dump_json())
    session.add(case)


COMMITTEE_REJECTED = "committee_rejected"
PROJECT_WITHDRAWN = "withdrawn"


def _committee(
    rec: decide.RecognitionResult, state: str, case: store.Case
) -> tuple[decide.RecognitionResult, str]:
    """A project the committee rejected (未通过集体决策) is never recognised: the committee's
    decision, not a rule, so it is laid over the rules' result (which is remembered as is)."""
    overlay = {REJECTED: COMMITTEE_REJECTED, WITHDRAWN: PROJECT_WITHDRAWN}.get(case.status or "")
    if overlay is not None:  # a withdrawn lead (撤回) counts for nothing either
        rec = decide.RecognitionResult(
            recognized=False,
            recognition_blockers=[overlay, *rec.recognition_blockers],
            missing_proofs=rec.missing_proofs,
            explanation=rec.explanation.model_copy(update={"deciding_rule": overlay}),
        )
        state = json.dumps([False, sorted(rec.recognition_blockers), sorted(rec.missing_proofs)])
    # The sponsor leader is announced with the recognition, so a change is announced too.
    return rec, json.dumps([json.loads(state), case.sponsor_leader])


# --- remembered recognitions ---------------------------------------------------------------------
#
# Most project events (funds, milestones: many per project) change nothing recognition reads,
# yet each must re-run it: a ruleset published since the last event may decide differently.
# Recognition is a pure function of the lead, the document types it sees (`document_types`:
# the lead's own, then the filed ones, each once, first-seen order), the sponsor leader and
# the ruleset version in force on the lead's day, so a result is remembered with exactly those
# inputs and reused only while all of them are the same again. Keyed on the filed rows
# themselves no funds record found its result: each one's voucher files another
# `funds_voucher`, a type the rules already see (issue 12, docs/profiles/review.md). Nothing is skipped on the
# event's kind, and the result is still compared with the stored state (another replica, a
# lost update). Per process: a restart costs one evaluation per project.


@dataclass(frozen=True)
class _Recognised:
    lead: str  # the Lead JSON as stored: the project as the rules see it
    own: tuple[str, ...]  # the types of the documents filed with the lead
    seen: tuple[str, ...]  # every type the rules saw, as `document_types` gave them
    sponsor_leader: str | None
    rules: RulesetRegistry
    on: dt.date  # the lead's reported_on: picks the version
    # Compared by identity: every load or publication makes a new object, so a version
    # republished (even under the same id and version) never matches an older result.
    ruleset: AnyRuleset
    result: decide.RecognitionResult
    state: str

    def still_holds(
        self, lead: str, filed: list[str], sponsor_leader: str | None, rules: Rules
    ) -> bool:
        if not (
            self.rules is rules
            and self.lead == lead
            and self.sponsor_leader == sponsor_leader
            and _seen(self.own, filed) == self.seen
        ):
            return False
        try:
            return rules.in_force(decide.RULESET, self.on) is self.ruleset
        except LookupError:  # withdrawn since: evaluating says so
            return False


def _seen(own: tuple[str, ...], filed: list[str]) -> tuple[str, ...]:
    """The types the rules see of a lead with `own` documents and `filed` ones after it."""
    return tuple(dict.fromkeys((*own, *filed)))


_REMEMBERED = 4096  # projects; a county handles a few hundred a year
_remembered: OrderedDict[str, _Recognised] = OrderedDict()
_remembered_lock = threading.Lock()  # transactions run on a thread pool


def _recognize(
    case: store.Case, filed: list[str], rules: Rules, lead: Callable[[], Lead]
) -> tuple[decide.RecognitionResult, str]:
    """decide.recognize on the case, and the state stored to tell a change."""
    key = case.project_id
    with _remembered_lock:
        known = _remembered.get(key)
    if known is not None and known.still_holds(case.lead, filed, case.sponsor_leader, rules):
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
        own = tuple(document_types(project_dict(project)))
        entry = _Recognised(
            case.lead,
            own,
            _seen(own, filed),
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
