"""The time triggers' parameters (`triggers.yaml`), and the scoring ruleset's signing targets."""

from __future__ import annotations

import datetime as dt
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "triggers.yaml"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stall(Strict):
    after_days: int = Field(ge=1)
    repeat_days: int = Field(ge=1)


class Stalled(Strict):
    signed_not_started: Stall
    waiting_for_land: Stall
    lacking_funds: Stall


class SigningBehind(Strict):
    check_after: Fraction
    expected_share: Fraction
    min_amount: int = Field(ge=0)

    @field_validator("check_after", "expected_share", mode="before")
    @classmethod
    def _fraction(cls, raw: Any) -> Fraction:
        try:
            value = Fraction(str(raw))
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"{raw!r} is not a fraction like 2/3 or 0.5 / 须为分数") from exc
        if not 0 <= value <= 1:
            raise ValueError(f"{raw!r} must be between 0 and 1 / 须在0到1之间")
        return value


class WeeklyReport(Strict):
    weekday: Literal[WEEKDAYS]  # type: ignore[valid-type]
    county_wide_to: list[str]
    fast_start_days: int = Field(ge=1)

    @property
    def weekday_index(self) -> int:
        return WEEKDAYS.index(self.weekday)


class Params(Strict):
    visit_overdue_days: int = Field(ge=1)
    visit_escalate_days: int = Field(ge=1)
    materials_due_within_days: int = Field(ge=0)
    stalled: Stalled
    signing_behind: SigningBehind
    weekly_report: WeeklyReport


class ParamsError(ValueError):
    pass


def load_params(path: Path | None = None) -> Params:
    """Each entry is `{reference, description, unit?, value}`; only `value` drives the code."""
    path = path or Path(os.environ.get("NOTIFY_TRIGGERS") or DEFAULT_FILE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of parameters / 须为参数映射")
    values: dict[str, Any] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise ParamsError(f"{path}: {name}: needs `value:` / 参数须有取值")
        values[name] = entry["value"]
    try:
        return Params.model_validate(values)
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ParamsError("\n".join(lines)) from exc


# --- from the rulesets (read as validated data; no rules engine needed here) ----------------


@lru_cache(maxsize=4)
def _rulesets(rulesets_dir: str) -> tuple[Any, ...]:
    from shared.rules.load import load_paths

    return tuple(r for r, _ in load_paths([rulesets_dir]))


def signing_targets(rulesets_dir: Path, day: dt.date) -> dict[str, int] | None:
    """`signing_targets` of the scoring ruleset in force on `day` ({Q1: 6, ...}), or None."""
    for ruleset in _rulesets(str(rulesets_dir)):
        if ruleset.id == "scoring" and ruleset.effective.covers(day):
            param = ruleset.parameters.get("signing_targets")
            return {str(k): int(v) for k, v in param.value.items()} if param else None
    return None


def rule_titles(
    rulesets_dir: Path, ruleset_id: str, version: str | None
) -> dict[str, dict[str, str]]:
    """Rule id -> {zh, en} title, from the named version (or every version of the id)."""
    titles: dict[str, dict[str, str]] = {}
    for ruleset in _rulesets(str(rulesets_dir)):
        if ruleset.id != ruleset_id or (version and ruleset.version != version):
            continue
        for rule in ruleset.rules:
            titles[rule.id] = {"zh": rule.title.zh, "en": rule.title.en}
    return titles
