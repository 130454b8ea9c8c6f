"""Review's handlers: each `project.*` event type maps to a small function (event, step) that
decides with cases.py and emits outbox rows; `handle` runs one, once, in the caller's
transaction (app.py: one transaction per run of messages).

The event comes parsed into its contract model at the edge (shared/contract/events.py), so a
handler reads typed fields, never a dict by key. Event types review does not act on
(`project.visit`, `project.rates`, `project.claim`, `project.duplicate`) have no handler: they
are still claimed, and move the business date on a replay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session

from shared import subjects
from shared.contract import (
    DecisionTaken,
    DocumentFiled,
    FundsArrived,
    InboundKind,
    LeadReported,
    MeetingScheduled,
    MilestoneReached,
    RecordCorrected,
    RecordWithdrawn,
)
from shared.outbox import pending_for
from shared.rules import Rules

from . import cases, store


@dataclass(slots=True)
class Step:
    """What a handler works with: the transaction, the rules in force, the event's filing day,
    and the outbox rows it emits (each keyed by the project it is about)."""

    session: Session
    rules: Rules
    event_id: str
    today: dt.date
    out: list[store.Outbox] = field(default_factory=list)

    def emit(self, event_type: str, project_id: str, body: str) -> None:
        self.out.append(
            store.Outbox(
                msg_id=f"{event_type}:{project_id}:{self.event_id}",
                source=self.event_id,
                subject=subjects.keyed(event_type, project_id),
                body=body,
            )
        )


def on_lead(event: LeadReported, step: Step) -> None:
    assert event.project_id is not None  # intake names the project of every lead
    cases.on_lead(step.session, event.project_id, event.data, step.emit, step.rules, step.today)


def on_document(event: DocumentFiled, step: Step) -> None:
    doc = event.data
    store.file_document(
        step.session,
        project_id=doc.project_id,
        type=doc.type.value,
        ref=doc.ref,
        event_id=step.event_id,
        filed_on=step.today,
    )
    cases.reevaluate(step.session, doc.project_id, step.emit, step.rules, today=step.today)


def on_funds(event: FundsArrived, step: Step) -> None:
    case = cases.funds_voucher(step.session, event.data, step.event_id, step.rules, step.today)
    cases.reevaluate(
        step.session, event.data.project_id, step.emit, step.rules, case=case, today=step.today
    )


def on_milestone(event: MilestoneReached, step: Step) -> None:
    cases.reevaluate(
        step.session,
        event.data.project_id,
        step.emit,
        step.rules,
        materials=False,
        today=step.today,
    )


def on_meeting(event: MeetingScheduled, step: Step) -> None:
    cases.on_meeting(step.session, event.data, event.project_id, step.emit, step.rules, step.today)


def on_decision(event: DecisionTaken, step: Step) -> None:
    cases.on_decision(step.session, event, step.emit, step.rules, step.today)


def on_amendment(event: RecordCorrected | RecordWithdrawn, step: Step) -> None:
    cases.on_amendment(step.session, event, step.emit, step.rules, step.today)


Handler = Callable[[Any, Step], None]

HANDLERS: dict[str, Handler] = {
    subjects.canonical(InboundKind.lead): on_lead,
    subjects.canonical(InboundKind.document): on_document,
    subjects.canonical(InboundKind.funds): on_funds,
    subjects.canonical(InboundKind.milestone): on_milestone,
    subjects.canonical(InboundKind.meeting): on_meeting,
    subjects.canonical(InboundKind.decision): on_decision,
    subjects.canonical(InboundKind.correction): on_amendment,
    subjects.canonical(InboundKind.withdrawal): on_amendment,
}

# The business date each event type states: on a replay (REVIEW_CLOCK=business) the filing
# date is the latest one seen, since events arrive in date order (a unit's own `issued_on`
# never counts: it could be back-dated).
BUSINESS_DAY = {
    subjects.canonical(InboundKind.lead): "reported_on",
    subjects.canonical(InboundKind.milestone): "on",
    subjects.canonical(InboundKind.funds): "arrived_on",
    subjects.canonical(InboundKind.visit): "on",
    subjects.canonical(InboundKind.rates): "on",
}
_DOCUMENT = subjects.canonical(InboundKind.document)


def handle(session: Session, event_type: str, event: BaseModel, rules: Rules) -> list[store.Outbox]:
    """Apply `event` once: a redelivered event only returns what is still unpublished."""
    event_id = (
        getattr(event, "event_id", None) or f"{event_type}:{getattr(event, 'project_id', None)}"
    )
    # Applied before, or by a replica that claimed it first (this one waited for it).
    if not store.INBOX.claim(session, event_id, subject=event_type):
        return pending_for(session, store.Outbox, event_id)  # type: ignore[return-value]
    unit = getattr(event, "unit", None) or None
    if cases.CLOCK == "business" and event_type in BUSINESS_DAY:
        day = getattr(getattr(event, "data", None), BUSINESS_DAY[event_type], None)
        if day:
            store.advance_business_date(session, day, unit)
    step = Step(session, rules, event_id, cases.filing_day(session, event, event_type == _DOCUMENT))
    handler = HANDLERS.get(event_type)
    if handler is not None:
        handler(event, step)
    session.add_all(step.out)
    return step.out
