"""Intake's own tables. Nobody else reads them; other services learn from `project.*` events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, UniqueConstraint, bindparam, insert
from sqlalchemy import select as core_select
from sqlmodel import Field, Session, SQLModel, select

from shared.outbox import OutboxRow, Pending


class InboundEvent(SQLModel, table=True):
    """Every accepted inbound message, once: (unit, idempotency_key) is the re-send guard."""

    __tablename__ = "intake_inbound_event"
    __table_args__ = (UniqueConstraint("unit", "idempotency_key", name="uq_intake_unit_key"),)

    id: int | None = Field(default=None, primary_key=True)
    unit: str = Field(index=True, max_length=32)
    kind: str = Field(max_length=16)
    idempotency_key: str = Field(max_length=200)
    # One fact, one row even under different keys: a lead's project id, a funds id, a meeting id.
    natural_key: str | None = Field(default=None, unique=True, max_length=200)
    project_id: str | None = Field(default=None, index=True, max_length=100)
    payload: str
    received_at: dt.datetime


class Project(SQLModel, table=True):
    __tablename__ = "intake_project"

    project_id: str = Field(primary_key=True, max_length=100)
    attracting_unit: str = Field(index=True, max_length=32)  # 招商单位
    landing_area: str = Field(max_length=32)
    title: str
    investor_name: str
    credit_code: str | None = Field(default=None, max_length=18)
    # active | duplicate (held for the Center) | withdrawn (撤回, or lost its claim) |
    # superseded (a held duplicate the Center assigned to the other claim)
    status: str = Field(default="active", max_length=16)
    duplicate_of: str | None = Field(default=None, max_length=100)
    reported_on: dt.date


class Claim(SQLModel, table=True):
    """One project, one claim: the keys by which a second report of a project is recognised."""

    __tablename__ = "intake_claim"

    claim_key: str = Field(primary_key=True, max_length=400)
    project_id: str = Field(max_length=100)


class Revision(SQLModel, table=True):
    """The audit trail of corrections (更正) and withdrawals (撤回): one row per new version of
    a record (the original report is version 1, in InboundEvent), who, when, why, old → new.
    UNIQUE (target, version): two corrections of one record racing, one wins, one retries."""

    __tablename__ = "intake_revision"
    __table_args__ = (UniqueConstraint("target", "version", name="uq_intake_revision"),)

    id: int | None = Field(default=None, primary_key=True)
    target: str = Field(index=True, max_length=200)  # RecordRef.key: lead:P, funds:P:F, ...
    version: int
    action: str = Field(max_length=16)  # correction | withdrawal
    unit: str = Field(max_length=32)  # who sent it
    owner: str = Field(max_length=32)  # who reported the record
    project_id: str = Field(index=True, max_length=100)
    reason: str
    changes: str  # JSON [{field, old, new}]; [] for a withdrawal
    payload: str | None = None  # the record as it stands after this version; None: withdrawn
    inbound_id: int
    received_at: dt.datetime


class Outbox(OutboxRow, table=True):
    """Events to emit, written in the same transaction as the facts they announce;
    `source` is the inbound row's id."""

    __tablename__ = "intake_outbox"


class ApiToken(SQLModel, table=True):
    """A unit's HTTP bearer token (接口令牌). Only its SHA-256 is kept: the token is shown once,
    when issued (`investflow tokens issue UNIT`), and a lost one is revoked and issued anew."""

    __tablename__ = "intake_api_token"

    token_id: str = Field(primary_key=True, max_length=16)  # the public handle: list, revoke
    unit: str = Field(index=True, max_length=32)
    sha256: str = Field(max_length=64)
    label: str = Field(default="", max_length=200)
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


TABLES = (InboundEvent, Project, Claim, Revision, Outbox, ApiToken)


# The consumer's per-message statements, built once: Core, so no ORM instance is made for a
# row only read or only written (most of what a funds record cost, profiled).
_INBOUND = InboundEvent.__table__  # type: ignore[attr-defined]
_BY_KEY = core_select(_INBOUND).where(
    _INBOUND.c.unit == bindparam("unit"), _INBOUND.c.idempotency_key == bindparam("key")
)
_BY_NATURAL_KEY = core_select(_INBOUND).where(_INBOUND.c.natural_key == bindparam("natural_key"))
_ADD_INBOUND = insert(_INBOUND)
_PROJECT = Project.__table__  # type: ignore[attr-defined]
_PROJECT_BY_ID = core_select(_PROJECT).where(_PROJECT.c.project_id == bindparam("project_id"))
_ADD_OUTBOX = insert(Outbox.__table__)  # type: ignore[attr-defined]


def _connection(session: Session) -> Any:
    """The session's connection, with what the ORM holds unsaved written first (what its
    own queries' autoflush does): a lead added as an ORM object is seen by the next read."""
    session.flush()
    return session.connection()


def inbound_by_key(session: Session, unit: str, key: str) -> Row[Any] | None:
    """What the unit sent under `key` (a row: its columns as attributes), or None: the one
    look-up of a re-send, for the consumer and the HTTP path alike. Not an inbox: a re-send
    with other content is refused (key_reused), so the first one's payload is compared."""
    return _connection(session).execute(_BY_KEY, {"unit": unit, "key": key}).first()


def inbound_by_natural_key(session: Session, natural_key: str) -> Row[Any] | None:
    """`natural_key_taken` as a row, for the consumer's hot path."""
    query = _BY_NATURAL_KEY
    return _connection(session).execute(query, {"natural_key": natural_key}).first()


def project_row(session: Session, project_id: str) -> Row[Any] | None:
    """`get_project` as a row, for the checks: the session keeps no Project it loaded once
    it is dropped, so each check loaded one through the ORM again."""
    query = _PROJECT_BY_ID
    return _connection(session).execute(query, {"project_id": project_id}).first()


def add_inbound(session: Session, **values: Any) -> int:
    """Insert an InboundEvent row; its id. A unique-key race raises IntegrityError here."""
    result = _connection(session).execute(_ADD_INBOUND, values)
    return int(result.inserted_primary_key[0])


def add_outbox(session: Session, rows: Sequence[Pending]) -> None:
    """Insert outbox rows, one statement for all of them."""
    if rows:
        values = [
            {"msg_id": r.msg_id, "source": r.source, "subject": r.subject, "body": r.body}
            for r in rows
        ]
        _connection(session).execute(_ADD_OUTBOX, values)


def natural_key_taken(session: Session, natural_key: str) -> InboundEvent | None:
    return session.exec(select(InboundEvent).where(InboundEvent.natural_key == natural_key)).first()


def latest_revision(session: Session, target: str) -> Revision | None:
    return session.exec(
        select(Revision).where(Revision.target == target).order_by(Revision.version.desc())  # type: ignore[attr-defined]
    ).first()


def revisions(session: Session, project_id: str | None = None) -> list[Revision]:
    query = select(Revision).order_by(Revision.id)  # type: ignore[arg-type]
    if project_id is not None:
        query = query.where(Revision.project_id == project_id)
    return list(session.exec(query).all())


def latest_milestone(session: Session, project_id: str, milestone: str) -> InboundEvent | None:
    """The latest `milestone` report of that kind for the project (milestones have no id)."""
    import json

    rows = session.exec(
        select(InboundEvent)
        .where(InboundEvent.kind == "milestone", InboundEvent.project_id == project_id)
        .order_by(InboundEvent.id.desc())  # type: ignore[union-attr]
    ).all()
    return next((r for r in rows if json.loads(r.payload).get("milestone") == milestone), None)


def claims_of(session: Session, project_id: str) -> list[Claim]:
    return list(session.exec(select(Claim).where(Claim.project_id == project_id)).all())


def held_claims(session: Session) -> list[Project]:
    return list(
        session.exec(
            select(Project).where(Project.status == "duplicate").order_by(Project.project_id)  # type: ignore[arg-type]
        ).all()
    )


def get_project(session: Session, project_id: str) -> Project | None:
    return session.get(Project, project_id)


def find_claims(session: Session, keys: list[str]) -> list[Claim]:
    return list(session.exec(select(Claim).where(Claim.claim_key.in_(keys))).all())  # type: ignore[attr-defined]


def counts(session: Session) -> dict[str, int]:
    from sqlalchemy import func

    return {
        "inbound": session.exec(select(func.count()).select_from(InboundEvent)).one(),
        "projects": session.exec(select(func.count()).select_from(Project)).one(),
        "held_duplicates": session.exec(
            select(func.count()).select_from(Project).where(Project.status == "duplicate")
        ).one(),
    }
