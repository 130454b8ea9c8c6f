"""The notify ruleset's parameters (rulesets/notify-*.yaml): when notify alerts whom.

Notify's triggers (services/notify/triggers.py) are written in Python; their thresholds are
policy and live here as data, each with the clause of the plan it implements, checked by
`rules validate` and by the rule tests like the other rulesets' parameters.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stall(Strict):
    after_days: StrictInt = Field(ge=1)
    repeat_days: StrictInt = Field(ge=1)


class Stalled(Strict):
    signed_not_started: Stall
    waiting_for_land: Stall
    lacking_funds: Stall


class SigningBehind(Strict):
    check_after: Fraction
    expected_share: Fraction
    min_amount: StrictInt = Field(ge=0)

    @field_validator("check_after", "expected_share", mode="before")
    @classmethod
    def _fraction(cls, raw: Any) -> Fraction:
        if isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not a fraction like 2/3 or 0.5 / 须为分数")
        try:
            value = Fraction(str(raw))
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"{raw!r} is not a fraction like 2/3 or 0.5 / 须为分数") from exc
        if not 0 <= value <= 1:
            raise ValueError(f"{raw!r} must be between 0 and 1 / 须在0到1之间")
        return value


class WeeklyReport(Strict):
    weekday: Literal[WEEKDAYS]  # type: ignore[valid-type]
    county_wide_to: list[StrictStr]
    fast_start_days: StrictInt = Field(ge=1)

    @property
    def weekday_index(self) -> int:
        return WEEKDAYS.index(self.weekday)


class Quarters(Strict):
    Q1: StrictInt = Field(ge=0)
    Q2: StrictInt = Field(ge=0)
    Q3: StrictInt = Field(ge=0)
    Q4: StrictInt = Field(ge=0)


class NotifyParams(Strict):
    """Every parameter of a notify ruleset, by name; only `value`s drive the code."""

    visit_overdue_days: StrictInt = Field(ge=1)
    visit_escalate_days: StrictInt = Field(ge=1)
    materials_due_within_days: StrictInt = Field(ge=0)
    stalled: Stalled
    signing_behind: SigningBehind
    signing_targets: Quarters
    weekly_report: WeeklyReport


def notify_params(parameters: dict[str, Any]) -> NotifyParams:
    """The values of a notify ruleset's parameters as typed settings (ValidationError)."""
    return NotifyParams.model_validate({name: p.value for name, p in parameters.items()})
