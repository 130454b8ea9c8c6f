"""The board's own tables (看板读模型): filled only from the events it consumes.

Nobody else reads them and the board reads no other service's tables. Every stored event
keeps its stream and sequence (the unique key that makes a redelivery change nothing) and
its business date, so the timeline and "as of" views need no other source.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class BoardEvent(SQLModel, table=True):
    """Every consumed event, as received: the project page's timeline."""

    __tablename__ = "board_event"
    __table_args__ = (UniqueConstraint("stream", "seq", name="uq_board_event"),)

    id: int | None = Field(default=None, primary_key=True)
    stream: str = Field(max_length=16)
    seq: int
    subject: str = Field(max_length=100)
    project_id: str | None = Field(default=None, index=True, max_length=100)
    day: dt.date | None = None  # the business date the event states, if any
    body: str = Field(sa_column=Column(Text, nullable=False))  # the JSON as published


class BoardProject(SQLModel, table=True):
    """One row per project: what the lists, counts and lights read."""

    __tablename__ = "board_project"
    __table_args__ = (
        Index("ix_board_project_unit_stage", "attracting_unit", "stage"),
        Index("ix_board_project_reported", "reported_on"),
        Index("ix_board_project_signed", "signed_on", "signed_fen"),  # the quarter's signings
    )

    project_id: str = Field(primary_key=True, max_length=100)
    title: str = ""
    attracting_unit: str = Field(default="", index=True, max_length=32)  # 招商单位
    landing_area: str = Field(default="", index=True, max_length=32)  # 落地区域
    kind: str = Field(default="", max_length=32)
    industry: str = Field(default="", max_length=64)
    land: str = Field(default="", max_length=16)
    investor: str = ""
    planned_investment: str = "0"
    reported_on: dt.date | None = None
    stage: str = Field(default="reported", index=True, max_length=16)
    track: str | None = Field(default=None, max_length=16)
    outcome: str | None = Field(default=None, max_length=16)  # screening: accepted | terminated
    reasons: str = "[]"  # JSON: the rule ids that terminated it
    decision: str | None = Field(default=None, max_length=16)  # approved | rejected
    meeting_id: str | None = Field(default=None, max_length=64)
    decided_on: dt.date | None = None
    sponsor_leader: str | None = Field(default=None, index=True, max_length=32)  # 包保县级领导
    responsible_leader: str | None = Field(default=None, max_length=32)
    hq_commander: str | None = Field(default=None, max_length=32)  # 项目指挥部
    hq_members: str = "[]"
    signed_on: dt.date | None = Field(default=None, index=True)
    signed_amount: str | None = None
    # The same in fen, for SQL sums and thresholds; 64-bit: 100 million yuan is 10^10 fen.
    signed_fen: int | None = Field(default=None, sa_column=Column(BigInteger))
    started_on: dt.date | None = None
    completed_on: dt.date | None = None
    land_assigned_on: dt.date | None = None
    waiting_land_latest: dt.date | None = None  # latest 等待土地指标 milestone
    lacking_funds_latest: dt.date | None = None  # latest 缺资金 milestone
    waiting_land_since: dt.date | None = None  # ... while no land/start/completion followed it
    lacking_funds_since: dt.date | None = None  # ... while no start, completion or funds followed
    last_visit: dt.date | None = None
    # max(decided_on, last_visit) for a sponsored project: the day the visit clock counts from.
    visit_since: dt.date | None = Field(default=None, index=True)
    first_funds_on: dt.date | None = None
    last_funds_on: dt.date | None = None
    materials_complete: bool | None = None
    materials_missing: str = "[]"
    materials_deadline: dt.date | None = None
    recognized: bool | None = None
    duplicate_of: str | None = Field(default=None, max_length=100)
    # 撤回: the lead was withdrawn (project.withdrawal), with why; the stage is `withdrawn`.
    withdrawn: bool = False
    withdrawn_reason: str | None = None
    # The first day the light turns yellow and red (readmodel.light_dates): the light on any
    # day is two indexed comparisons. Recomputed when a threshold changes (ingest.relight).
    yellow_on: dt.date | None = Field(default=None, index=True)
    red_on: dt.date | None = Field(default=None, index=True)
    documents: str = "[]"  # JSON: document types filed
    events: int = 0


class BoardMeeting(SQLModel, table=True):
    __tablename__ = "board_meeting"

    meeting_id: str = Field(primary_key=True, max_length=64)
    on: dt.date
    agenda: str = "[]"


class BoardFunds(SQLModel, table=True):
    """One funds-in-place record (到位资金) and where scoring left it."""

    __tablename__ = "board_funds"
    __table_args__ = (Index("ix_board_funds_unit_month", "unit", "month"),)

    project_id: str = Field(primary_key=True, max_length=100)
    funds_id: str = Field(primary_key=True, max_length=64)
    unit: str = Field(default="", max_length=32)  # the project's attracting unit
    amount: str = "0"
    currency: str = Field(default="CNY", max_length=3)
    arrived_on: dt.date | None = None
    month: str = Field(default="", max_length=7)  # YYYY-MM of arrival
    state: str = Field(
        default="arrived", index=True, max_length=16
    )  # arrived | credited | held | reversed
    amount_rmb: str | None = None  # yuan: the amount for CNY, scoring's conversion otherwise
    rmb_fen: int | None = Field(default=None, sa_column=Column(BigInteger))  # fen (分), summed
    points: str | None = None
    multiplier: str | None = None
    hold_reason: str | None = None
    credited_to: str = "[]"
    # 撤回: the record (or its project's lead) was withdrawn: it no longer counts, whatever
    # scoring says of it afterwards (its reversal, a hold naming the withdrawal).
    withdrawn: bool = False


class BoardFundsMonth(SQLModel, table=True):
    """Funds in place per attracting unit and month, kept as the funds rows change."""

    __tablename__ = "board_funds_month"

    unit: str = Field(primary_key=True, max_length=32)
    month: str = Field(primary_key=True, max_length=7)
    rmb_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    records: int = 0


class BoardCount(SQLModel, table=True):
    """Counts per attracting unit kept as rows change (ingest): `stage.<stage>` (projects at
    that stage) and `funds.held` (funds records held). The overview sums these few hundred
    rows instead of counting 100,000 projects per request (docs/performance.md)."""

    __tablename__ = "board_count"

    unit: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=32)
    n: int = 0


class BoardDayCount(SQLModel, table=True):
    """Projects per attracting unit and day: `yellow` / `red` (the day its light turns, i.e.
    yellow_on / red_on) and `signed` (signed that day for at least the signing threshold).
    A light count on any clock is a sum over days <= clock."""

    __tablename__ = "board_day_count"
    __table_args__ = (Index("ix_board_day_count_kind_day", "kind", "day", "n"),)

    unit: str = Field(primary_key=True, max_length=32)
    kind: str = Field(primary_key=True, max_length=8)
    day: dt.date = Field(primary_key=True)
    n: int = 0


class BoardPoints(SQLModel, table=True):
    """Points credited to one assessed subject (考核对象) for one funds record."""

    __tablename__ = "board_points"
    # Covering the ranking's sums: no table lookups for 100,000s of credits.
    __table_args__ = (
        Index("ix_board_points_sum", "year", "active", "subject", "arrived_on", "points_fen"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(index=True, max_length=100)
    funds_id: str = Field(max_length=64)
    subject: str = Field(max_length=32)
    # points × 100: scoring's points have two decimals
    points_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    year: int
    quarter: int
    arrived_on: dt.date | None = None
    active: bool = True  # False once score.reversed took the credit back


class BoardRatesYear(SQLModel, table=True):
    """score.rates of one assessment year as last applied: its revision, the parts of it
    seen (a revision may come in several messages), what the rates count and by which
    ruleset version."""

    __tablename__ = "board_rates_year"

    year: int = Field(primary_key=True)
    revision: int = 0
    parts: str = "[]"  # JSON: the parts of `revision` applied
    projects: int = 0  # projects counted, as scoring says
    definitions: str = "{}"  # JSON: RateDefinitions
    explanation: str = "{}"  # JSON: ruleset id and version, parameters


class BoardRates(SQLModel, table=True):
    """履约率、落地率、资金到位率 (scoring's figures, from score.rates): `scope` county (code
    ""), unit (an attracting unit) or project."""

    __tablename__ = "board_rates"

    year: int = Field(primary_key=True)
    scope: str = Field(primary_key=True, max_length=8)
    code: str = Field(primary_key=True, max_length=100)
    figures: str  # JSON: RateFigures as published


class BoardNotification(SQLModel, table=True):
    """notify.sent / notify.failed: what was sent to whom, and what could not be."""

    __tablename__ = "board_notification"

    id: int | None = Field(default=None, primary_key=True)
    project_id: str | None = Field(default=None, index=True, max_length=100)
    ok: bool = Field(index=True)
    cause: str = ""
    recipient: str = Field(default="", max_length=64)
    channel: str = Field(default="", max_length=16)
    attempts: int = 0
    error: str | None = None
    day: dt.date | None = None  # the business clock when it was recorded


class BoardRuleset(SQLModel, table=True):
    """A service's announcement that it loaded (or refused) a published ruleset version."""

    __tablename__ = "board_ruleset"

    id: int | None = Field(default=None, primary_key=True)
    service: str = Field(max_length=32)
    key: str = Field(max_length=64)
    revision: int = 0
    loaded: bool = True
    error: str | None = None
    received_at: dt.datetime


class BoardState(SQLModel, table=True):
    """Small counters: the business clock (latest business date seen), the data version."""

    __tablename__ = "board_state"

    key: str = Field(primary_key=True, max_length=32)
    value: str = ""


TABLES: tuple[type[SQLModel], ...] = (
    BoardEvent,
    BoardProject,
    BoardMeeting,
    BoardFunds,
    BoardFundsMonth,
    BoardCount,
    BoardDayCount,
    BoardPoints,
    BoardRatesYear,
    BoardRates,
    BoardNotification,
    BoardRuleset,
    BoardState,
)
