"""Review's own tables: the review case of each project and what was filed for it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import UniqueConstraint, bindparam, insert
from sqlalchemy import select as core_select
from sqlmodel import Field, Session, SQLModel

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


# Core statements, built once, on the session's connection (same transaction) for the reads
# and the one insert every event makes: building a statement and going through the ORM's
# identity map and unit of work cost more than the SQL itself for an event that changes
# nothing else.
_processed = Processed.__table__  # type: ignore[attr-defined]
_documents = FiledDocument.__table__  # type: ignore[attr-defined]
_PROCESSED = core_select(_processed.c.event_id).where(
    _processed.c.event_id == bindparam("event_id")
)
_MARK_PROCESSED = insert(_processed)
_DOCUMENTS_OF = core_select(_documents.c.type).where(
    _documents.c.project_id == bindparam("project_id")
)


def processed(session: Session, event_id: str) -> bool:
    found = session.connection().execute(_PROCESSED, {"event_id": event_id}).first()
    return found is not None


def mark_processed(session: Session, event_id: str, subject: str) -> None:
    """Inserted at once: a replica that applied the same event first makes this fail."""
    session.connection().execute(_MARK_PROCESSED, {"event_id": event_id, "subject": subject})


def documents_of(session: Session, project_id: str) -> list[str]:
    """Types filed after the lead; flush first to see ones added in this session."""
    rows = session.connection().execute(_DOCUMENTS_OF, {"project_id": project_id})
    return list(rows.scalars().all())
