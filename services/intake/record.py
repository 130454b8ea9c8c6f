"""Recording one parsed inbound event: the checks that need intake's tables, then the rows.

All of it runs inside one transaction (see app.py): either the event, its project changes
and its outbox rows are stored together, or nothing is.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from shared import subjects
from shared.contract import (
    CANONICAL_MODELS,
    Claim,
    CommitteeDecision,
    Correction,
    DuplicateClaim,
    FieldError,
    Funds,
    Lead,
    Meeting,
    Withdrawal,
)
from shared.directory import Directory
from shared.outbox import Pending, Row, pending_for

from . import amend, store
from .validate import Parsed


@dataclass
class Recorded:
    """What the transaction stored; `outbox` are the events to publish after commit."""

    inbound_id: int
    project_id: str | None
    outcome: str  # stored | duplicate_claim | resent
    outbox: list[Pending] = field(default_factory=list)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\s\W_]+", "", text)


def claim_keys(lead: Lead) -> list[str]:
    """SPEC §2 item 6: same credit code and landing area, or same title and investor name."""
    keys = [f"name:{_norm(lead.title)}:{_norm(lead.investor.name)}"]
    if lead.investor.credit_code:
        keys.append(f"code:{lead.investor.credit_code}:{lead.landing_area}")
    return keys


def natural_key(parsed: Parsed) -> str | None:
    p = parsed.payload
    if isinstance(p, Lead):
        return f"lead:{parsed.project_id}"
    if isinstance(p, Funds):
        return f"funds:{p.project_id}:{p.funds_id}"
    if isinstance(p, Meeting):
        return f"meeting:{p.meeting_id}"
    if isinstance(p, Correction):
        return f"correction:{parsed.unit}:{p.correction_id}"
    if isinstance(p, Withdrawal):
        return f"withdrawal:{p.target.key}"
    if isinstance(p, Claim):
        return f"claim:{p.project_id}"
    # No key for a decision: review judges a second decision for one meeting (refused unless
    # the first was refused), so the Center can send a corrected one after a refusal.
    return None


def _project_problem(
    session: Session, unit: str, project_id: str, field_name: str, unknown: list[str]
) -> FieldError | None:
    project = store.project_row(session, project_id)
    if project is None:
        unknown.append(project_id)
        return FieldError(
            field=field_name,
            problem=f"unknown project {project_id!r}; report its lead first / 项目不存在",
        )
    if project.status == "duplicate":
        return FieldError(
            field=field_name,
            problem=f"project {project_id!r} is held as a duplicate of {project.duplicate_of!r} until the Center assigns it / 重复项目待中心认定归属",
        )
    if project.status in ("withdrawn", "superseded"):
        return FieldError(
            field=field_name,
            problem=f"project {project_id!r} was withdrawn ({project.status}); nothing more is "
            "recorded for it / 项目已撤回",
        )
    if unit not in (project.attracting_unit, project.landing_area, Directory.CENTER):
        return FieldError(
            field=field_name,
            problem=f"project {project_id!r} belongs to {project.attracting_unit}; only it, the landing area "
            f"{project.landing_area} or the Center may report on it / 无权报送该项目",
        )
    return None


class Refused(list[FieldError]):
    """The problems with a message; `unknown` are the project ids it names that intake has
    not stored (yet: another unit's inbox may still hold the lead)."""

    def __init__(self, errors: list[FieldError] = (), unknown: list[str] = ()) -> None:  # type: ignore[assignment]
        super().__init__(errors)
        self.unknown = list(unknown)


def check(session: Session, parsed: Parsed, now: dt.datetime | None = None) -> Refused:
    """The checks that need the tables. Run by HTTP before accepting, and again by the consumer."""
    p = parsed.payload
    errors = Refused()
    nkey = natural_key(parsed)
    taken = store.inbound_by_natural_key(session, nkey) if nkey else None
    if taken is not None:
        what = {
            "lead": "lead_id",
            "funds": "funds_id",
            "meeting": "meeting_id",
            "correction": "correction_id",
            "withdrawal": "target",
            "claim": "project_id",
        }[nkey.split(":")[0]]
        errors.append(
            FieldError(
                field=what,
                problem=f"already reported under another idempotency key ({taken.idempotency_key!r}) / 已报送过",
            )
        )
    if isinstance(p, Meeting):
        for i, pid in enumerate(p.agenda):
            problem = _project_problem(session, parsed.unit, pid, f"agenda[{i}]", errors.unknown)
            if problem:
                errors.append(problem)
    elif isinstance(p, CommitteeDecision):
        problem = _project_problem(session, parsed.unit, p.project_id, "project_id", errors.unknown)
        if problem:
            errors.append(problem)
        meeting = store.inbound_by_natural_key(session, f"meeting:{p.meeting_id}")
        if meeting is None:
            errors.append(
                FieldError(
                    field="meeting_id", problem=f"unknown meeting {p.meeting_id!r} / 会议不存在"
                )
            )
        elif p.project_id not in json.loads(meeting.payload).get("agenda", []):
            errors.append(
                FieldError(
                    field="project_id",
                    problem=f"{p.project_id!r} is not on the agenda of meeting {p.meeting_id!r}; "
                    "a decision needs the project on that meeting's agenda / 该项目不在本次会议议程",
                )
            )
    elif isinstance(p, Correction | Withdrawal):
        if taken is None:
            done = amend.resolve(session, parsed.unit, p, now or dt.datetime.now(dt.UTC))
            if isinstance(done, list):
                errors.extend(done)
    elif isinstance(p, Claim):
        errors.extend(amend.check_claim(session, p))
    elif not isinstance(p, Lead) and parsed.project_id is not None:
        problem = _project_problem(
            session, parsed.unit, parsed.project_id, "project_id", errors.unknown
        )
        if problem:
            errors.append(problem)
    return errors


def key_reused(
    key: str, first: store.InboundEvent | Any, field_name: str = "Nats-Msg-Id"
) -> FieldError:
    """The same unit used `key` before for a different event: the first one stands."""
    produced = f"project {first.project_id}" if first.project_id else f"a {first.kind} event"
    return FieldError(
        field=field_name,
        problem=f"key {key!r} reused with different content; the first request "
        f"({first.kind}, received {first.received_at:%Y-%m-%d %H:%M:%S}) produced {produced} "
        "and stands / 幂等键已用于不同内容",
    )


def record(
    session: Session, parsed: Parsed, key: str, received_at: dt.datetime
) -> Recorded | Refused:
    """Store `parsed` under idempotency `key`, or say why not. Idempotent per (unit, key)."""
    payload_json = parsed.payload.model_dump_json()
    seen = store.inbound_by_key(session, parsed.unit, key)
    if seen is not None:
        if seen.kind != parsed.kind.value or seen.payload != payload_json:
            return Refused([key_reused(key, seen)])
        return Recorded(
            seen.id, seen.project_id, "resent", pending_for(session, store.Outbox, str(seen.id))
        )
    errors = check(session, parsed, received_at)
    if errors:
        return errors

    values = {
        "unit": parsed.unit,
        "kind": parsed.kind.value,
        "idempotency_key": key,
        "natural_key": natural_key(parsed),
        "project_id": parsed.project_id,
        "payload": payload_json,
        "received_at": received_at,
    }
    msg_id = f"{parsed.kind.value}:{parsed.unit}:{key}"
    if isinstance(parsed.payload, Correction | Withdrawal | Claim):
        return _record_amendment(session, parsed, values, msg_id)
    inbound_id = store.add_inbound(session, **values)
    result = Recorded(inbound_id, parsed.project_id, "stored")

    if isinstance(parsed.payload, Lead):
        duplicate = _add_project(session, parsed, parsed.payload)
        if duplicate is not None:
            result.outcome = "duplicate_claim"
            event = DuplicateClaim(
                event_id=f"duplicate:{parsed.project_id}",
                project_id=parsed.project_id or "",
                duplicate_of=duplicate.project_id,
                units=[parsed.unit, duplicate.attracting_unit],
                reason=f"same project as {duplicate.project_id} reported by {duplicate.attracting_unit} "
                "(same investor credit code and landing area, or same title and investor) / 一个项目只能一个招商单位认领",
                received_at=received_at,
            )
            result.outbox.append(
                _outbox(
                    inbound_id,
                    event.event_id,
                    subjects.PROJECT_DUPLICATE,
                    event.model_dump_json(),
                    event.project_id,
                )
            )
            store.add_outbox(session, result.outbox)
            return result

    model = CANONICAL_MODELS[parsed.kind]
    subject = subjects.canonical(parsed.kind)
    if isinstance(parsed.payload, Meeting):
        # One copy per project on the agenda, in that project's partition: there it comes
        # after the project's lead and before the decision taken at the meeting, so each
        # project's events stay in order without ordering projects against each other.
        for pid in dict.fromkeys(parsed.payload.agenda):
            copy = model(
                event_id=f"{msg_id}:{pid}",
                project_id=pid,
                unit=parsed.unit,
                idempotency_key=key,
                received_at=received_at,
                data=parsed.payload,
            )
            result.outbox.append(
                _outbox(inbound_id, copy.event_id, subject, copy.model_dump_json(), pid)
            )
        store.add_outbox(session, result.outbox)
        return result
    # The payload as validated goes into the envelope as it is: validating it again from
    # its JSON gave the same bytes (the sample year, compared) for three times the work.
    envelope = model(
        event_id=msg_id,
        project_id=parsed.project_id,
        unit=parsed.unit,
        idempotency_key=key,
        received_at=received_at,
        data=parsed.payload,
    )
    result.outbox.append(
        _outbox(inbound_id, msg_id, subject, envelope.model_dump_json(), parsed.project_id)
    )
    store.add_outbox(session, result.outbox)
    return result


def _record_amendment(
    session: Session, parsed: Parsed, values: dict[str, Any], msg_id: str
) -> Recorded:
    """A correction, withdrawal or claim: amend.py works on the inbound row as an ORM object."""
    row = store.InboundEvent(**values)
    session.add(row)
    session.flush()  # assigns row.id; a unique-key race fails here and the message is retried
    assert row.id is not None
    result = Recorded(row.id, parsed.project_id, "stored")
    if isinstance(parsed.payload, Correction | Withdrawal):
        done = amend.record_amendment(session, parsed.unit, parsed.payload, row, msg_id)
        assert not isinstance(done, list)  # checked above, in this transaction
        result.outbox.append(_outbox(row.id, msg_id, *done))
    else:
        assert isinstance(parsed.payload, Claim)
        events = amend.record_claim(session, parsed.payload, row, msg_id)
        for event_id, subject, body, pid in events:
            assert isinstance(event_id, str)
            result.outbox.append(_outbox(row.id, event_id, subject, body, pid))  # type: ignore[arg-type]
    store.add_outbox(session, result.outbox)
    return result


def _outbox(inbound_id: int, msg_id: str, event_type: str, body: str, key: str | None) -> Row:
    """`key`: the project the event is about: its partition (shared/subjects.py)."""
    return Row(
        msg_id=msg_id, source=str(inbound_id), subject=subjects.keyed(event_type, key), body=body
    )


def _add_project(session: Session, parsed: Parsed, lead: Lead) -> store.Project | None:
    """Add the lead's project; if another report already claims it, hold this one and return that."""
    keys = claim_keys(lead)
    existing = store.find_claims(session, keys)
    original = store.get_project(session, existing[0].project_id) if existing else None
    project = store.Project(
        project_id=parsed.project_id or "",
        attracting_unit=lead.attracting_unit,
        landing_area=lead.landing_area,
        title=lead.title,
        investor_name=lead.investor.name,
        credit_code=lead.investor.credit_code,
        status="duplicate" if original else "active",
        duplicate_of=original.project_id if original else None,
        reported_on=lead.reported_on,
    )
    session.add(project)
    if original is None:
        session.add_all(store.Claim(claim_key=k, project_id=project.project_id) for k in keys)
    return original
