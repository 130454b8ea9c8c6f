"""Inbound payloads: what a unit's system publishes on `intake.<unit>.<kind>` (SPEC §8).

Strict: unknown keys are refused (a typo must not silently drop a field), money is
Decimal, dates are ISO dates, currencies are ISO 4217 codes (`RMB` → use CNY). Unit codes
are checked against the directory by intake, since the directory is data, not contract.

Dates and time (the contract's definitions):
- **Receipt time (接收时间)**: when intake accepted the message, `received_at` on the
  canonical envelope (UTC). It is the only clock the contract trusts.
- **Filing date (报送/提交日期)** of a document, a funds record or any report: the receipt
  time's date in Asia/Shanghai. A unit's own dates (`issued_on`, `arrived_on`, `on`) say when
  something happened, never when it was filed: committee materials count for a meeting only
  if their filing date is on or before its agenda deadline (review).
- A funds record (`arrived_on`) or milestone (`on`) dated after its receipt time by more
  than `FUTURE_TOLERANCE_DAYS` is refused: it has not happened yet. The receipt time comes
  from the validation context (`{"received_at": datetime}`); without one, now.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from .credit_code import credit_code_problem
from .currency import currency_problem
from .enums import (
    ClaimResolution,
    Decision,
    DocumentType,
    FundsForm,
    InboundKind,
    Land,
    MilestoneKind,
    Origin,
    ProjectKind,
    RecordKind,
    VoucherKind,
)

EARLIEST = dt.date(1990, 1, 1)
LATEST = dt.date(2100, 12, 31)
# A day's grace for a date "today" in Asia/Shanghai that is still yesterday in UTC, and for
# clocks a little off; anything later has not happened yet.
FUTURE_TOLERANCE_DAYS = 1
SHANGHAI = dt.timezone(dt.timedelta(hours=8))  # Asia/Shanghai has no daylight saving


def received_day(info: ValidationInfo | None) -> dt.date:
    """The filing date: the receipt time (validation context `received_at`, else now) in
    Asia/Shanghai."""
    context = (info.context if info is not None else None) or {}
    at = context.get("received_at")
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    if not isinstance(at, dt.datetime):
        at = dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(SHANGHAI).date()


def _not_future(field: str, day: dt.date, info: ValidationInfo) -> None:
    latest = received_day(info) + dt.timedelta(days=FUTURE_TOLERANCE_DAYS)
    if day > latest:
        raise ValueError(
            f"{field}: {day} is in the future (received on {received_day(info)}; "
            f"at most {FUTURE_TOLERANCE_DAYS} day ahead) / 日期晚于报送日期，尚未发生"
        )


def _plausible(day: dt.date) -> dt.date:
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"date {day} is outside {EARLIEST}..{LATEST} / 日期超出范围")
    return day


def _credit_code(code: str) -> str:
    problem = credit_code_problem(code)
    if problem:
        raise ValueError(problem)
    return code


Day = Annotated[dt.date, AfterValidator(_plausible)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2, allow_inf_nan=False)]
PositiveMoney = Annotated[
    Decimal, Field(gt=0, max_digits=18, decimal_places=2, allow_inf_nan=False)
]
Quantity = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4, allow_inf_nan=False)]
Code = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
ProjectId = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Text = Annotated[str, Field(min_length=1, max_length=500)]


def _currency(code: str) -> str:
    problem = currency_problem(code)
    if problem:
        raise ValueError(problem)
    return code


CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
CreditCode = Annotated[str, AfterValidator(_credit_code)]


class Strict(BaseModel):
    # cache_strings off: pydantic-core's JSON string cache kept ≈ 100 bytes of each distinct
    # message parsed (tests/scoring/test_inputs_memory.py), part of the RSS that grew with a
    # year (issue 17); a parse builds its few strings anew instead.
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, cache_strings=False
    )


class Investor(Strict):
    name: Text
    credit_code: CreditCode | None = None  # 统一社会信用代码
    origin: Origin
    country: Annotated[str, Field(min_length=2, max_length=60)] | None = None
    fortune_global_500: bool = False
    china_top_500: bool = False  # shown on the board; scoring goes by china_rank
    # 中国企业500强 rank (1 = first): the scoring ruleset's `china_top_n` says how high counts.
    china_rank: Annotated[int, Field(ge=1, le=100_000)] | None = None
    little_giant: bool = False  # 国家级专精特新"小巨人"
    single_champion: bool = False  # 单项冠军

    @model_validator(mode="after")
    def _domestic_needs_code(self) -> Investor:
        if self.origin != Origin.foreign and self.credit_code is None:
            raise ValueError(
                "credit_code: required unless origin is foreign / 境内投资方须填统一社会信用代码"
            )
        return self


class Flags(Strict):
    provincial_dispatch_list: bool = False  # 省内资调度库
    city_leader_campaign: bool = False  # 市领导带队外出招商/见证签约
    city_observation_stop: bool = False  # 市大项目观摩点


class Environment(Strict):
    """能耗/环保/安全: None means not yet assessed, which never fails a rule."""

    energy_tce: Quantity | None = None
    water_m3: Quantity | None = None
    emissions_ok: bool | None = None
    safety_ok: bool | None = None
    energy_ok: bool | None = None


class DocumentRef(Strict):
    type: DocumentType
    ref: Text
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    issued_on: Day | None = None


class Lead(Strict):
    """A new project reported by its 招商单位 (attracting unit)."""

    unit: Code | None = None
    lead_id: Ident
    title: Text
    attracting_unit: Code
    landing_area: Code
    kind: ProjectKind
    industry: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
    planned_investment: PositiveMoney
    land: Land
    investor: Investor
    flags: Flags = Flags()
    commercial_floor_area_m2: Quantity | None = None
    environment: Environment = Environment()
    reported_on: Day
    documents: Annotated[list[DocumentRef], Field(max_length=50)] = []

    @model_validator(mode="after")
    def _complex_needs_area(self) -> Lead:
        if self.kind == ProjectKind.urban_complex and self.commercial_floor_area_m2 is None:
            raise ValueError(
                "commercial_floor_area_m2: required for an urban_complex / 城市综合体须填商业面积"
            )
        return self


class Document(Strict):
    """A document filed for a project. Its filing date is intake's receipt date (see the
    module docstring), not `issued_on`, which is the date on the document itself."""

    unit: Code | None = None
    project_id: ProjectId
    type: DocumentType
    ref: Text
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    issued_on: Day | None = None


class Milestone(Strict):
    unit: Code | None = None
    project_id: ProjectId
    milestone: MilestoneKind
    on: Day
    amount: PositiveMoney | None = None  # the signed amount, for `signed`

    @model_validator(mode="after")
    def _signed_needs_amount(self, info: ValidationInfo) -> Milestone:
        if self.milestone == MilestoneKind.signed and self.amount is None:
            raise ValueError("amount: required for a signed milestone / 签约须填金额")
        _not_future("on", self.on, info)
        return self


class Voucher(Strict):
    kind: VoucherKind
    ref: Text


class Funds(Strict):
    """到位资金: one funds-in-place record."""

    unit: Code | None = None
    project_id: ProjectId
    funds_id: Ident
    amount: PositiveMoney
    currency: CurrencyCode
    arrived_on: Day
    form: FundsForm
    voucher: Voucher

    @model_validator(mode="after")
    def _arrived(self, info: ValidationInfo) -> Funds:
        _not_future("arrived_on", self.arrived_on, info)
        return self


class Visit(Strict):
    """A sponsor leader's site visit (包保县级领导现场调度)."""

    unit: Code | None = None
    project_id: ProjectId
    leader: Code
    on: Day


class Meeting(Strict):
    """A landing review meeting (落地评审会) and its agenda, from the Center."""

    unit: Code | None = None
    meeting_id: Ident
    on: Day
    agenda: Annotated[list[ProjectId], Field(min_length=1, max_length=200)]


class Headquarters(Strict):
    """项目指挥部: commander and member units."""

    commander: Code
    members: Annotated[list[Code], Field(max_length=50)] = []


class CommitteeDecision(Strict):
    """The committee's collective decision (集体决策)."""

    unit: Code | None = None
    project_id: ProjectId
    meeting_id: Ident
    decision: Decision
    minutes_ref: Text
    responsible_leader: Code | None = None
    sponsor_leader: Code | None = None
    hq: Headquarters | None = None

    @model_validator(mode="after")
    def _approval_names_sponsor(self) -> CommitteeDecision:
        if self.decision == Decision.approved and self.sponsor_leader is None:
            raise ValueError("sponsor_leader: required for an approval / 批准须指定包保县级领导")
        return self


class Rates(Strict):
    """Exchange rates of one day, CNY per unit of each currency, from the Center."""

    unit: Code | None = None
    on: Day
    rates: Annotated[
        dict[CurrencyCode, Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=8)]],
        Field(min_length=1, max_length=100),
    ]


class RecordRef(Strict):
    """The record a correction or withdrawal is about: a lead (its project), a funds record
    (project + funds_id) or a milestone (project + milestone kind: the latest one reported)."""

    kind: RecordKind
    project_id: ProjectId
    funds_id: Ident | None = None
    milestone: MilestoneKind | None = None

    @model_validator(mode="after")
    def _names_the_record(self) -> RecordRef:
        if self.kind == RecordKind.funds and self.funds_id is None:
            raise ValueError("funds_id: required for a funds record / 须填资金记录编号")
        if self.kind == RecordKind.milestone and self.milestone is None:
            raise ValueError("milestone: required for a milestone / 须填节点类型")
        if self.kind != RecordKind.funds and self.funds_id is not None:
            raise ValueError(f"funds_id: only for a funds record, not a {self.kind} / 仅资金记录")
        if self.kind != RecordKind.milestone and self.milestone is not None:
            raise ValueError(f"milestone: only for a milestone, not a {self.kind} / 仅节点")
        return self

    @property
    def key(self) -> str:
        """The record's natural key, e.g. `funds:TS01-L1:F1`, `milestone:TS01-L1:signed`."""
        tail = self.funds_id if self.kind == RecordKind.funds else self.milestone
        return f"{self.kind}:{self.project_id}" + (f":{tail}" if tail else "")


# Fields a correction may not change: they say which record it is, or who owns the project
# (a wrong one is withdrawn and reported again; a claim is the Center's to assign).
IDENTITY_FIELDS: dict[RecordKind, frozenset[str]] = {
    RecordKind.lead: frozenset({"unit", "lead_id", "attracting_unit", "landing_area"}),
    RecordKind.milestone: frozenset({"unit", "project_id", "milestone"}),
    RecordKind.funds: frozenset({"unit", "project_id", "funds_id"}),
}


class Correction(Strict):
    """更正: new values for some fields of a record already reported, and why. Sent by the
    unit that reported the record, or by the Center. The corrected record is checked as a
    whole, as if reported anew; the original and every correction stay on file (versions)."""

    unit: Code | None = None
    correction_id: Ident
    target: RecordRef
    changes: Annotated[dict[str, Any], Field(min_length=1, max_length=30)]
    reason: Text

    @model_validator(mode="after")
    def _fields_of_the_record(self) -> Correction:
        model = RECORD_MODELS[self.target.kind]
        for name in sorted(self.changes):
            if name in IDENTITY_FIELDS[self.target.kind]:
                raise ValueError(
                    f"changes: {name!r} names the record and cannot be corrected; withdraw the "
                    "record and report it again / 标识字段不可更正，请撤回后重报"
                )
            if name not in model.model_fields:
                raise ValueError(
                    f"changes: {name!r} is not a field of a {self.target.kind} record / 非该记录字段"
                )
        return self


class Withdrawal(Strict):
    """撤回: a record entered by mistake no longer counts (a lead withdraws its project)."""

    unit: Code | None = None
    target: RecordRef
    reason: Text


class Claim(Strict):
    """The Center's resolution of a held duplicate claim (一个项目一个认领): `assign` the
    project to one of the two claims (`assign_to`: the held report or the one it duplicates),
    or declare them `distinct` projects. `project_id` names either report of the pair."""

    unit: Code | None = None
    project_id: ProjectId  # the held report, or the one it duplicates
    resolution: ClaimResolution
    assign_to: ProjectId | None = None
    reason: Text

    @model_validator(mode="after")
    def _assign_names_one(self) -> Claim:
        if self.resolution == ClaimResolution.assign and self.assign_to is None:
            raise ValueError("assign_to: required to assign the project / 须指定归属的认领")
        if self.resolution == ClaimResolution.distinct and self.assign_to is not None:
            raise ValueError("assign_to: only when assigning / 仅在认定归属时填写")
        return self


RECORD_MODELS: dict[RecordKind, type[Strict]] = {
    RecordKind.lead: Lead,
    RecordKind.milestone: Milestone,
    RecordKind.funds: Funds,
}


INBOUND_MODELS: dict[InboundKind, type[Strict]] = {
    InboundKind.lead: Lead,
    InboundKind.document: Document,
    InboundKind.milestone: Milestone,
    InboundKind.funds: Funds,
    InboundKind.visit: Visit,
    InboundKind.decision: CommitteeDecision,
    InboundKind.meeting: Meeting,
    InboundKind.rates: Rates,
    InboundKind.correction: Correction,
    InboundKind.withdrawal: Withdrawal,
    InboundKind.claim: Claim,
}
