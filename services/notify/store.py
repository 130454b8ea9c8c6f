"""Notify's own tables: who to tell (contacts), what it has learnt (facts), what it sends (outbox).

Nobody else reads them. Facts come only from the events notify consumes (`project.*`,
`review.*`, `score.*`); every fact keeps its business date, so a report or a time trigger
can be evaluated "as of" any day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    LargeBinary,
    Row,
    Text,
    UniqueConstraint,
    case,
    false,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel, select

from shared.inbox import Inbox

# --- the directory of recipients (deploy/contacts.yaml, `investflow contacts load`) ---------


class Contact(SQLModel, table=True):
    """A unit, county leader or the Center, and the language it reads."""

    __tablename__ = "notify_contact"

    code: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=16)  # unit | leader
    name: str
    language: str = Field(default="zh", max_length=8)


class Address(SQLModel, table=True):
    """One way to reach a contact: email, webhook, dingtalk or wecom (one per channel)."""

    __tablename__ = "notify_address"
    __table_args__ = (UniqueConstraint("code", "channel", name="uq_notify_address"),)

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(index=True, max_length=32)
    channel: str = Field(max_length=16)
    target: str  # JSON: {"to": [...]} | {"url": ..., "secret": ...}


# --- facts learnt from events ---------------------------------------------------------------


class Project(SQLModel, table=True):
    __tablename__ = "notify_project"

    project_id: str = Field(primary_key=True, max_length=100)
    title: str
    attracting_unit: str = Field(max_length=32)  # 招商单位
    landing_area: str = Field(max_length=32)
    kind: str = Field(max_length=32)
    planned_investment: str
    reported_on: dt.date
    outcome: str | None = Field(default=None, max_length=16)  # accepted | terminated
    track: str | None = Field(default=None, max_length=16)
    reasons: str = "[]"  # JSON: terminate rule ids
    decision: str | None = Field(default=None, max_length=16)  # approved | rejected
    meeting_id: str | None = Field(default=None, max_length=64)
    decided_on: dt.date | None = None
    sponsor_leader: str | None = Field(default=None, index=True, max_length=32)  # 包保县级领导
    responsible_leader: str | None = Field(default=None, max_length=32)
    hq: str = "{}"  # JSON: {commander, members}


class Meeting(SQLModel, table=True):
    __tablename__ = "notify_meeting"

    meeting_id: str = Field(primary_key=True, max_length=64)
    on: dt.date


class MilestoneFact(SQLModel, table=True):
    __tablename__ = "notify_milestone"
    __table_args__ = (
        UniqueConstraint("project_id", "milestone", "on", name="uq_notify_milestone"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    milestone: str = Field(max_length=32)
    on: dt.date
    amount: str | None = None


class VisitFact(SQLModel, table=True):
    """包保县级领导现场调度."""

    __tablename__ = "notify_visit"
    __table_args__ = (UniqueConstraint("project_id", "leader", "on", name="uq_notify_visit"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    leader: str = Field(max_length=32)
    on: dt.date


class FundsFact(SQLModel, table=True):
    """到位资金 as reported."""

    __tablename__ = "notify_funds"
    __table_args__ = (UniqueConstraint("project_id", "funds_id", name="uq_notify_funds"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    funds_id: str = Field(max_length=64)
    amount: str
    currency: str = Field(max_length=3)
    arrived_on: dt.date


class RateFact(SQLModel, table=True):
    __tablename__ = "notify_rate"
    __table_args__ = (UniqueConstraint("on", "currency", name="uq_notify_rate"),)

    id: int | None = Field(default=None, primary_key=True)
    on: dt.date
    currency: str = Field(max_length=3)
    rate: str  # CNY per unit


class DocumentFact(SQLModel, table=True):
    __tablename__ = "notify_document"
    __table_args__ = (UniqueConstraint("project_id", "type", name="uq_notify_document"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    type: str = Field(max_length=40)


class MaterialsFact(SQLModel, table=True):
    """The latest `review.materials` of a project."""

    __tablename__ = "notify_materials"

    project_id: str = Field(primary_key=True, max_length=100)
    complete: bool
    missing: str = "[]"  # JSON
    deadline: dt.date | None = None


class CreditFact(SQLModel, table=True):
    """`score.credited`, for the scoreboard (we never read scoring's tables)."""

    __tablename__ = "notify_credit"
    __table_args__ = (UniqueConstraint("project_id", "funds_id", name="uq_notify_credit"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    funds_id: str = Field(max_length=64)
    year: int
    quarter: int
    points: str
    amount_rmb: str
    credited_to: str = "[]"  # JSON


class State(SQLModel, table=True):
    """Small named values: the business date, the last day the scheduler evaluated."""

    __tablename__ = "notify_state"

    key: str = Field(primary_key=True, max_length=64)
    value: str


class Processed(SQLModel, table=True):
    """Every consumed message id, written in the transaction that applied it."""

    __tablename__ = "notify_processed"

    msg_id: str = Field(primary_key=True, max_length=300)


# Every message claims its id here first, in the transaction that applies it.
INBOX = Inbox(Processed, "msg_id")


# --- the outbox of notifications ------------------------------------------------------------


# Final (sent or failed) and not yet announced: a partial index of its own, so only those
# rows are read. Given the whole table, PostgreSQL's planner guessed them spread over the
# sent rows and read those; SQLite's took any index on status (without statistics). Hence
# literal (both see the index's condition in the query's) and NOT IN (no other index fits).
_UNANNOUNCED = text("status NOT IN ('pending', 'sending') AND outcome_published_at IS NULL")


class Notification(SQLModel, table=True):
    """One message to one recipient on one channel, for one cause. Never two for the same key."""

    __tablename__ = "notify_notification"
    __table_args__ = (
        UniqueConstraint("cause", "recipient", "channel", name="uq_notify_notification"),
        # The dispatcher's two reads, each an index range in the order it wants: what is due
        # (claim_due) and what is sent but not announced (unannounced). On `status` alone both
        # read every row of a status: a backlog made each claim cost the backlog.
        Index("ix_notify_notification_due", "status", "next_attempt_at", "id"),
        Index(
            "ix_notify_notification_unannounced",
            "id",
            sqlite_where=_UNANNOUNCED,
            postgresql_where=_UNANNOUNCED,
        ),
        {"info": {"retired_indexes": ("ix_notify_notification_status",)}},
    )

    id: int | None = Field(default=None, primary_key=True)
    cause: str = Field(index=True, max_length=300)  # e.g. materials_missing:<project>:<deadline>
    kind: str = Field(index=True, max_length=40)  # the template: lead_assigned, visit_overdue, ...
    project_id: str | None = Field(default=None, index=True, max_length=100)
    recipient: str = Field(max_length=32)
    channel: str = Field(max_length=16)  # email | webhook | dingtalk | wecom | none
    target: str = "{}"  # JSON copy of the address at planning time
    language: str = Field(default="zh", max_length=8)
    subject: str
    body: str  # markdown, also the plain-text part
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    image: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    data: str = "{}"  # JSON: the facts the message states, for webhooks
    # pending|sending|sent|failed; indexed first in the two indexes above. Not on its own:
    # SQLite's planner, without statistics, took that one and read every row of a status.
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: dt.datetime
    lease_until: dt.datetime | None = None
    last_error: str | None = None
    created_at: dt.datetime
    sent_at: dt.datetime | None = None
    outcome_published_at: dt.datetime | None = None


TABLES = (
    Contact,
    Address,
    Project,
    Meeting,
    MilestoneFact,
    VisitFact,
    FundsFact,
    RateFact,
    DocumentFact,
    MaterialsFact,
    CreditFact,
    State,
    Processed,
    Notification,
)


_INSERT_IGNORE: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def insert_ignore(
    session: Session, table: type[SQLModel], values: list[dict[str, Any]], keys: list[str]
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING on the unique `keys`: the race-proof "only once"."""
    if not values:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    if len(values) > 1:
        stmt = insert(table.__table__).values(values).on_conflict_do_nothing(index_elements=keys)  # type: ignore[attr-defined]
        return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
    # One row (every event, every notification): the same statement object each time with
    # the row as parameters, so SQLAlchemy compiles it once instead of once per row.
    cache = (dialect, table.__tablename__, tuple(keys))  # type: ignore[attr-defined]
    stmt = _INSERT_IGNORE.get(cache)
    if stmt is None:
        stmt = insert(table.__table__).on_conflict_do_nothing(index_elements=keys)  # type: ignore[attr-defined]
        _INSERT_IGNORE[cache] = stmt
    return int(session.execute(stmt, values[0]).rowcount or 0)  # type: ignore[attr-defined]


def insert_new(
    session: Session,
    table: type[SQLModel],
    rows: list[dict[str, Any]],
    keys: list[str],
    column: str,
) -> list[Any]:
    """`insert_ignore` for many rows in one executemany (the statement compiled once);
    returns `column` of the rows actually inserted (RETURNING: executemany has no reliable
    rowcount on PostgreSQL). Every row must name the same columns."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    cache = (dialect, table.__tablename__, tuple(keys), column)  # type: ignore[attr-defined]
    stmt = _INSERT_NEW.get(cache)
    if stmt is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        t = table.__table__  # type: ignore[attr-defined]
        stmt = insert(t).on_conflict_do_nothing(index_elements=keys).returning(t.c[column])
        _INSERT_NEW[cache] = stmt
    return list(session.execute(stmt, rows).scalars())


_INSERT_NEW: dict[tuple[str, str, tuple[str, ...], str], Any] = {}

KEPT = "notify.kept"


def kept(session: Session, model: type[SQLModel], key: str) -> Any:
    """`session.get`, the row then held for the rest of the transaction. The identity map
    holds unchanged rows weakly, so without this every event of a run would read the same
    project or state row from the database again."""
    rows: dict[tuple[type[SQLModel], str], Any] = session.info.setdefault(KEPT, {})
    row = rows.get((model, key))
    if row is None:
        row = session.get(model, key)
        if row is not None:
            rows[(model, key)] = row
    return row


def keep(session: Session, row: SQLModel, key: str) -> None:
    """Add a new row to the session and hold it (see `kept`)."""
    session.add(row)
    session.info.setdefault(KEPT, {})[(type(row), key)] = row


def get_state(session: Session, key: str) -> str | None:
    row = kept(session, State, key)
    return row.value if row else None


def set_state(session: Session, key: str, value: str) -> None:
    row = kept(session, State, key)
    if row is None:
        keep(session, State(key=key, value=value), key)
        return
    row.value = value
    session.add(row)


def advance_date(session: Session, key: str, day: dt.date) -> None:
    """Keep the latest date under `key` (the business clock only moves forward)."""
    current = get_state(session, key)
    if current is None or dt.date.fromisoformat(current) < day:
        set_state(session, key, day.isoformat())


KEYS_PER_QUERY = 500  # causes per IN (...): a statement takes so many (PostgreSQL 65,535)


def existing_keys(session: Session, causes: list[str]) -> set[tuple[str, str, str]]:
    """(cause, recipient, channel) of the notifications already planned for `causes`, read
    KEYS_PER_QUERY causes at a time: a province's daily time triggers are 100,000s of causes
    in one plan (the 100,000-lead soak: "too many SQL variables", every tick)."""
    unique = sorted(set(causes))
    found: set[tuple[str, str, str]] = set()
    for i in range(0, len(unique), KEYS_PER_QUERY):
        rows = session.exec(
            select(Notification.cause, Notification.recipient, Notification.channel).where(
                Notification.cause.in_(unique[i : i + KEYS_PER_QUERY])  # type: ignore[attr-defined]
            )
        ).all()
        found.update((c, r, ch) for c, r, ch in rows)
    return found


def _due(now: dt.datetime) -> tuple[Any, Any]:
    """Pending and due, or claimed by a dispatcher whose lease ran out (it died mid-send)."""
    N = Notification
    return (
        (N.status == "pending") & (N.next_attempt_at <= now),  # type: ignore[operator]
        (N.status == "sending") & (N.lease_until < now),  # type: ignore[operator]
    )


def claim_due(
    session: Session,
    now: dt.datetime,
    lease: dt.timedelta,
    limit: int,
    *,
    skip: Collection[int] = (),
    note_id: int | None = None,
) -> list[Row[Any]]:
    """Take up to `limit` due notifications (none of `skip`, or just `note_id`) for sending,
    the longest due first; returns their rows in that order. Another dispatcher's claim
    makes a row not due, and the update checks that again on the row as it is then (SQLite
    writes one at a time; PostgreSQL re-evaluates it on a row changed by a concurrent claim,
    and SKIP LOCKED lets replicas take disjoint rows without waiting). The due rows are found
    by a plain read first, so an idle poll takes no write lock and never waits behind a
    writer with a stale `now`.

    Each kind of due row is read on its own, in the order of ix_notify_notification_due,
    so the read stops after `limit` rows: a claim costs the same behind a backlog of any
    size (tests/notify/test_claim_scale.py); one OR over both sorted every due row."""
    N = Notification
    table = N.__table__  # type: ignore[attr-defined]
    found: list[tuple[dt.datetime, int]] = []
    for due in _due(now):
        pick = select(N.next_attempt_at, N.id).where(due)
        if skip:
            pick = pick.where(N.id.not_in(list(skip)))  # type: ignore[union-attr]
        if note_id is not None:
            pick = pick.where(N.id == note_id)
        pick = pick.order_by(N.next_attempt_at, N.id).limit(limit)  # type: ignore[arg-type]
        found += list(session.exec(pick.with_for_update(skip_locked=True)).all())
    ids = [note for _, note in sorted(found)[:limit]]
    if not ids:
        return []
    # Due again, row by row, as a CASE: given the OR itself, SQLite's planner walks the
    # status index instead of looking up the few ids (measured: 271,000 steps for 8 rows).
    still_due = case(
        (table.c.status == "pending", table.c.next_attempt_at <= now),
        (table.c.status == "sending", table.c.lease_until < now),
        else_=false(),
    )
    stmt = (
        update(table)
        .where(table.c.id.in_(ids), still_due)
        .values(status="sending", lease_until=now + lease)
        .returning(*table.c)
    )
    order = {note: k for k, note in enumerate(ids)}
    return sorted(session.execute(stmt).all(), key=lambda row: order[row.id])


def unannounced(session: Session, limit: int = 500) -> list[Row[Any]]:
    """Sent or failed for good, and not yet announced (notify.sent / notify.failed), by id:
    read from ix_notify_notification_unannounced, never the sent rows."""
    N = Notification
    query = (
        select(  # type: ignore[call-overload]
            N.id,
            N.project_id,
            N.cause,
            N.recipient,
            N.channel,
            N.attempts,
            N.status,
            N.last_error,
        )
        .where(_UNANNOUNCED)
        .order_by(N.id)
        .limit(limit)
    )
    return list(session.exec(query).all())
