"""Review's own tables: the review case of each project and what was filed for it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import UniqueConstraint, bindparam, insert
from sqlalchemy import select as core_select
from sqlmodel import Field, Session, SQLModel

from shared.inbox import Inbox
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
    # Where the track stands (联审联批): None (under review), `late` (材料逾期: materials not
    # filed by the agenda deadline; moves to the next meeting), `approved`, `rejected`
    # (未通过集体决策: the track ends).
    status: str | None = Field(default=None, max_length=16)
    late_for: str | None = Field(default=None, max_length=64)  # the meeting it missed
    decided_meeting_on: dt.date | None = None  # the governing decision's meeting day
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
    # The filing date (报送日期): intake's receipt date in Asia/Shanghai, or on a replay the
    # business date (REVIEW_CLOCK=business). None: filed with the lead itself.
    filed_on: dt.date | None = None


class Meeting(SQLModel, table=True):
    """A landing review meeting (落地评审会) and its agenda, as the Center announced it."""

    __tablename__ = "review_meeting"

    meeting_id: str = Field(primary_key=True, max_length=64)
    on: dt.date
    agenda: str  # JSON list of project ids


class Decision(SQLModel, table=True):
    """One committee decision per project and meeting: a second one needs a new meeting."""

    __tablename__ = "review_decision"

    project_id: str = Field(primary_key=True, max_length=100)
    meeting_id: str = Field(primary_key=True, max_length=64)
    decision: str = Field(max_length=16)
    event_id: str = Field(max_length=300)


class State(SQLModel, table=True):
    """Small named values: the business date of a replay (REVIEW_CLOCK=business)."""

    __tablename__ = "review_state"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=200)


class Processed(SQLModel, table=True):
    """Every consumed event id, written in the transaction that applied it."""

    __tablename__ = "review_processed"

    event_id: str = Field(primary_key=True, max_length=300)
    subject: str = Field(max_length=100)


class Outbox(OutboxRow, table=True):
    __tablename__ = "review_outbox"


TABLES = (Case, FiledDocument, Meeting, Decision, State, Processed, Outbox)

# Every event claims its id here first, in the transaction that applies it.
INBOX = Inbox(Processed, "event_id")


# Core statements, built once, on the session's connection (same transaction) for the reads
# and the one insert every event makes: building a statement and going through the ORM's
# identity map and unit of work cost more than the SQL itself for an event that changes
# nothing else.
_documents = FiledDocument.__table__  # type: ignore[attr-defined]
_FILE_DOCUMENT = insert(_documents)
_DOCUMENTS_OF = core_select(_documents.c.type, _documents.c.filed_on).where(
    _documents.c.project_id == bindparam("project_id")
)


def case(session: Session, project_id: str) -> Case | None:
    """The project's case, held by the transaction till it ends.

    SQLAlchemy's identity map holds an unchanged row only weakly: each look-up of a case
    nothing had changed yet went to the database again (twice per funds event: 40% of
    review's busy time under the pipeline bench, docs/profiles/review.md)."""
    held: dict[str, Case] = session.info.setdefault(_CASES, {})
    found = held.get(project_id)
    if found is None:
        found = session.get(Case, project_id)
        if found is not None:
            held[project_id] = found
    return found


def add_case(session: Session, new: Case) -> None:
    session.add(new)
    session.info.setdefault(_CASES, {})[new.project_id] = new


_CASES = "review_cases"


def file_document(
    session: Session,
    *,
    project_id: str,
    type: str,
    ref: str,
    event_id: str,
    filed_on: dt.date | None,
) -> None:
    """One filed document, inserted at once (an ORM instance only to insert it cost more than
    the INSERT); the session's pending work goes first, in the order it was added."""
    session.flush()
    session.connection().execute(
        _FILE_DOCUMENT,
        {
            "project_id": project_id,
            "type": type,
            "ref": ref,
            "event_id": event_id,
            "filed_on": filed_on,
        },
    )


def documents_of(
    session: Session, project_id: str, *, filed_by: dt.date | None = None
) -> list[str]:
    """Types filed after the lead (only those filed on or before `filed_by`, when given);
    flush first to see ones added in this session."""
    rows = session.connection().execute(_DOCUMENTS_OF, {"project_id": project_id})
    return [
        type_
        for type_, filed_on in rows.all()
        if filed_by is None or filed_on is None or filed_on <= filed_by
    ]


def business_date(session: Session, unit: str | None = None) -> dt.date | None:
    """The latest day the replayed events reached: of every unit, or of `unit`'s own."""
    key = f"business_date:{unit}" if unit else "business_date"
    row = session.get(State, key)
    return dt.date.fromisoformat(row.value) if row is not None else None


def advance_business_date(session: Session, day: dt.date, unit: str | None = None) -> None:
    keys = ["business_date"] + ([f"business_date:{unit}"] if unit else [])
    for key in keys:
        row = session.get(State, key)
        if row is None:
            session.add(State(key=key, value=day.isoformat()))
        elif dt.date.fromisoformat(row.value) < day:
            row.value = day.isoformat()
            session.add(row)


def vouchers_of(session: Session, project_id: str) -> list[FiledDocument]:
    """The funds vouchers filed for a project (each names its funds record in `ref`)."""
    from sqlmodel import select

    return list(
        session.exec(
            select(FiledDocument).where(
                FiledDocument.project_id == project_id, FiledDocument.type == "funds_voucher"
            )
        ).all()
    )
