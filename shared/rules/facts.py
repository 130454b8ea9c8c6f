"""The facts rules may name, and how a project becomes facts.

Fact paths come from the contract models (`Lead`, `Funds`) so a field added there is usable
in rules at once, plus a few derived facts:

- `filed.<document type>`: true when a document of that type is filed (the lead's own
  `documents` plus later ones). `documents` itself is a list and is not comparable.
- `project_id`, `sponsor_leader` (包保县级领导, once the committee names one).
- review: `meeting_on`, the landing review meeting (落地评审会) the project is on.
- scoring: `funds.*` (the funds-in-place record) and `funds.amount_rmb`.

Null and absent are the same: a field not yet known never satisfies a comparison, and
satisfies `missing` (the contract: "None means not yet assessed, which never fails a rule").

Engine form (`to_engine`): durable_rules reads JSON, so Decimal becomes int when whole, else
float; dates become ordinal day numbers (`date.toordinal()`), so `<`/`>` on dates is numeric.
Precision: float keeps 15 significant digits exactly, so amounts below 10^13 yuan with fen
(分) compare exactly; beyond that two amounts closer than a fen may compare equal.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum, StrEnum
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.contract import DocumentRef, DocumentType, Funds, Lead


class FactType(StrEnum):
    text = "text"
    number = "number"
    boolean = "boolean"
    date = "date"


@dataclass(frozen=True)
class FactSpec:
    path: str
    type: FactType
    values: tuple[str, ...] | None = None  # the closed vocabulary of an enum field

    def describe(self) -> str:
        if self.values:
            return f"one of {', '.join(self.values)}"
        return {
            FactType.text: "text",
            FactType.number: "a number",
            FactType.boolean: "true/false",
            FactType.date: "a date",
        }[self.type]


# Labels for explanations; a path without one is shown as is.
LABELS_ZH: dict[str, str] = {
    "kind": "项目类型",
    "industry": "产业",
    "planned_investment": "计划投资额（元）",
    "land": "用地类型",
    "attracting_unit": "招商单位",
    "landing_area": "落地乡镇/园区",
    "sponsor_leader": "包保县级领导",
    "commercial_floor_area_m2": "商业建筑面积（㎡）",
    "investor.origin": "投资来源",
    "investor.fortune_global_500": "世界500强",
    "investor.china_top_500": "中国企业500强",
    "investor.little_giant": "国家级专精特新“小巨人”",
    "investor.single_champion": "单项冠军",
    "flags.provincial_dispatch_list": "纳入省内资调度库",
    "flags.city_leader_campaign": "市领导带队招商/见证签约",
    "flags.city_observation_stop": "市大项目观摩点",
    "environment.emissions_ok": "环保达标",
    "environment.safety_ok": "安全达标",
    "environment.energy_ok": "能耗达标",
    "meeting_on": "评审会日期",
    "reported_on": "报送日期",
    "funds.amount": "到位资金金额",
    "funds.amount_rmb": "到位资金（折人民币）",
    "funds.arrived_on": "资金到位日期",
    "funds.currency": "币种",
    "funds.form": "出资方式",
    "funds.voucher.kind": "凭证类型",
    "environment.energy_tce": "综合能耗（吨标煤）",
    "environment.water_m3": "用水量（m³）",
    "investor.name": "投资方名称",
    "investor.credit_code": "统一社会信用代码",
    "investor.country": "投资方国别",
    "title": "项目名称",
    "lead_id": "线索编号",
    "project_id": "项目编号",
    "unit": "报送单位",
}

_DERIVED_COMMON = (
    FactSpec("project_id", FactType.text),
    FactSpec("sponsor_leader", FactType.text),
    *(
        FactSpec(f"filed.{doc.value}", FactType.boolean)
        for doc in DocumentType  # the contract's vocabulary of documents
    ),
)


def _base(annotation: Any) -> Any:
    """The type under Optional[...] and Annotated[...]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _walk(model: type[BaseModel], prefix: str) -> Iterator[FactSpec]:
    for name, field in model.model_fields.items():
        base = _base(field.annotation)
        path = prefix + name
        if isinstance(base, type) and issubclass(base, BaseModel):
            yield from _walk(base, path + ".")
        elif isinstance(base, type) and issubclass(base, Enum):
            yield FactSpec(path, FactType.text, tuple(str(m.value) for m in base))
        elif base is bool:
            yield FactSpec(path, FactType.boolean)
        elif base in (Decimal, int, float):
            yield FactSpec(path, FactType.number)
        elif base is dt.date:
            yield FactSpec(path, FactType.date)
        elif base is str:
            yield FactSpec(path, FactType.text)
        # lists (documents, agenda) are not comparable; `filed.*` stands in for documents


@cache
def known_facts(ruleset_id: str) -> Mapping[str, FactSpec]:
    """Every fact path a rule of this ruleset may name, with its type."""
    specs = [*_walk(Lead, ""), *_DERIVED_COMMON]
    if ruleset_id == "review":
        specs.append(FactSpec("meeting_on", FactType.date))
    elif ruleset_id == "scoring":
        specs.extend(s for s in _walk(Funds, "funds.") if s.path != "funds.project_id")
        specs.append(FactSpec("funds.amount_rmb", FactType.number))
    return {s.path: s for s in specs}


# --- building facts from inputs ----------------------------------------------------------


class FactsError(ValueError):
    """Input that cannot become facts: names the field and the problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems))


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    if not field.metadata:
        return TypeAdapter(field.annotation)
    return TypeAdapter(typing.Annotated[(field.annotation, *field.metadata)])  # type: ignore[valid-type]


def _partial(model: type[BaseModel], raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Validate each given field against the contract; fields left out stay out.

    Rule tests and `rules explain` describe only the fields a case is about, so the whole
    model cannot be required; every field that is given is checked exactly as intake would.
    """
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in raw.items():
        path = prefix + str(key)
        if key not in model.model_fields:
            problems.append((path, "unknown field / 未知字段"))
            continue
        if value is None:
            continue
        base = _base(model.model_fields[key].annotation)
        try:
            if isinstance(base, type) and issubclass(base, BaseModel):
                if isinstance(value, BaseModel):
                    value = value.model_dump(exclude_none=True)
                if not isinstance(value, Mapping):
                    raise FactsError([(path, "must be a mapping / 须为对象")])
                out[key] = _partial(base, value, path + ".")
            elif key == "documents" and model is Lead:
                out[key] = [_document(d, f"{path}[{i}]") for i, d in enumerate(value)]
            else:
                out[key] = _adapter(model, key).validate_python(value)
        except FactsError as exc:
            problems.extend(exc.problems)
        except ValidationError as exc:
            problems.extend((path, e["msg"]) for e in exc.errors())
    if problems:
        raise FactsError(problems)
    return out


def _document(raw: Any, path: str) -> dict[str, Any]:
    """A filed document: a DocumentRef/Document, a mapping with `type`, or just the type."""
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(exclude_none=True)
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise FactsError([(path, "a document needs a `type` / 文件须有类型")])
    # A `document` event also carries whose project it is; that is not part of the document.
    fields = {k: v for k, v in raw.items() if k not in ("project_id", "unit")}
    return _partial(DocumentRef, fields, path + ".")


def project_dict(project: Lead | Mapping[str, Any]) -> dict[str, Any]:
    """The project as validated Python values (Decimal, date, str, bool), nulls dropped."""
    if isinstance(project, Lead):
        return project.model_dump(exclude_none=True)
    if not isinstance(project, Mapping):
        raise FactsError([("project", "must be a Lead or a mapping / 须为项目对象")])
    return _partial(Lead, project, "project.")


def funds_dict(funds: Funds | Mapping[str, Any]) -> dict[str, Any]:
    """The funds record as validated Python values; amount, currency and date are required."""
    if isinstance(funds, Funds):
        return funds.model_dump(exclude_none=True)
    if not isinstance(funds, Mapping):
        raise FactsError([("funds", "must be a Funds record or a mapping / 须为到位资金对象")])
    out = _partial(Funds, funds, "funds.")
    missing = [k for k in ("amount", "currency", "arrived_on") if k not in out]
    if missing:
        raise FactsError([(f"funds.{k}", "required / 必填") for k in missing])
    return out


def document_types(project: Mapping[str, Any], extra: Iterable[Any] = ()) -> list[str]:
    """Types of the filed documents, the project's own and later ones, in first-seen order."""
    seen: dict[str, None] = {}
    for doc in project.get("documents", []):
        seen[str(doc["type"])] = None
    for i, doc in enumerate(extra):
        seen[str(_document(doc, f"documents[{i}]")["type"])] = None
    return list(seen)


def project_facts(
    project: Mapping[str, Any], filed: Iterable[str], sponsor_leader: str | None = None
) -> dict[str, Any]:
    facts = {k: v for k, v in project.items() if k != "documents"}
    facts["filed"] = {t: True for t in filed}
    if sponsor_leader is not None:
        facts["sponsor_leader"] = sponsor_leader
    return facts


def get_path(facts: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any step is absent."""
    node: Any = facts
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# --- engine form -----------------------------------------------------------------------


def engine_value(value: Any) -> Any:
    """One value as durable_rules compares it (see the module docstring on precision)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return engine_value(value.value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite number")
        if value == value.to_integral_value() and abs(value) < 2**53:
            return int(value)
        return float(value)
    if isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, dt.datetime):
        raise TypeError("datetimes are not facts: pass the date")
    if isinstance(value, dt.date):
        return value.toordinal()
    raise TypeError(f"{type(value).__name__} is not a fact value")


def to_engine(facts: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh JSON-able copy: the engine never sees (or keeps) the caller's objects."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            out[key] = to_engine(value)
        elif isinstance(value, list | tuple):
            continue  # lists are not comparable facts
        else:
            out[key] = engine_value(value)
    return out
