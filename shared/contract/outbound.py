"""Events the services emit on `project.*`, `intake.rejected.*`, `review.*`, `score.*`, `notify.*`.

Every canonical `project.<kind>` event wraps the validated inbound payload in the same
envelope, so a consumer knows which unit said what, when, under which idempotency key.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .enums import Outcome, Track
from .inbound import (
    Claim,
    CommitteeDecision,
    Correction,
    Document,
    Funds,
    Lead,
    Meeting,
    Milestone,
    Rates,
    Visit,
    Withdrawal,
)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, cache_strings=False)  # as inbound.py


class FieldError(Event):
    field: str = Field(
        description="dotted path of the offending field, or `$` for the whole message"
    )
    problem: str


class Rejected(Event):
    """`intake.rejected.<unit>.<kind>`: bad input, stored nowhere."""

    unit: str
    kind: str
    subject: str
    idempotency_key: str | None
    errors: list[FieldError]
    received_at: dt.datetime


class Envelope(Event):
    event_id: str = Field(description="unique per logical event; also its Nats-Msg-Id")
    project_id: str | None
    unit: str = Field(description="the reporting unit (from the subject)")
    idempotency_key: str
    received_at: dt.datetime = Field(
        description="intake's receipt time (UTC): the filing time of what the event reports; "
        "its date in Asia/Shanghai is the filing date (报送日期) review judges deadlines by"
    )


class LeadReported(Envelope):
    data: Lead


class DocumentFiled(Envelope):
    data: Document


class MilestoneReached(Envelope):
    data: Milestone


class FundsArrived(Envelope):
    data: Funds


class SiteVisited(Envelope):
    data: Visit


class DecisionTaken(Envelope):
    data: CommitteeDecision


class MeetingScheduled(Envelope):
    data: Meeting


class RatesPublished(Envelope):
    data: Rates


class Change(Event):
    """One corrected field: its value before and after (the audit trail's old → new)."""

    field: str
    old: Any = None
    new: Any = None


class RecordCorrected(Envelope):
    """`project.correction` (更正): the record as it stood and as it stands now, versioned
    (the original report is version 1). `unit`/`received_at` say who corrected it and when;
    `data.reason` why. Consumers replace the record with `after`."""

    data: Correction
    version: int = Field(ge=2)
    owner: str = Field(description="the unit that reported the record")
    before: dict[str, Any]
    after: dict[str, Any]
    changes: list[Change]


class RecordWithdrawn(Envelope):
    """`project.withdrawal` (撤回): the record no longer counts; a lead withdraws its project."""

    data: Withdrawal
    version: int = Field(ge=2)
    owner: str = Field(description="the unit that reported the record")
    before: dict[str, Any]


class ClaimResolved(Envelope):
    """`project.claim`: the Center resolved a held duplicate claim. `released`: a held report
    that now goes ahead (its `project.lead` follows); `withdrawn`: a project that lost the
    claim (its `project.withdrawal` follows)."""

    data: Claim
    duplicate_of: str
    units: list[str] = Field(description="[held report's unit, first report's unit]")
    released: str | None = None
    withdrawn: str | None = None


class DuplicateClaim(Event):
    """`project.duplicate`: one project, one claim — the later report is held for the Center."""

    event_id: str
    project_id: str = Field(description="the held report's id")
    duplicate_of: str
    units: list[str] = Field(description="[reporting unit, unit that reported first]")
    reason: str
    received_at: dt.datetime


class Explanation(Event):
    """Why a rule decision came out as it did; enough to replay it."""

    ruleset_id: str
    version: str
    ruleset_sha256: str | None = Field(
        default=None,
        description="sha256 of the version's YAML text as the service loaded it (`rules "
        "history` lists the same digest per published file)",
    )
    matched: list[str]
    parameters: dict[str, Any]
    deciding_rule: str | None
    input_sha256: str | None = None
    input: dict[str, Any] | None = Field(
        default=None,
        description="the decision's input, exactly what `input_sha256` hashes (the project, "
        "the documents filed, the meeting day, the funds record and rate, the sponsor leader, "
        "the day the version was picked by): with the ruleset id and version, the decision "
        "record `investflow rules explain --project` replays and explains",
    )


class Screened(Event):
    project_id: str
    outcome: Outcome
    track: Track | None
    reasons: list[str]
    explanation: Explanation


class MaterialsStatus(Event):
    """评审会材料. Materials count for a meeting only if their filing date (intake's receipt
    date, see shared.contract.inbound) is on or before `deadline` (meeting − agenda_lead_days)."""

    project_id: str
    complete: bool
    missing_materials: list[str]
    deadline: dt.date | None
    explanation: Explanation
    meeting_id: str | None = None
    late: bool = Field(
        default=False,
        description="材料逾期: the deadline passed with materials missing; the project moves to "
        "the next meeting (the Center lists it on that agenda) and no decision is taken on it "
        "at this one",
    )


class Recognition(Event):
    project_id: str
    recognized: bool
    recognition_blockers: list[str]
    missing_proofs: list[str]
    explanation: Explanation
    terminated: bool = Field(default=False, description="terminated at screening (告知终止洽谈)")
    committee_rejected: bool = Field(
        default=False, description="rejected by the committee (未通过集体决策): the track ended"
    )
    sponsor_leader: str | None = Field(
        default=None,
        description="the sponsor leader (包保县级领导) of the approval review took, if any",
    )


class Decided(Event):
    project_id: str
    meeting_id: str
    decision: str
    minutes_ref: str
    sponsor_leader: str | None
    responsible_leader: str | None
    hq_commander: str | None
    hq_members: list[str]


class Refused(Event):
    """`review.refused`: a committee decision review did not take, with why; nothing changed."""

    project_id: str
    kind: str = Field(description="what was refused: `decision`")
    meeting_id: str | None
    unit: str = Field(description="the unit that sent it")
    event_id: str
    errors: list[FieldError]


class Credited(Event):
    project_id: str
    funds_id: str
    year: int
    quarter: int
    amount_rmb: Decimal
    multiplier: Decimal
    points: Decimal
    matched: list[str]
    deciding_rule: str | None
    credited_to: list[str]
    explanation: Explanation
    combined: list[str] = Field(
        default_factory=list,
        description="the rules whose multipliers make up `multiplier` (the ruleset's "
        "multiplier_combination: one under `highest`, a boost and a reduction otherwise)",
    )
    out_of_year: bool = Field(
        default=False,
        description="dated outside the project's assessment year (the year of its lead's "
        "`reported_on`): accepted, credited in the year it arrived, and marked (非当年度)",
    )
    cause: str | None = Field(
        default=None,
        description="why this credit replaces an earlier one (a correction, a new sponsor)",
    )


class Held(Event):
    project_id: str
    funds_id: str
    reason: str
    out_of_year: bool = Field(
        default=False, description="dated outside the project's assessment year (非当年度)"
    )


class Reversed(Event):
    project_id: str
    funds_id: str
    points: Decimal
    reason: str


class RateFigures(Event):
    """履约率、落地率、资金到位率 of one scope (a project, an attracting unit, the county), with
    the counts they divide; a rate is None where its denominator is zero."""

    signed: int = Field(description="projects in scope signed in the year (the denominator)")
    performed: int = Field(description="... that reached a `performance` milestone by year's end")
    landed: int = Field(description="... that reached a `landing` milestone by year's end")
    contracted_rmb: Decimal = Field(description="their signed (contract) amounts, yuan")
    funds_rmb: Decimal = Field(description="their funds in place by the year's end, in RMB")
    funds_unconverted: int = Field(
        description="funds records left out of funds_rmb: no exchange rate for their day"
    )
    performance_rate: Decimal | None = Field(description="履约率 = performed / signed")
    landing_rate: Decimal | None = Field(description="落地率 = landed / signed")
    funds_rate: Decimal | None = Field(description="资金到位率 = funds_rmb / contracted_rmb")


class RateDefinitions(Event):
    """What the three rates count, as the scoring ruleset in force says (`rate_definitions`)."""

    performance: list[str] = Field(description="milestones that count as performed (履约)")
    landing: list[str] = Field(description="milestones that count as landed (落地)")
    description: dict[str, str] = Field(description="the ruleset's wording: {zh, en}")
    reference: str | None = Field(description="the plan's clause it implements")


class AssessmentRates(Event):
    """`score.rates`: the assessment year's rates (实施方案·三（三）), emitted when they change.

    `county` and `by_unit` are whole each time; `by_project` holds the projects whose
    figures changed since the previous revision and `dropped` those no longer counted, so
    a consumer that applies the revisions in order holds every project's figures. A
    revision too large for one message goes out in `parts` messages, each with the whole
    county and unit figures.
    """

    year: int
    revision: int = Field(description="1, 2, ...: one more each time the year's rates change")
    part: int = Field(description="1..parts")
    parts: int
    county: RateFigures
    by_unit: dict[str, RateFigures] = Field(description="attracting unit (招商单位) → figures")
    by_project: dict[str, RateFigures] = Field(description="project → figures (changed ones)")
    dropped: list[str] = Field(description="projects no longer counted in the year")
    projects: int = Field(description="projects counted in the year after this revision")
    definitions: RateDefinitions
    explanation: Explanation


class NotifyOutcome(Event):
    project_id: str | None
    cause: str
    recipient: str
    channel: str
    attempts: int
    error: str | None = None
