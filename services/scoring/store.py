"""Scoring's own tables. Nobody else reads them; other services learn from `score.*` events.

Money is stored as whole fen (分) in BIGINT columns: exact on SQLite and PostgreSQL alike
(SQLite's NUMERIC would turn 10698600.50 into a float), and summable in SQL. Rates keep
their decimal text. `to_fen`/`from_fen` are the only conversions.

The ledger (`scoring_entry`) is append-only: a credit, and if recognition is withdrawn its
reversal, each one row numbered per funds record. `UNIQUE (project_id, funds_id, seq)` is
what makes a funds record count once however many replicas race to credit it: the loser's
transaction fails on the key and, retried, finds the credit already there.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from shared.outbox import OutboxRow

FEN = Decimal("0.01")


def to_fen(amount: Decimal) -> int:
    """Exact: refuses an amount with a fraction of a fen rather than rounding it silently."""
    fen = amount * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"{amount} has a fraction of a fen")
    return int(fen)


def from_fen(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(FEN)


def _big(**kw: object) -> Column:  # type: ignore[type-arg]
    return Column(BigInteger, **kw)  # type: ignore[arg-type]


class Inbox(SQLModel, table=True):
    """Every message scoring has applied, once: a redelivery finds its key and changes nothing."""

    __tablename__ = "scoring_inbox"

    key: str = Field(primary_key=True, max_length=400)
    subject: str = Field(max_length=100)
    stream_seq: int | None = Field(default=None, sa_column=_big(nullable=True))
    outcome: str = Field(max_length=40)
    received_at: dt.datetime


class Project(SQLModel, table=True):
    """What scoring knows of a project: its lead, sponsor leader and recognition (认定)."""

    __tablename__ = "scoring_project"

    project_id: str = Field(primary_key=True, max_length=100)
    lead: str | None = None  # the Lead payload, JSON; None until project.lead arrives
    attracting_unit: str | None = Field(default=None, index=True, max_length=32)
    landing_area: str | None = Field(default=None, max_length=32)
    sponsor_leader: str | None = Field(default=None, max_length=32)  # 包保县级领导
    sponsor_seq: int = Field(default=0, sa_column=_big(nullable=False, default=0))
    recognized: bool | None = None  # None: review has not said yet
    recognition: str | None = None  # the Recognition event, JSON
    recognition_seq: int = Field(default=0, sa_column=_big(nullable=False, default=0))


class FundsRecord(SQLModel, table=True):
    """到位资金: one funds-in-place record and where it stands (held or credited)."""

    __tablename__ = "scoring_funds"
    __table_args__ = (
        UniqueConstraint("project_id", "funds_id", name="uq_scoring_funds"),
        Index("ix_scoring_funds_hold", "state", "arrived_on"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    funds_id: str = Field(max_length=64)
    amount_fen: int = Field(sa_column=_big(nullable=False))  # in `currency`
    currency: str = Field(max_length=3)
    arrived_on: dt.date
    form: str = Field(max_length=16)
    payload: str  # the Funds payload, JSON
    event_id: str = Field(max_length=300)
    state: str = Field(default="new", max_length=16)  # new | held | credited
    hold_reason: str | None = None
    holds: int = 0  # held events emitted: numbers their Nats-Msg-Id
    entries: int = 0  # ledger entries written: the next one is entries + 1


class Rate(SQLModel, table=True):
    """The Center's rate of one currency on one day: CNY per unit.

    A row without a rate is a record waiting for it: the lock both sides take (see
    `lock_rate`), so funds and that day's rates arriving at once never miss each other.
    """

    __tablename__ = "scoring_rate"

    on: dt.date = Field(primary_key=True)
    currency: str = Field(primary_key=True, max_length=3)
    cny_per_unit: str | None = Field(default=None, max_length=40)  # decimal text, exact
    stream_seq: int = Field(default=0, sa_column=_big(nullable=False, default=0))

    @property
    def rate(self) -> Decimal | None:
        return Decimal(self.cny_per_unit) if self.cny_per_unit is not None else None


class Entry(SQLModel, table=True):
    """The ledger: one credit or reversal of one funds record, with the decision behind it."""

    __tablename__ = "scoring_entry"
    __table_args__ = (UniqueConstraint("project_id", "funds_id", "seq", name="uq_scoring_entry"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    funds_id: str = Field(max_length=64)
    seq: int  # 1, 2, ... per funds record
    kind: str = Field(max_length=10)  # credit | reversal
    year: int = Field(index=True)
    quarter: int
    amount_rmb_fen: int = Field(sa_column=_big(nullable=False))  # negative on a reversal
    points_fen: int = Field(sa_column=_big(nullable=False))  # negative on a reversal
    rate: str = Field(max_length=40)
    multiplier: str = Field(max_length=40)
    matched: str  # JSON list of rule ids
    deciding_rule: str | None = Field(default=None, max_length=64)
    credited_to: str  # JSON list of subject codes
    ruleset_version: str = Field(max_length=40)
    explanation: str  # the Explanation, JSON
    reason: str | None = None  # why a reversal
    created_at: dt.datetime


class CreditLine(SQLModel, table=True):
    """An entry's points as each credited subject (计分对象) receives them: what the scoreboard sums."""

    __tablename__ = "scoring_credit_line"
    __table_args__ = (Index("ix_scoring_line_period", "year", "quarter", "subject"),)

    id: int | None = Field(default=None, primary_key=True)
    entry_id: int = Field(index=True)
    project_id: str = Field(max_length=100)
    subject: str = Field(max_length=32)
    year: int
    quarter: int
    amount_rmb_fen: int = Field(sa_column=_big(nullable=False))
    points_fen: int = Field(sa_column=_big(nullable=False))


class Signing(SQLModel, table=True):
    """A `signed` milestone (签约): counted against the quarterly targets when ≥ 100 million yuan."""

    __tablename__ = "scoring_signing"

    project_id: str = Field(primary_key=True, max_length=100)
    signed_on: dt.date = Field(index=True)
    amount_fen: int = Field(sa_column=_big(nullable=False))
    stream_seq: int = Field(default=0, sa_column=_big(nullable=False, default=0))


class Outbox(OutboxRow, table=True):
    """Events to emit, written in the same transaction as the ledger rows they announce;
    `source` is the inbox key of the message that caused them."""

    __tablename__ = "scoring_outbox"


TABLES = (Inbox, Project, FundsRecord, Rate, Entry, CreditLine, Signing, Outbox)


# --- queries ---------------------------------------------------------------------------------


def find_inbox(session: Session, key: str) -> Inbox | None:
    return session.get(Inbox, key)


def lock_project(session: Session, project_id: str) -> Project:
    """The project's row, created if new, locked until commit (PostgreSQL: FOR UPDATE).

    Every event about a project takes this lock before it reads or settles anything, so two
    replicas (or scoring's two consumers) handling, say, a funds record and the project's
    recognition at the same moment take turns, and the second sees what the first did. On
    SQLite the write lock taken by the inbox insert at the start of each message does the same.
    """
    if session.get(Project, project_id) is None:
        session.add(Project(project_id=project_id))
        session.flush()  # two creating it at once: one fails on the key and is retried
    row = session.exec(
        select(Project).where(Project.project_id == project_id).with_for_update()
    ).one()
    session.refresh(row)  # the values as of the lock, not as first read
    return row


def funds_of(session: Session, project_id: str, *, lock: bool = False) -> list[FundsRecord]:
    query = (
        select(FundsRecord).where(FundsRecord.project_id == project_id).order_by(FundsRecord.id)  # type: ignore[arg-type]
    )
    if lock:
        query = query.with_for_update()
    return list(session.exec(query).all())


def funds_record(
    session: Session, project_id: str, funds_id: str, *, lock: bool = False
) -> FundsRecord | None:
    query = select(FundsRecord).where(
        FundsRecord.project_id == project_id, FundsRecord.funds_id == funds_id
    )
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def held_on(
    session: Session, day: dt.date, currencies: list[str], *, lock: bool = False
) -> list[FundsRecord]:
    query = (
        select(FundsRecord)
        .where(
            FundsRecord.state == "held",
            FundsRecord.arrived_on == day,
            FundsRecord.currency.in_(currencies),  # type: ignore[attr-defined]
        )
        .order_by(FundsRecord.id)  # type: ignore[arg-type]
    )
    if lock:
        query = query.with_for_update()
    return list(session.exec(query).all())


def held_because(session: Session, words: str) -> list[FundsRecord]:
    """Held records whose reason contains `words`."""
    query = (
        select(FundsRecord)
        .where(FundsRecord.state == "held", FundsRecord.hold_reason.contains(words))  # type: ignore[union-attr]
        .order_by(FundsRecord.id)  # type: ignore[arg-type]
    )
    return list(session.exec(query).all())


def lock_rate(session: Session, day: dt.date, currency: str) -> Rate:
    """The (day, currency) rate row, created empty if new, locked until commit."""
    if session.get(Rate, (day, currency)) is None:
        session.add(Rate(on=day, currency=currency))
        session.flush()  # created by another at once: one fails on the key and is retried
    row = session.exec(
        select(Rate).where(Rate.on == day, Rate.currency == currency).with_for_update()
    ).one()
    session.refresh(row)
    return row


def active_credit(session: Session, record: FundsRecord) -> Entry | None:
    """The credit standing for a record (its latest entry, when that is a credit)."""
    if record.state != "credited" or record.entries == 0:
        return None
    return session.exec(
        select(Entry).where(
            Entry.project_id == record.project_id,
            Entry.funds_id == record.funds_id,
            Entry.seq == record.entries,
        )
    ).first()
