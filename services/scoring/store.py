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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint, bindparam, insert, update
from sqlalchemy import select as core_select
from sqlmodel import Field, Session, SQLModel, select

from shared import inbox
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
    withdrawn: str | None = None  # 撤回: why the lead was withdrawn; nothing of it counts


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
    state: str = Field(default="new", max_length=16)  # new | held | credited | withdrawn
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


class Milestone(SQLModel, table=True):
    """The first time a project reached a milestone other than `signed` (registered 注册,
    started 开工, ...): what the rates (履约率、落地率) and new starts count."""

    __tablename__ = "scoring_milestone"

    project_id: str = Field(primary_key=True, max_length=100)
    milestone: str = Field(primary_key=True, max_length=32)
    on: dt.date


class RatesYear(SQLModel, table=True):
    """The last score.rates revision published for an assessment year, and what it said
    county- and unit-wide (a digest): the next revision goes out only if that changes."""

    __tablename__ = "scoring_rates_year"

    year: int = Field(primary_key=True)
    revision: int = 0
    digest: str = Field(default="", max_length=64)


class RatesProject(SQLModel, table=True):
    """A project's figures as last published in score.rates: the next revision carries
    only the projects whose figures differ."""

    __tablename__ = "scoring_rates_project"

    year: int = Field(primary_key=True)
    project_id: str = Field(primary_key=True, max_length=100)
    figures: str  # RateFigures, JSON


class RecordVersion(SQLModel, table=True):
    """The latest correction (更正) or withdrawal (撤回) of a record, by intake's version: one
    that overtakes the record itself (replicas take turns) is applied when the record comes."""

    __tablename__ = "scoring_record_version"

    target: str = Field(primary_key=True, max_length=200)  # lead:P, funds:P:F, milestone:P:M
    version: int
    payload: str | None = None  # the record as corrected, JSON; None: withdrawn
    reason: str | None = None


class Outbox(OutboxRow, table=True):
    """Events to emit, written in the same transaction as the ledger rows they announce;
    `source` is the inbox key of the message that caused them."""

    __tablename__ = "scoring_outbox"


TABLES = (
    Inbox,
    Project,
    FundsRecord,
    Rate,
    Entry,
    CreditLine,
    Signing,
    Milestone,
    RatesYear,
    RatesProject,
    RecordVersion,
    Outbox,
)


# Statements every message runs, built once. Inserts of new rows (inbox, funds record,
# ledger, outbox) and the existence checks go through Core on the session's connection (same
# transaction): for one small row each, the ORM's unit of work cost several times the SQL.
# Rows that are read and then changed (project, held records, rates) stay ORM objects.
_inbox = Inbox.__table__  # type: ignore[attr-defined]
_funds = FundsRecord.__table__  # type: ignore[attr-defined]
# Every message claims its key here first, in the transaction that applies it.
INBOX = inbox.Inbox(_inbox, "key")
_INBOX_OUTCOME = update(_inbox).where(_inbox.c.key == bindparam("k"))
_ENTRY_ADD = insert(Entry.__table__)  # type: ignore[attr-defined]
_FUNDS_ADD = insert(_funds)
_OUTBOX_ADD = insert(Outbox.__table__)  # type: ignore[attr-defined]
_LINES_ADD = insert(CreditLine.__table__)  # type: ignore[attr-defined]
_FUNDS_LOCKED = (
    core_select(_funds.c.id)
    .where(_funds.c.project_id == bindparam("p"), _funds.c.funds_id == bindparam("f"))
    .with_for_update()
)
_rate = Rate.__table__  # type: ignore[attr-defined]
_RATE_LOCKED = (
    core_select(_rate.c.cny_per_unit, _rate.c.stream_seq)
    .where(_rate.c.on == bindparam("d"), _rate.c.currency == bindparam("c"))
    .with_for_update()
)
_RATE_ADD = insert(_rate)
_RATE_SET = (
    update(_rate)
    .where(_rate.c.on == bindparam("d"), _rate.c.currency == bindparam("c"))
    .values(cny_per_unit=bindparam("r"), stream_seq=bindparam("s"))
)
_version = RecordVersion.__table__  # type: ignore[attr-defined]
_VERSION_OF = core_select(_version.c.payload, _version.c.reason).where(
    _version.c.target == bindparam("t")
)
_entry = Entry.__table__  # type: ignore[attr-defined]
_ENTRY_OF = core_select(_entry).where(
    _entry.c.project_id == bindparam("p"),
    _entry.c.funds_id == bindparam("f"),
    _entry.c.seq == bindparam("s"),
)
# populate_existing: the values as of the lock, also for a row this session read before.
_PROJECT_LOCKED = (
    select(Project)
    .where(Project.project_id == bindparam("p"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


# --- queries ---------------------------------------------------------------------------------


def set_inbox_outcome(session: Session, key: str, outcome: str) -> None:
    session.connection().execute(_INBOX_OUTCOME, {"k": key, "outcome": outcome})


def add_entry(session: Session, values: dict[str, Any]) -> int:
    """A ledger row, inserted at once: a replica that wrote the same seq first makes this fail.
    Returns its id."""
    result = session.connection().execute(_ENTRY_ADD, values)
    (entry_id,) = result.inserted_primary_key  # type: ignore[misc]
    return int(entry_id)


def add_funds_record(session: Session, record: FundsRecord) -> None:
    """Insert a new record as it stands (not added to the session; its id stays None)."""
    row = {
        "project_id": record.project_id,
        "funds_id": record.funds_id,
        "amount_fen": record.amount_fen,
        "currency": record.currency,
        "arrived_on": record.arrived_on,
        "form": record.form,
        "payload": record.payload,
        "event_id": record.event_id,
        "state": record.state,
        "hold_reason": record.hold_reason,
        "holds": record.holds,
        "entries": record.entries,
    }
    session.connection().execute(_FUNDS_ADD, row)


def add_outbox(session: Session, row: Outbox) -> None:
    """Insert an event to emit; `row` itself is only handed to the publisher."""
    values = {
        "msg_id": row.msg_id,
        "source": row.source,
        "subject": row.subject,
        "body": row.body,
        "published_at": row.published_at,
    }
    session.connection().execute(_OUTBOX_ADD, values)


def add_credit_lines(session: Session, lines: list[dict[str, Any]]) -> None:
    if lines:
        session.connection().execute(_LINES_ADD, lines)


def lock_project(session: Session, project_id: str) -> Project:
    """The project's row, created if new, locked until commit (PostgreSQL: FOR UPDATE).

    Every event about a project takes this lock before it reads or settles anything, so two
    replicas (or scoring's two consumers) handling, say, a funds record and the project's
    recognition at the same moment take turns, and the second sees what the first did. On
    SQLite the write lock taken by the inbox insert at the start of each message does the same.
    """
    row = session.execute(_PROJECT_LOCKED, {"p": project_id}).scalars().first()
    if row is not None:
        return row  # type: ignore[no-any-return]
    session.add(Project(project_id=project_id))
    session.flush()  # two creating it at once: one fails on the key and is retried
    return session.execute(_PROJECT_LOCKED, {"p": project_id}).scalars().one()  # type: ignore[no-any-return]


def funds_of(session: Session, project_id: str, *, lock: bool = False) -> list[FundsRecord]:
    query = (
        select(FundsRecord).where(FundsRecord.project_id == project_id).order_by(FundsRecord.id)  # type: ignore[arg-type]
    )
    if lock:
        query = query.with_for_update()
    return list(session.exec(query).all())


def funds_record_exists(session: Session, project_id: str, funds_id: str) -> bool:
    """Whether the record is stored, locking it if so (PostgreSQL: FOR UPDATE)."""
    found = session.connection().execute(_FUNDS_LOCKED, {"p": project_id, "f": funds_id})
    return found.first() is not None


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


@dataclass
class LockedRate:
    """A (day, currency) rate row as this transaction holds it locked."""

    on: dt.date
    currency: str
    cny_per_unit: str | None
    stream_seq: int

    @property
    def rate(self) -> Decimal | None:
        return Decimal(self.cny_per_unit) if self.cny_per_unit is not None else None


def _locked_rates(session: Session) -> dict[tuple[dt.date, str], LockedRate]:
    """The rate rows this transaction has locked. A lock holds until commit, so a row read
    under it cannot change meanwhile but by this transaction (which updates the entry): read
    once per transaction, not once per record. Keyed by the transaction, so a new one
    (or a rolled-back one) starts empty."""
    session.connection()  # begins the transaction if none yet: the key is never None
    txn = session.get_transaction()
    held = session.info.get("scoring_locked_rates")
    if held is None or held[0] is not txn:
        held = (txn, {})
        session.info["scoring_locked_rates"] = held
    return held[1]  # type: ignore[no-any-return]


def lock_rate(session: Session, day: dt.date, currency: str) -> LockedRate:
    """The (day, currency) rate row, created empty if new, locked until commit."""
    locked = _locked_rates(session)
    row = locked.get((day, currency))
    if row is not None:
        return row
    conn = session.connection()
    found = conn.execute(_RATE_LOCKED, {"d": day, "c": currency}).first()
    if found is None:
        # Created by another at once: one fails on the key and is retried. The inserted row
        # is this transaction's until commit (PostgreSQL: others' FOR UPDATE waits).
        conn.execute(_RATE_ADD, {"on": day, "currency": currency, "stream_seq": 0})
        row = LockedRate(day, currency, None, 0)
    else:
        row = LockedRate(day, currency, found.cny_per_unit, found.stream_seq)
    locked[(day, currency)] = row
    return row


def set_rate(session: Session, row: LockedRate, cny_per_unit: str, stream_seq: int) -> None:
    """Store a rate on a row `lock_rate` returned (and keep the transaction's copy in step)."""
    session.connection().execute(
        _RATE_SET, {"d": row.on, "c": row.currency, "r": cny_per_unit, "s": stream_seq}
    )
    row.cny_per_unit, row.stream_seq = cny_per_unit, stream_seq


def record_version(session: Session, target: str) -> Any | None:
    """The latest correction or withdrawal of `target` (payload, reason), or None. Core: it
    is read far more often than written, and the writer (record._amendment) flushes."""
    return session.connection().execute(_VERSION_OF, {"t": target}).first()


def active_credit(session: Session, record: FundsRecord) -> Any | None:
    """The credit standing for a record (its latest entry, when that is a credit): the
    entry's columns as a row (entries are only ever inserted, through Core)."""
    if record.state != "credited" or record.entries == 0:
        return None
    found = session.connection().execute(
        _ENTRY_OF, {"p": record.project_id, "f": record.funds_id, "s": record.entries}
    )
    return found.first()
