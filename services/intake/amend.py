"""Corrections (更正), withdrawals (撤回) and the Center's resolution of held duplicate claims.

A record (a lead, a funds record, a milestone) is versioned: its first report is version 1
(intake_inbound_event), each correction or withdrawal adds the next version to
intake_revision with who sent it, when, why and each field's old → new value. Only the unit
that reported the record, or the Center, may amend it. The corrected record is checked as a
whole, exactly as a new report of it would be (so a corrected funds date in the future is
refused like one reported in the future).

Everything here runs inside record.py's transaction: the revision, the project's status and
the events to publish are stored together, or nothing is.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from shared import subjects
from shared.contract import (
    RECORD_MODELS,
    Change,
    Claim,
    ClaimResolution,
    ClaimResolved,
    Correction,
    FieldError,
    LeadReported,
    RecordCorrected,
    RecordKind,
    RecordRef,
    RecordWithdrawn,
    Withdrawal,
)
from shared.directory import Directory

from . import store
from .validate import pydantic_errors


@dataclass
class Amendment:
    """A correction or withdrawal, resolved against what intake holds."""

    target: RecordRef
    owner: str
    version: int
    before: dict[str, Any]
    after: dict[str, Any] | None  # None: withdrawn
    changes: list[Change]


def _original(session: Session, target: RecordRef) -> store.InboundEvent | None:
    if target.kind == RecordKind.milestone:
        assert target.milestone is not None
        return store.latest_milestone(session, target.project_id, target.milestone.value)
    return store.natural_key_taken(session, target.key)


def resolve(
    session: Session, unit: str, payload: Correction | Withdrawal, now: dt.datetime
) -> Amendment | list[FieldError]:
    """What the amendment changes, or every reason it cannot be taken."""
    target = payload.target
    original = _original(session, target)
    if original is None:
        return [
            FieldError(
                field="target",
                problem=f"no {target.kind} record {target.key!r} was reported / 更正或撤回的记录不存在",
            )
        ]
    owner = original.unit
    if unit not in (owner, Directory.CENTER):
        return [
            FieldError(
                field="target",
                problem=f"{target.key!r} was reported by {owner}; {unit} may not correct or "
                f"withdraw it, only {owner} or the Center / 仅原报送单位（{owner}）或中心可更正、撤回，"
                f"{unit} 无权操作",
            )
        ]
    project = store.get_project(session, target.project_id)
    if project is not None and project.status in ("duplicate", "superseded"):
        return [
            FieldError(
                field="target.project_id",
                problem=f"project {target.project_id!r} is held as a duplicate claim; the Center "
                "resolves it first / 重复认领待中心认定",
            )
        ]
    latest = store.latest_revision(session, target.key)
    current = original.payload
    version = 2
    if latest is not None:
        version = latest.version + 1
        if latest.inbound_id > (original.id or 0):  # a milestone reported again starts anew
            if latest.payload is None:
                return [
                    FieldError(
                        field="target",
                        problem=f"{target.key!r} was withdrawn (version {latest.version}) / 记录已撤回",
                    )
                ]
            current = latest.payload
    if target.kind != RecordKind.lead and project is not None and project.status == "withdrawn":
        return [
            FieldError(
                field="target.project_id",
                problem=f"project {target.project_id!r} was withdrawn / 项目已撤回",
            )
        ]
    before = json.loads(current)
    if isinstance(payload, Withdrawal):
        return Amendment(target, owner, version, before, None, [])
    after = before | payload.changes
    model = RECORD_MODELS[target.kind]
    try:
        checked = model.model_validate_json(
            json.dumps(after), strict=True, context={"received_at": now}
        )
    except ValidationError as exc:
        return [
            FieldError(field=f"changes.{e.field}", problem=e.problem) for e in pydantic_errors(exc)
        ]
    after = json.loads(checked.model_dump_json())
    changes = [
        Change(field=name, old=before.get(name), new=after.get(name))
        for name in sorted(payload.changes)
        if before.get(name) != after.get(name)
    ]
    if not changes:
        return [
            FieldError(
                field="changes",
                problem="every value is the one on record: nothing to correct / 与原记录相同，无需更正",
            )
        ]
    return Amendment(target, owner, version, before, after, changes)


def record_amendment(
    session: Session,
    unit: str,
    payload: Correction | Withdrawal,
    row: store.InboundEvent,
    msg_id: str,
) -> tuple[str, str, str] | list[FieldError]:
    """Store the new version; returns (event type, event JSON, project) to publish."""
    done = resolve(session, unit, payload, row.received_at)
    if isinstance(done, list):
        return done
    assert row.id is not None
    session.add(
        store.Revision(
            target=done.target.key,
            version=done.version,
            action="correction" if isinstance(payload, Correction) else "withdrawal",
            unit=unit,
            owner=done.owner,
            project_id=done.target.project_id,
            reason=payload.reason,
            changes=json.dumps([c.model_dump(mode="json") for c in done.changes]),
            payload=json.dumps(done.after) if done.after is not None else None,
            inbound_id=row.id,
            received_at=row.received_at,
        )
    )
    project = store.get_project(session, done.target.project_id)
    if project is not None and done.target.kind == RecordKind.lead:
        if done.after is None:
            project.status = "withdrawn"
        else:
            project.title = done.after["title"]
            project.investor_name = done.after["investor"]["name"]
            project.credit_code = done.after["investor"].get("credit_code")
        session.add(project)
    common = {
        "event_id": msg_id,
        "project_id": done.target.project_id,
        "unit": unit,
        "idempotency_key": row.idempotency_key,
        "received_at": row.received_at,
        "version": done.version,
        "owner": done.owner,
        "before": done.before,
    }
    if isinstance(payload, Correction):
        event: RecordCorrected | RecordWithdrawn = RecordCorrected(
            data=payload, after=done.after or {}, changes=done.changes, **common
        )
        return subjects.canonical("correction"), event.model_dump_json(), done.target.project_id
    event = RecordWithdrawn(data=payload, **common)
    return subjects.canonical("withdrawal"), event.model_dump_json(), done.target.project_id


# --- duplicate claims ---------------------------------------------------------------------------


def held_of(session: Session, claim: Claim) -> store.Project | None:
    """The held report the claim is about: `project_id` itself, or — when that one is the
    report that went ahead — the one report held as its duplicate. Units' inboxes are read side
    by side, so which of two reports arrived first is not for the Center to guess."""
    project = store.get_project(session, claim.project_id)
    if project is None or project.status != "active":
        return project
    held = [p for p in store.held_claims(session) if p.duplicate_of == project.project_id]
    return held[0] if len(held) == 1 else project


def check_claim(session: Session, claim: Claim) -> list[FieldError]:
    held = held_of(session, claim)
    if held is None:
        return [
            FieldError(
                field="project_id", problem=f"unknown project {claim.project_id!r} / 项目不存在"
            )
        ]
    if held.status != "duplicate":
        return [
            FieldError(
                field="project_id",
                problem=f"{claim.project_id!r} is not a held duplicate claim (it is {held.status}) "
                "/ 该项目不是待认定的重复认领",
            )
        ]
    if claim.assign_to is not None and claim.assign_to not in (held.project_id, held.duplicate_of):
        return [
            FieldError(
                field="assign_to",
                problem=f"{claim.assign_to!r} is neither the held claim {held.project_id} nor the "
                f"one it duplicates ({held.duplicate_of}) / 只能在两个认领中择一",
            )
        ]
    return []


def record_claim(
    session: Session, claim: Claim, row: store.InboundEvent, msg_id: str
) -> list[tuple[str, str, str, str]] | list[FieldError]:
    """Resolve the held claim; returns (msg_id, event type, event JSON, project) to publish, in order:
    the resolution, then the released lead, then the losing project's withdrawal."""
    errors = check_claim(session, claim)
    if errors:
        return errors
    held = held_of(session, claim)
    assert held is not None and held.duplicate_of is not None
    first = store.get_project(session, held.duplicate_of)
    assert first is not None
    released = withdrawn = None
    if claim.resolution == ClaimResolution.distinct or claim.assign_to == held.project_id:
        released = held.project_id
    if claim.assign_to == held.project_id:
        withdrawn = first.project_id
    out: list[tuple[str, str, str, str]] = []
    resolved = ClaimResolved(
        event_id=msg_id,
        project_id=held.project_id,
        unit=row.unit,
        idempotency_key=row.idempotency_key,
        received_at=row.received_at,
        data=claim,
        duplicate_of=first.project_id,
        units=[held.attracting_unit, first.attracting_unit],
        released=released,
        withdrawn=withdrawn,
    )
    out.append((msg_id, subjects.canonical("claim"), resolved.model_dump_json(), held.project_id))
    if released is None:
        held.status = "superseded"
    else:
        held.status = "active"
        lead_row = store.natural_key_taken(session, f"lead:{held.project_id}")
        assert lead_row is not None
        # The id it would have had if it had not been held: published once, whoever asks.
        lead_id = f"lead:{lead_row.unit}:{lead_row.idempotency_key}"
        lead = LeadReported(
            event_id=lead_id,
            project_id=held.project_id,
            unit=lead_row.unit,
            idempotency_key=lead_row.idempotency_key,
            received_at=lead_row.received_at,
            data=json.loads(lead_row.payload),
        )
        out.append((lead_id, subjects.canonical("lead"), lead.model_dump_json(), held.project_id))
    session.add(held)
    if withdrawn is not None:
        first_lead = store.natural_key_taken(session, f"lead:{first.project_id}")
        assert first_lead is not None and row.id is not None
        target = RecordRef(kind=RecordKind.lead, project_id=first.project_id)
        latest = store.latest_revision(session, target.key)
        version = latest.version + 1 if latest is not None else 2
        before = json.loads(latest.payload if latest and latest.payload else first_lead.payload)
        reason = (
            f"claim assigned to {held.project_id} ({held.attracting_unit}) by the Center: "
            f"{claim.reason} / 中心认定项目归属 {held.attracting_unit}"
        )
        session.add(
            store.Revision(
                target=target.key,
                version=version,
                action="withdrawal",
                unit=row.unit,
                owner=first_lead.unit,
                project_id=first.project_id,
                reason=reason,
                changes="[]",
                payload=None,
                inbound_id=row.id,
                received_at=row.received_at,
            )
        )
        first.status = "withdrawn"
        session.add(first)
        # The claim keys now name the project that stands.
        for key in store.claims_of(session, first.project_id):
            key.project_id = held.project_id
            session.add(key)
        withdrawal_id = f"{msg_id}:withdrawal"
        event = RecordWithdrawn(
            event_id=withdrawal_id,
            project_id=first.project_id,
            unit=row.unit,
            idempotency_key=row.idempotency_key,
            received_at=row.received_at,
            data=Withdrawal(unit=row.unit, target=target, reason=reason[:500]),
            version=version,
            owner=first_lead.unit,
            before=before,
        )
        out.append(
            (
                withdrawal_id,
                subjects.canonical("withdrawal"),
                event.model_dump_json(),
                first.project_id,
            )
        )
    return out
