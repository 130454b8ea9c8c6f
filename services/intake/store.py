"""Intake's own tables. Nobody else reads them; other services learn from `project.*` events."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from shared.outbox import OutboxRow


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
    status: str = Field(default="active", max_length=16)  # active | duplicate (held for the Center)
    duplicate_of: str | None = Field(default=None, max_length=100)
    reported_on: dt.date


class Claim(SQLModel, table=True):
    """One project, one claim: the keys by which a second report of a project is recognised."""

    __tablename__ = "intake_claim"

    claim_key: str = Field(primary_key=True, max_length=400)
    project_id: str = Field(max_length=100)


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


TABLES = (InboundEvent, Project, Claim, Outbox, ApiToken)


def find_inbound(session: Session, unit: str, key: str) -> InboundEvent | None:
    return session.exec(
        select(InboundEvent).where(InboundEvent.unit == unit, InboundEvent.idempotency_key == key)
    ).first()


def natural_key_taken(session: Session, natural_key: str) -> InboundEvent | None:
    return session.exec(select(InboundEvent).where(InboundEvent.natural_key == natural_key)).first()


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
