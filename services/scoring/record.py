"""Applying one inbound event to scoring's tables, inside one transaction (see app.py).

Every event stores its fact first, then settles the funds records the fact can move:

| event | fact stored | records settled |
|---|---|---|
| `project.lead` | the project's facts | the project's held records |
| `project.decision` (approved) | sponsor leader | the project's credited records, rescored |
| `project.milestone` | the signing (targets), registered/started/... (rates, new starts) | — |
| `project.funds` | the record | that record |
| `project.rates` | the day's rates | records held on that day in those currencies |
| `review.recognition` | recognised or not | all the project's records |
| `project.correction` (更正) | the record as corrected | the record (a lead: all of its records), rescored |
| `project.withdrawal` (撤回) | the record withdrawn | the record (a lead: all of its records), reversed |

A correction or withdrawal carries intake's version of the record; scoring keeps the latest
(`scoring_record_version`), so one that overtakes the record it amends is applied when the
record arrives, and an older one arriving late changes nothing.

So the outcome does not depend on the order events arrive in (a recognition may overtake
the lead it is about: they travel on different streams, and replicas take turns). The ledger
rows and the events announcing them are written together (the outbox); app.py publishes them
after commit. `Applied.outbox` lists them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session

from shared import outbox, subjects
from shared.contract import (
    DecisionTaken,
    Funds,
    FundsArrived,
    Held,
    Lead,
    LeadReported,
    Milestone,
    MilestoneReached,
    RatesPublished,
    Recognition,
    RecordCorrected,
    RecordKind,
    RecordWithdrawn,
    Reversed,
)
from shared.rules import Rules

from . import store
from .ledger import (
    NO_RULESET,
    WITHDRAWN,
    ActiveCredit,
    Credit,
    FundsState,
    Hold,
    ProjectState,
    Reverse,
    Step,
    settle,
)
from .store import from_fen, to_fen

log = logging.getLogger("investflow.scoring")

Event = (
    LeadReported
    | DecisionTaken
    | MilestoneReached
    | FundsArrived
    | RatesPublished
    | Recognition
    | RecordCorrected
    | RecordWithdrawn
)


@dataclass
class Applied:
    outcome: str  # applied | ignored | resent
    outbox: list[store.Outbox] = field(default_factory=list)


@dataclass
class _Context:
    session: Session
    inbox_key: str
    rules: Rules
    now: dt.datetime
    seq: int  # the message's stream sequence (0: not known): orders a project's decisions
    outbox: list[store.Outbox] = field(default_factory=list)

    def emit(self, msg_id: str, event_type: str, body: str, project_id: str) -> None:
        subject = subjects.keyed(event_type, project_id)  # the project's partition
        row = store.Outbox(msg_id=msg_id, source=self.inbox_key, subject=subject, body=body)
        store.add_outbox(self.session, row)
        self.outbox.append(row)


def apply(
    session: Session,
    event: Event,
    inbox_key: str,
    subject: str,
    stream_seq: int | None,
    rules: Rules,
    now: dt.datetime,
) -> Applied:
    """Apply `event` once: a key seen before returns the events still to publish for it."""
    claimed = store.INBOX.claim(
        session,
        inbox_key,
        subject=subject,
        stream_seq=stream_seq,
        outcome="applied",
        received_at=now,
    )
    if not claimed:  # applied before, or by a replica that claimed it first (waited for)
        pending = outbox.pending_for(session, store.Outbox, inbox_key)
        return Applied("resent", pending)  # type: ignore[arg-type]
    ctx = _Context(session, inbox_key, rules, now, stream_seq or 0)
    handler = HANDLERS.get(type(event))
    if handler is None:  # pragma: no cover - the caller parses only the kinds mapped
        raise TypeError(f"not a scoring input: {type(event).__name__}")
    applied = handler(ctx, event) is not False
    if not applied:
        store.set_inbox_outcome(session, inbox_key, "ignored")
    return Applied("applied" if applied else "ignored", ctx.outbox)


# --- facts --------------------------------------------------------------------------------------


def _lead(ctx: _Context, event: LeadReported) -> None:
    project_id = event.project_id or f"{event.unit}-{event.data.lead_id}"
    row = store.lock_project(ctx.session, project_id)
    if row.lead is not None:
        log.warning("scoring: %s: a second lead for the project, kept the first", project_id)
        return
    lead = event.data
    later = store.record_version(ctx.session, f"lead:{project_id}")
    if later is not None:  # a correction or withdrawal overtook the lead
        if later.payload is None:
            row.withdrawn = later.reason or WITHDRAWN
        else:
            lead = Lead.model_validate_json(later.payload)
    row.lead = lead.model_dump_json(exclude_none=True)
    row.attracting_unit = lead.attracting_unit
    row.landing_area = lead.landing_area
    ctx.session.add(row)
    ctx.session.flush()
    _settle_all(ctx, row, only_held=True)


def _decision(ctx: _Context, event: DecisionTaken) -> None:
    seq = ctx.seq
    decision = event.data
    if decision.decision != "approved" or decision.sponsor_leader is None:
        return
    row = store.lock_project(ctx.session, decision.project_id)
    if seq and seq < row.sponsor_seq:
        return  # an older decision overtaken by a newer one
    changed = row.sponsor_leader != decision.sponsor_leader
    row.sponsor_leader = decision.sponsor_leader
    row.sponsor_seq = seq
    ctx.session.add(row)
    ctx.session.flush()
    if changed:
        _settle_all(ctx, row, rescore=True)


# Milestones the rates and new starts count (实施方案·三（三）); the ruleset's
# `rate_definitions` picks among them, so every one is kept.
COUNTED_MILESTONES = frozenset({"filed", "registered", "land_assigned", "started", "completed"})


def _milestone(ctx: _Context, event: MilestoneReached) -> bool:
    seq = ctx.seq
    m = event.data
    later = store.record_version(ctx.session, f"milestone:{m.project_id}:{m.milestone.value}")
    if later is not None and later.payload is None:
        return False  # withdrawn before it got here
    if later is not None:
        m = Milestone.model_validate_json(later.payload)
    if m.milestone in COUNTED_MILESTONES:
        row = ctx.session.get(store.Milestone, (m.project_id, m.milestone.value))
        if row is None:
            ctx.session.add(
                store.Milestone(project_id=m.project_id, milestone=m.milestone, on=m.on)
            )
        elif m.on < row.on:  # the first time it was reached
            row.on = m.on
            ctx.session.add(row)
        return True
    if m.milestone != "signed" or m.amount is None:
        return False
    row = ctx.session.get(store.Signing, m.project_id)
    if row is None:
        row = store.Signing(
            project_id=m.project_id, signed_on=m.on, amount_fen=to_fen(m.amount), stream_seq=seq
        )
    elif not seq or seq >= row.stream_seq:  # a corrected signing replaces the earlier one
        row.signed_on, row.amount_fen, row.stream_seq = m.on, to_fen(m.amount), seq
    ctx.session.add(row)
    return True


def _funds(ctx: _Context, event: FundsArrived) -> None:
    f = event.data
    project = store.lock_project(ctx.session, f.project_id)
    if store.funds_record_exists(ctx.session, f.project_id, f.funds_id):
        return  # the same record again (another event id): it counts once
    later = store.record_version(ctx.session, f"funds:{f.project_id}:{f.funds_id}")
    if later is not None and later.payload is not None:  # a correction overtook it
        f = Funds.model_validate_json(later.payload)
    record = store.FundsRecord(
        project_id=f.project_id,
        funds_id=f.funds_id,
        amount_fen=to_fen(f.amount),
        currency=f.currency,
        arrived_on=f.arrived_on,
        form=f.form.value,
        payload=f.model_dump_json(exclude_none=True),
        event_id=event.event_id,
    )
    if later is not None and later.payload is None:  # withdrawn before it got here
        record.state, record.hold_reason = "withdrawn", f"{WITHDRAWN}: {later.reason}"
        store.add_funds_record(ctx.session, record)
        return
    # Inserted once settled, as it then stands (no insert then update); a replica inserting
    # the same record first makes that fail, and the retry finds it.
    _settle(ctx, record, _project_state(project), stored=False)


def _rates(ctx: _Context, event: RatesPublished) -> None:
    seq = ctx.seq
    day = event.data.on
    currencies = sorted(event.data.rates)
    # Projects first, in one order, then rates and records: the order every event locks in.
    waiting = {r.project_id for r in store.held_on(ctx.session, day, currencies)}
    projects = {pid: store.lock_project(ctx.session, pid) for pid in sorted(waiting)}
    for currency in currencies:
        text = format(event.data.rates[currency].normalize(), "f")
        row = store.lock_rate(ctx.session, day, currency)
        if row.cny_per_unit is None:
            store.set_rate(ctx.session, row, text, seq)
        elif (not seq or seq >= row.stream_seq) and row.cny_per_unit != text:
            # A correction applies to records credited from now on; past credits keep the
            # rate they were credited at (it is in their ledger entry).
            log.warning(
                "scoring: %s rate of %s corrected from %s to %s",
                currency,
                day,
                row.cny_per_unit,
                text,
            )
            store.set_rate(ctx.session, row, text, seq)
    for record in store.held_on(ctx.session, day, currencies, lock=True):
        project = projects.get(record.project_id) or store.lock_project(
            ctx.session, record.project_id
        )
        _settle(ctx, record, _project_state(project))


def _recognition(ctx: _Context, event: Recognition) -> None:
    seq = ctx.seq
    row = store.lock_project(ctx.session, event.project_id)
    if seq and seq < row.recognition_seq:
        return  # an older recognition overtaken by a newer one
    before = _reasons(row.recognition)
    row.recognized = event.recognized
    row.recognition = event.model_dump_json()
    row.recognition_seq = seq
    # Review names the sponsor of the approval it took (a refused decision names none).
    sponsor_changed = (
        event.sponsor_leader is not None and event.sponsor_leader != row.sponsor_leader
    )
    if sponsor_changed:
        row.sponsor_leader = event.sponsor_leader
    ctx.session.add(row)
    ctx.session.flush()
    if before != _reasons(row.recognition):
        _settle_all(ctx, row)
    if sponsor_changed:
        _settle_all(ctx, row, rescore=True)


def _amendment(ctx: _Context, event: RecordCorrected | RecordWithdrawn) -> bool:
    """更正 / 撤回: keep intake's latest version of the record, and settle what it moves."""
    target = event.data.target
    row = store.lock_project(ctx.session, target.project_id)
    known = ctx.session.get(store.RecordVersion, target.key)
    if known is not None and known.version >= event.version:
        return False  # an older version arriving late
    corrected = isinstance(event, RecordCorrected)
    after = json.dumps(event.after) if isinstance(event, RecordCorrected) else None
    reason = event.data.reason
    if known is None:
        known = store.RecordVersion(target=target.key, version=event.version)
    known.version, known.payload, known.reason = event.version, after, reason
    ctx.session.add(known)
    ctx.session.flush()
    what = f"{target.kind} corrected (version {event.version}" if corrected else ""
    if isinstance(event, RecordCorrected):
        changed = ", ".join(f"{c.field} {c.old} → {c.new}" for c in event.changes)
        cause = f"{what}: {changed}; {reason}) / 更正"
    else:
        cause = f"{target.kind} withdrawn (version {event.version}): {reason} / 撤回"
    if target.kind == RecordKind.lead:
        if isinstance(event, RecordWithdrawn):
            row.withdrawn = cause
        elif row.lead is not None:
            lead = Lead.model_validate(event.after)
            row.lead = lead.model_dump_json(exclude_none=True)
        ctx.session.add(row)
        ctx.session.flush()
        if row.lead is not None:
            _settle_all(ctx, row, cause=cause)
        return True
    if target.kind == RecordKind.milestone:
        _amend_milestone(ctx, event)
        return True
    assert target.funds_id is not None
    record = store.funds_record(ctx.session, target.project_id, target.funds_id, lock=True)
    if record is None or record.state == "withdrawn":
        return True  # applied when the record arrives (see _funds)
    if isinstance(event, RecordWithdrawn):
        active = store.active_credit(ctx.session, record)
        if active is not None:
            _write(ctx, record, Reverse(cause), active)
        record.state, record.hold_reason = "withdrawn", cause
        record.holds += 1
        held = Held(project_id=record.project_id, funds_id=record.funds_id, reason=cause)
        ctx.emit(
            f"score.held:{record.project_id}:{record.funds_id}:h{record.holds}",
            subjects.SCORE_HELD,
            held.model_dump_json(),
            record.project_id,
        )
        ctx.session.add(record)
        return True
    f = Funds.model_validate(event.after)
    record.amount_fen, record.currency = to_fen(f.amount), f.currency
    record.arrived_on, record.form = f.arrived_on, f.form.value
    record.payload = f.model_dump_json(exclude_none=True)
    _settle(ctx, record, _project_state(row), rescore=True, cause=cause)
    return True


def _amend_milestone(ctx: _Context, event: RecordCorrected | RecordWithdrawn) -> None:
    target = event.data.target
    assert target.milestone is not None
    kind = target.milestone.value
    if kind in COUNTED_MILESTONES:
        row = ctx.session.get(store.Milestone, (target.project_id, kind))
        if isinstance(event, RecordWithdrawn):
            if row is not None:
                ctx.session.delete(row)
            return
        on = dt.date.fromisoformat(event.after["on"])
        if row is None:
            ctx.session.add(store.Milestone(project_id=target.project_id, milestone=kind, on=on))
        else:
            row.on = on  # corrected: the date on record now, not the earliest one
            ctx.session.add(row)
        return
    if kind != "signed":
        return
    signing = ctx.session.get(store.Signing, target.project_id)
    if isinstance(event, RecordWithdrawn):
        if signing is not None:
            ctx.session.delete(signing)
        return
    m = Milestone.model_validate(event.after)
    assert m.amount is not None
    if signing is None:
        signing = store.Signing(
            project_id=target.project_id, signed_on=m.on, amount_fen=to_fen(m.amount)
        )
    signing.signed_on, signing.amount_fen = m.on, to_fen(m.amount)
    ctx.session.add(signing)


def _reasons(recognition_json: str | None) -> tuple[Any, ...]:
    if recognition_json is None:
        return ()
    r = json.loads(recognition_json)
    return (
        r["recognized"],
        r["recognition_blockers"],
        r["missing_proofs"],
        bool(r.get("committee_rejected")),
    )


def resettle_waiting_for_rules(
    session: Session, source: str, rules: Rules, now: dt.datetime
) -> Applied:
    """A scoring ruleset was published: settle the records held for want of one.

    Runs on every replica that hears of the publication, each time: settling is idempotent,
    so a replica that has not loaded the version yet changes nothing and one that has credits.
    """
    ctx = _Context(session, source, rules, now, 0)
    waiting = store.held_because(session, NO_RULESET)
    projects = {
        pid: store.lock_project(session, pid) for pid in sorted({r.project_id for r in waiting})
    }
    for record in waiting:
        locked = store.funds_record(session, record.project_id, record.funds_id, lock=True)
        if locked is not None and locked.state == "held":
            _settle(ctx, locked, _project_state(projects[record.project_id]))
    return Applied("applied", ctx.outbox)


# --- settling funds records -----------------------------------------------------------------------


def _project_state(row: store.Project) -> ProjectState:
    recognition = json.loads(row.recognition) if row.recognition else {}
    return ProjectState(
        project_id=row.project_id,
        lead=json.loads(row.lead) if row.lead else None,
        recognized=row.recognized,
        recognition_blockers=list(recognition.get("recognition_blockers", [])),
        missing_proofs=list(recognition.get("missing_proofs", [])),
        sponsor_leader=row.sponsor_leader,
        committee_rejected=bool(recognition.get("committee_rejected")),
        lead_json=row.lead,
        withdrawn=row.withdrawn,
    )


def _settle_all(
    ctx: _Context,
    project: store.Project,
    *,
    only_held: bool = False,
    rescore: bool = False,
    cause: str | None = None,
) -> None:
    """`cause`: the lead was corrected or withdrawn; every record is settled again, the
    credited ones rescored."""
    state = _project_state(project)
    for record in store.funds_of(ctx.session, project.project_id, lock=True):
        if record.state == "withdrawn":
            continue
        if only_held and record.state == "credited":
            continue
        if rescore and record.state != "credited":
            continue
        _settle(ctx, record, state, rescore=rescore or cause is not None, cause=cause)


def _settle(
    ctx: _Context,
    record: store.FundsRecord,
    project: ProjectState,
    *,
    rescore: bool = False,
    stored: bool = True,
    cause: str | None = None,
) -> None:
    """`stored=False`: a new record, not in the session; inserted here once settled."""
    active = store.active_credit(ctx.session, record) if stored else None
    state = FundsState(
        project_id=record.project_id,
        funds_id=record.funds_id,
        funds=json.loads(record.payload),
        currency=record.currency,
        arrived_on=record.arrived_on,
        held_because=record.hold_reason if record.state == "held" else None,
        credit=ActiveCredit(
            from_fen(active.points_fen),
            json.loads(active.credited_to),
            (active.year, active.quarter),
            from_fen(active.amount_rmb_fen),
        )
        if active is not None
        else None,
    )
    # Locked: a rates event for that day committing meanwhile waits, then finds this record.
    rate = (
        None
        if record.currency == "CNY"
        else store.lock_rate(ctx.session, record.arrived_on, record.currency).rate
    )
    steps = settle(state, project, rate, ctx.rules, rescore=rescore, cause=cause)
    out_of_year = _out_of_year(record.arrived_on, project)
    for step in steps:
        _write(ctx, record, step, active, out_of_year)
        if isinstance(step, Reverse):
            active = None
    if not stored:
        store.add_funds_record(ctx.session, record)
    elif steps:
        ctx.session.add(record)
        ctx.session.flush()


def _out_of_year(day: dt.date, project: ProjectState) -> bool:
    """非当年度: dated outside the project's assessment year, the year its lead reports it
    (考核范围：当年度引进的项目；到位资金：当年度实际投入). Accepted and credited as ever, marked."""
    reported = (project.lead or {}).get("reported_on")
    return bool(reported) and day.year != dt.date.fromisoformat(str(reported)).year


def _write(
    ctx: _Context,
    record: store.FundsRecord,
    step: Step,
    active: Any | None,  # the entry's row (store.active_credit)
    out_of_year: bool = False,
) -> None:
    pid, fid = record.project_id, record.funds_id
    if isinstance(step, Hold):
        record.state, record.hold_reason = "held", step.reason
        record.holds += 1
        held = Held(project_id=pid, funds_id=fid, reason=step.reason, out_of_year=out_of_year)
        ctx.emit(
            f"score.held:{pid}:{fid}:h{record.holds}",
            subjects.SCORE_HELD,
            held.model_dump_json(),
            pid,
        )
        return
    record.entries += 1
    seq = record.entries
    if isinstance(step, Reverse):
        assert active is not None
        entry: dict[str, Any] = {
            "project_id": pid,
            "funds_id": fid,
            "seq": seq,
            "kind": "reversal",
            "year": active.year,
            "quarter": active.quarter,
            "amount_rmb_fen": -active.amount_rmb_fen,
            "points_fen": -active.points_fen,
            "rate": active.rate,
            "multiplier": active.multiplier,
            "matched": active.matched,
            "deciding_rule": active.deciding_rule,
            "credited_to": active.credited_to,
            "ruleset_version": active.ruleset_version,
            "explanation": active.explanation,
            "reason": step.reason,
            "created_at": ctx.now,
        }
        record.state, record.hold_reason = "held", step.reason
        event = Reversed(
            project_id=pid, funds_id=fid, points=from_fen(active.points_fen), reason=step.reason
        )
        subject = subjects.SCORE_REVERSED
    else:
        s = step.scored
        entry = {
            "project_id": pid,
            "funds_id": fid,
            "seq": seq,
            "kind": "credit",
            "year": s.year,
            "quarter": s.quarter,
            "amount_rmb_fen": to_fen(s.amount_rmb),
            "points_fen": to_fen(s.points),
            "rate": format(s.rate, "f"),
            "multiplier": format(s.multiplier, "f"),
            "matched": json.dumps(s.matched),
            "deciding_rule": s.deciding_rule,
            "credited_to": json.dumps(s.credited_to),
            "ruleset_version": f"{s.explanation.ruleset_id}@{s.explanation.version}",
            "explanation": s.explanation.model_dump_json(),
            "reason": None,
            "created_at": ctx.now,
        }
        record.state, record.hold_reason = "credited", None
        cause = step.cause if isinstance(step, Credit) else None
        event = s.to_event(pid, fid).model_copy(update={"out_of_year": out_of_year, "cause": cause})
        subject = subjects.SCORE_CREDITED
    # The (project, funds, seq) key: a replica that got here first wins.
    entry_id = store.add_entry(ctx.session, entry)
    store.add_credit_lines(
        ctx.session,
        [
            {
                "entry_id": entry_id,
                "project_id": pid,
                "subject": code,
                "year": entry["year"],
                "quarter": entry["quarter"],
                "amount_rmb_fen": entry["amount_rmb_fen"],
                "points_fen": entry["points_fen"],
            }
            for code in json.loads(entry["credited_to"])
        ],
    )
    kind = "credited" if entry["kind"] == "credit" else "reversed"
    ctx.emit(f"score.{kind}:{pid}:{fid}:{seq}", subject, event.model_dump_json(), pid)


# Each input's type → what applying it does; False: the event changed nothing (ignored).
Handler = Callable[[_Context, Any], bool | None]
HANDLERS: dict[type[BaseModel], Handler] = {
    LeadReported: _lead,
    DecisionTaken: _decision,
    MilestoneReached: _milestone,
    FundsArrived: _funds,
    RatesPublished: _rates,
    Recognition: _recognition,
    RecordCorrected: _amendment,
    RecordWithdrawn: _amendment,
}
