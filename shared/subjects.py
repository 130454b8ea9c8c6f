"""Subject names: the one place they are spelled."""

from __future__ import annotations

from .contract.enums import InboundKind

INBOUND_FILTER = "intake.*.*"  # exactly three tokens: never matches intake.rejected.<unit>.<kind>


def inbound(unit: str, kind: InboundKind | str) -> str:
    return f"intake.{unit}.{kind}"


def rejected(unit: str, kind: str) -> str:
    return f"intake.rejected.{unit}.{kind}"


def canonical(kind: InboundKind | str) -> str:
    return f"project.{kind}"


PROJECT_DUPLICATE = "project.duplicate"
REVIEW_SCREENED = "review.screened"
REVIEW_MATERIALS = "review.materials"
REVIEW_DECIDED = "review.decided"
REVIEW_RECOGNITION = "review.recognition"
REVIEW_REFUSED = "review.refused"  # a committee decision not taken, and why
SCORE_CREDITED = "score.credited"
SCORE_HELD = "score.held"
SCORE_REVERSED = "score.reversed"
SCORE_RATES = "score.rates"  # 履约率、落地率、资金到位率 of an assessment year, when they change
NOTIFY_SENT = "notify.sent"
NOTIFY_FAILED = "notify.failed"
