"""Review's own tables: the review case of each project and what was filed for it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from shared.outbox import OutboxRow


class Case(SQLModel, table=True):
    """One project's review (联审联批) as far as review has seen it."""

    __tablename__ = "review_case"

    project_id: str = Field(primary_key=True, max_length=100)
    lead: str  # the Lead payload as reported, JSON
    attracting_unit: str = Field(index=True, max_length=32)
    reported_on: dt.date
    outcome: str = Field(max_length=16)  # accepted | terminated
    track: str | None = Field(default=None, max_length=16)  # major | standard
    meeting_id: str | None = Field(default=None, max_length=64)
    meeting_on: dt.date | None = None
    decision: str | None = Field(default=None, max_length=16)
    sponsor_leader: str | None = Field(default=None, max_length=32)
    # What we last announced, so a re-evaluation that changes nothing emits nothing.
    materials_state: str | None = None
    recognition_state: str | None = None
    recognized: bool = False


class FiledDocument(SQLModel, table=True):
    __tablename__ = "review_document"
    __table_args__ = (UniqueConstraint("event_id", name="uq_review_document_event"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    type: str = Field(max_length=40)
    ref: str
    event_id: str = Field(max_length=300)


class Processed(SQLModel, table=True):
    """Every consumed event id, written in the transaction that applied it."""

    __tablename__ = "review_processed"

    event_id: str = Field(primary_key=True, max_length=300)
    subject: str = Field(max_length=100)


class Outbox(OutboxRow, table=True):
    __tablename__ = "review_outbox"


TABLES = (Case, FiledDocument, Processed, Outbox)


def documents_of(session: Session, project_id: str) -> list[str]:
    return list(
        session.exec(select(FiledDocument.type).where(FiledDocument.project_id == project_id)).all()
    )
