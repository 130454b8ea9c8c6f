"""The event contract: pydantic models for every inbound kind and outbound event (SPEC §8)."""

from .credit_code import credit_code_problem, make_credit_code
from .enums import (
    CENTER_ONLY_KINDS,
    Decision,
    DocumentType,
    FundsForm,
    InboundKind,
    Land,
    MilestoneKind,
    Origin,
    Outcome,
    ProjectKind,
    Track,
    VoucherKind,
)
from .inbound import (
    INBOUND_MODELS,
    CommitteeDecision,
    Document,
    DocumentRef,
    Environment,
    Flags,
    Funds,
    Headquarters,
    Investor,
    Lead,
    Meeting,
    Milestone,
    Rates,
    Visit,
    Voucher,
)
from .outbound import (
    AssessmentRates,
    Credited,
    Decided,
    DecisionTaken,
    DocumentFiled,
    DuplicateClaim,
    Envelope,
    Explanation,
    FieldError,
    FundsArrived,
    Held,
    LeadReported,
    MaterialsStatus,
    MeetingScheduled,
    MilestoneReached,
    NotifyOutcome,
    RateDefinitions,
    RateFigures,
    RatesPublished,
    Recognition,
    Refused,
    Rejected,
    Reversed,
    Screened,
    SiteVisited,
)

CANONICAL_MODELS: dict[InboundKind, type[Envelope]] = {
    InboundKind.lead: LeadReported,
    InboundKind.document: DocumentFiled,
    InboundKind.milestone: MilestoneReached,
    InboundKind.funds: FundsArrived,
    InboundKind.visit: SiteVisited,
    InboundKind.decision: DecisionTaken,
    InboundKind.meeting: MeetingScheduled,
    InboundKind.rates: RatesPublished,
}

__all__ = [name for name in dir() if not name.startswith("_")]
