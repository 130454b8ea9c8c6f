"""The ruleset file schema: what a rule maintainer may write in `rulesets/*.yaml`.

Structure only (keys, shapes, literal types). Whether a fact path exists, whether a value
fits the fact it is compared with, and whether a parameter is defined are checked in
`check.py`, because they need the contract and the whole ruleset.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)
from pydantic import (
    Strict as StrictMode,
)

RULESET_IDS = ("review", "scoring", "notify")
OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "exists",
    "missing",
    "matches",
)

Name = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
FactPath = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a ruleset or rule-test file, located for a human."""

    file: str
    where: str  # "rule major_project", "case \"...\"", "parameter x" or "" for the whole file
    key: str  # dotted key inside that part, e.g. "when.all[1].gte"
    message: str
    line: int | None = None  # 1-based, where the text is known
    column: int | None = None

    def __str__(self) -> str:
        head = self.file
        if self.line is not None:
            head += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        parts = [head]
        if self.where:
            parts.append(self.where)
        if self.key:
            parts.append(self.key)
        return ": ".join([*parts, self.message])


class RulesetError(Exception):
    """A ruleset (or rule-test file) that must not be loaded, with every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Bilingual(Strict):
    zh: Annotated[StrictStr, Field(min_length=1)]
    en: Annotated[StrictStr, Field(min_length=1)]


class ParamRef(Strict):
    """`{param: name}`: the value of a ruleset parameter, so policy changes stay in one place."""

    param: Name


def _value(raw: Any) -> Any:
    """A literal (scalar or list of scalars) or a parameter reference."""
    if isinstance(raw, ParamRef):
        return raw
    if isinstance(raw, dict):
        return ParamRef.model_validate(raw)
    if isinstance(raw, list):
        for item in raw:
            if not isinstance(item, bool | int | float | str | dt.date) or isinstance(
                item, dt.datetime
            ):
                raise ValueError(
                    f"list items must be plain values, got {type(item).__name__} / 列表项须为简单值"
                )
        return tuple(raw)
    if raw is None:
        raise ValueError("null is not a value; to test absence use `missing: true` / 不能用空值")
    if isinstance(raw, dt.datetime):
        raise ValueError("write a date without a time / 只写日期，不带时间")
    if isinstance(raw, bool | int | float | str | dt.date):
        return raw
    raise ValueError(f"unsupported value of type {type(raw).__name__} / 不支持的值")


class Comparison(Strict):
    """`{fact: investor.origin, eq: foreign}`: one fact, one operator, one value."""

    fact: FactPath
    op: Literal[
        "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "missing", "matches"
    ]
    value: Any

    @model_validator(mode="before")
    @classmethod
    def _one_operator(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "op" in raw:
            return raw
        unknown = sorted(k for k in raw if k != "fact" and k not in OPERATORS)
        if unknown:
            raise ValueError(
                f"unknown key {unknown[0]!r}: a comparison has `fact` and one operator of "
                f"{', '.join(OPERATORS)} / 未知字段"
            )
        ops = [k for k in raw if k in OPERATORS]
        if len(ops) != 1:
            raise ValueError(
                f"a comparison needs exactly one operator ({', '.join(OPERATORS)}), "
                f"got {len(ops)} / 每个比较须且只能有一个运算符"
            )
        return {"fact": raw.get("fact"), "op": ops[0], "value": raw[ops[0]]}

    @field_validator("value", mode="before")
    @classmethod
    def _literal_or_param(cls, raw: Any) -> Any:
        return _value(raw)


class AllOf(Strict):
    all: Annotated[list[Condition], Field(min_length=1)]


class AnyOf(Strict):
    any: Annotated[list[Condition], Field(min_length=1)]


class NotOf(Strict):
    not_: Condition = Field(alias="not")


class RuleRef(Strict):
    """`{rule: major_project}`: true when that rule of the same ruleset matches."""

    rule: Name


def _condition_tag(raw: Any) -> str | None:
    if isinstance(raw, dict):
        for key in ("all", "any", "not", "rule"):
            if key in raw:
                return CONDITION_TAGS[key]
        return CONDITION_TAGS["fact"] if "fact" in raw else None
    return {
        AllOf: "all-of",
        AnyOf: "any-of",
        NotOf: "not-of",
        RuleRef: "rule-ref",
        Comparison: "comparison",
    }.get(type(raw))


# Union tags show up in validation error locations; distinct names let load.py drop them.
CONDITION_TAGS = {
    "all": "all-of",
    "any": "any-of",
    "not": "not-of",
    "rule": "rule-ref",
    "fact": "comparison",
}


Condition = Annotated[
    Annotated[AllOf, Tag("all-of")]
    | Annotated[AnyOf, Tag("any-of")]
    | Annotated[NotOf, Tag("not-of")]
    | Annotated[RuleRef, Tag("rule-ref")]
    | Annotated[Comparison, Tag("comparison")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message=(
            "a condition is one of all / any / not / rule / {fact: ..., <operator>: ...} "
            "/ 条件须为 all、any、not、rule 或 fact 比较"
        ),
    ),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()

DocumentSpec = ParamRef | list[StrictStr] | dict[StrictStr, list[StrictStr]]
Number = StrictInt | StrictFloat


class Parameter(Strict):
    """A value the plan leaves to the county (e.g. the plan's "x倍"), with where it comes from."""

    reference: Annotated[StrictStr, Field(min_length=1)]  # the clause of the plan it implements
    description: Bilingual
    unit: StrictStr | None = None
    value: Any

    @field_validator("value")
    @classmethod
    def _present(cls, raw: Any) -> Any:
        if raw is None:
            raise ValueError("a parameter needs a value / 参数须有取值")
        return raw


class Effective(Strict):
    """Days the version is in force, both inclusive; `to` left out means open-ended."""

    # Strict: a date in quotes is text, refused (docs/rules.md), not silently parsed.
    from_: Annotated[dt.date, StrictMode()] = Field(alias="from")
    to: Annotated[dt.date, StrictMode()] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Effective:
        if self.to is not None and self.to < self.from_:
            raise ValueError(f"`to` {self.to} is before `from` {self.from_} / 截止日期早于起始日期")
        return self

    def covers(self, day: dt.date) -> bool:
        return self.from_ <= day and (self.to is None or day <= self.to)

    def overlaps(self, other: Effective) -> bool:
        ends = dt.date.max
        return self.from_ <= (other.to or ends) and other.from_ <= (self.to or ends)

    def __str__(self) -> str:
        return f"{self.from_}..{self.to or ''}"


# --- review outcomes -----------------------------------------------------------------


class Terminate(Strict):
    """告知终止洽谈: the project is out of policy; the rule id is one of the reasons."""

    action: Literal["terminate"]


class Route(Strict):
    """Send the project to a review track (重大项目联审联批 = major)."""

    action: Literal["route"]
    track: Literal["major", "standard"]


class RequireMaterials(Strict):
    """评审会材料: documents to file before the agenda closes; matches while one is missing."""

    action: Literal["require_materials"]
    documents: DocumentSpec
    chosen_by: list[FactPath] = []
    due_days_before_meeting: StrictInt | ParamRef


class NotRecognised(Strict):
    """Blocks 认定 (recognition); with `unless_filed`, only while a listed proof is missing."""

    action: Literal["not_recognised"]
    unless_filed: DocumentSpec | None = None
    chosen_by: list[FactPath] = []


ReviewOutcome = Annotated[
    Terminate | Route | RequireMaterials | NotRecognised, Field(discriminator="action")
]


class Multiplier(Strict):
    """计分倍数: the funds in place are counted this many times."""

    multiplier: Number | ParamRef


class _Rule(Strict):
    id: Name
    title: Bilingual
    reference: StrictStr | None = None
    note: Bilingual | None = None
    when: Condition | None = None


class ReviewRule(_Rule):
    outcome: ReviewOutcome


class ScoringRule(_Rule):
    outcome: Multiplier


class _Ruleset(Strict):
    version: Annotated[StrictStr, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")]
    title: Bilingual
    source: StrictStr | None = None
    effective: Effective
    parameters: dict[Name, Parameter] = {}

    @field_validator("version", mode="before")
    @classmethod
    def _quoted(cls, raw: Any) -> Any:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            # YAML reads 2022.10 as the number 2022.1: a version must be text.
            raise ValueError(f"write the version in quotes, e.g. '{raw}' / 版本号须加引号")
        return raw

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"  # type: ignore[attr-defined]

    def rule(self, rule_id: str) -> ReviewRule | ScoringRule:
        for rule in self.rules:  # type: ignore[attr-defined]
            if rule.id == rule_id:
                return rule  # type: ignore[no-any-return]
        raise KeyError(rule_id)


class ReviewRuleset(_Ruleset):
    """Screening, committee materials and recognition (初步筛选、联审联批、认定)."""

    id: Literal["review"]
    default_track: Literal["major", "standard"] = "standard"
    rules: Annotated[list[ReviewRule], Field(min_length=1)]


class ScoringRuleset(_Ruleset):
    """The assessment's multipliers (招商引资考核办法·计分方法)."""

    id: Literal["scoring"]
    combine: Literal["max"]
    default_multiplier: Number = 1
    rules: Annotated[list[ScoringRule], Field(min_length=1)]


class NotifyRuleset(_Ruleset):
    """When notify alerts whom (包保、停滞、签约进度、周报): thresholds only. The triggers are
    notify's code; their parameters are policy, so they live here as data."""

    id: Literal["notify"]
    rules: Annotated[list[ScoringRule], Field(max_length=0)] = []


Ruleset = Annotated[ReviewRuleset | ScoringRuleset | NotifyRuleset, Field(discriminator="id")]
AnyRuleset = ReviewRuleset | ScoringRuleset | NotifyRuleset
AnyRule = ReviewRule | ScoringRule
