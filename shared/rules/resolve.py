"""A checked ruleset with its parameters put in: condition trees of plain comparisons and
the outcome of each rule. Both the compiler and the explanations read this form, so what is
explained is exactly what was compiled.

Two constructs are spelled out here:
- `{rule: X}` becomes X's own condition (wrapped in `Ref`, to be explained by name);
- a document requirement (`documents` / `unless_filed`) becomes "some listed document is
  not filed": an `any` of `missing: filed.<type>` comparisons, the per-group lists guarded by
  `chosen_by` facts equal to the group name (wrapped in `DocsMissing`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Union

from .facts import FactSpec, get_path, known_facts
from .model import (
    AllOf,
    AnyOf,
    AnyRule,
    AnyRuleset,
    Comparison,
    Multiplier,
    NotOf,
    NotRecognised,
    ParamRef,
    RequireMaterials,
    Route,
    RuleRef,
)


def plain(value: Any) -> Any:
    """A YAML value as compared: numbers as Decimal (via text, so 1.5 stays 1.5)."""
    if isinstance(value, bool | str | dt.date):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, list | tuple):
        return tuple(plain(v) for v in value)
    return value


@dataclass(frozen=True)
class Cmp:
    fact: str
    op: str
    value: Any  # plain(): Decimal, date, str, bool, or a tuple of them for in/not_in
    spec: FactSpec
    param: str | None = None  # the parameter the value came from, for explanations


@dataclass(frozen=True)
class All:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class AnyN:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Ref:
    rule: str
    item: Node


@dataclass(frozen=True)
class DocsMissing:
    need: DocumentNeed
    item: Node


Node = Union[Cmp, All, AnyN, Not, Ref, DocsMissing]  # noqa: UP007 - forward references


@dataclass(frozen=True)
class DocumentNeed:
    """Documents a rule asks for: `common` always, each group when a `chosen_by` fact equals
    the group's name (e.g. land = new_land → 不动产权证书)."""

    common: tuple[str, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    chosen_by: tuple[str, ...] = ()
    param: str | None = None

    def required(self, facts: Mapping[str, Any]) -> list[str]:
        out = dict.fromkeys(self.common)
        for group, docs in self.groups:
            if any(get_path(facts, path) == group for path in self.chosen_by):
                out.update(dict.fromkeys(docs))
        return list(out)

    def missing(self, facts: Mapping[str, Any]) -> list[str]:
        filed = facts.get("filed", {})
        return [doc for doc in self.required(facts) if not filed.get(doc)]


@dataclass(frozen=True)
class Outcome:
    action: str  # terminate | route | require_materials | not_recognised | multiplier
    track: str | None = None
    documents: DocumentNeed | None = None
    due_days: int | None = None
    multiplier: Decimal | None = None


@dataclass(frozen=True)
class ResolvedRule:
    id: str
    title_zh: str
    title_en: str
    condition: Node  # matches exactly when the rule matches
    applies: Node | None  # document rules: their `when` alone (None: always applies)
    outcome: Outcome
    parameters: tuple[str, ...]  # parameters this rule's decision depends on


@dataclass(frozen=True)
class ResolvedRuleset:
    ruleset: AnyRuleset
    rules: tuple[ResolvedRule, ...]
    by_id: Mapping[str, ResolvedRule] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.ruleset.key


TRUE = All(())
FALSE = AnyN(())


class _Resolver:
    def __init__(self, ruleset: AnyRuleset) -> None:
        self.ruleset = ruleset
        self.facts = known_facts(ruleset.id)
        self.rules = {r.id: r for r in ruleset.rules}
        self.memo: dict[str, Node] = {}

    def value(self, raw: Any) -> tuple[Any, str | None]:
        if isinstance(raw, ParamRef):
            return self.ruleset.parameters[raw.param].value, raw.param
        return raw, None

    def node(self, raw: Any) -> Node:
        if isinstance(raw, AllOf):
            return All(tuple(self.node(c) for c in raw.all))
        if isinstance(raw, AnyOf):
            return AnyN(tuple(self.node(c) for c in raw.any))
        if isinstance(raw, NotOf):
            return Not(self.node(raw.not_))
        if isinstance(raw, RuleRef):
            return Ref(raw.rule, self.condition(self.rules[raw.rule]))
        if isinstance(raw, Comparison):
            value, param = self.value(raw.value)
            return Cmp(raw.fact, raw.op, plain(value), self.facts[raw.fact], param)
        raise TypeError(f"not a condition: {raw!r}")

    def need(self, spec: Any, chosen_by: list[str]) -> DocumentNeed:
        value, param = self.value(spec)
        if isinstance(value, Mapping):
            return DocumentNeed(
                common=tuple(value.get("common", ())),
                groups=tuple((str(g), tuple(d)) for g, d in value.items() if g != "common"),
                chosen_by=tuple(chosen_by),
                param=param,
            )
        return DocumentNeed(common=tuple(value), param=param)

    def docs_node(self, need: DocumentNeed) -> Node:
        def missing(docs: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[Node]:
            return [
                Cmp(f"filed.{d}", "missing", True, self.facts[f"filed.{d}"])
                for d in dict.fromkeys(docs)
                if d not in skip
            ]

        branches: list[Node] = missing(need.common)
        for group, docs in need.groups:
            selectors: list[Node] = [
                Cmp(path, "eq", group, self.facts[path])
                for path in need.chosen_by
                if self.facts[path].values is None or group in (self.facts[path].values or ())
            ]
            extra = missing(docs, skip=need.common)
            if selectors and extra:
                chosen = selectors[0] if len(selectors) == 1 else AnyN(tuple(selectors))
                branches.append(All((chosen, extra[0] if len(extra) == 1 else AnyN(tuple(extra)))))
        return DocsMissing(need, AnyN(tuple(branches)))

    def outcome(self, rule: AnyRule) -> Outcome:
        out = rule.outcome
        if isinstance(out, Multiplier):
            value, _ = self.value(out.multiplier)
            return Outcome("multiplier", multiplier=Decimal(str(value)))
        if isinstance(out, Route):
            return Outcome("route", track=out.track)
        if isinstance(out, RequireMaterials):
            days, _ = self.value(out.due_days_before_meeting)
            return Outcome(
                "require_materials",
                documents=self.need(out.documents, out.chosen_by),
                due_days=days,
            )
        if isinstance(out, NotRecognised):
            need = None if out.unless_filed is None else self.need(out.unless_filed, out.chosen_by)
            return Outcome("not_recognised", documents=need)
        return Outcome(out.action)

    def condition(self, rule: AnyRule) -> Node:
        if rule.id not in self.memo:
            parts: list[Node] = []
            if rule.when is not None:
                parts.append(self.node(rule.when))
            outcome = self.outcome(rule)
            if outcome.documents is not None:
                parts.append(self.docs_node(outcome.documents))
            self.memo[rule.id] = parts[0] if len(parts) == 1 else All(tuple(parts))
        return self.memo[rule.id]

    def parameters(self, rule: AnyRule, seen: frozenset[str] = frozenset()) -> list[str]:
        names = list(_param_refs(rule.when))
        outcome_refs = [
            getattr(rule.outcome, name, None)
            for name in ("multiplier", "documents", "unless_filed", "due_days_before_meeting")
        ]
        names.extend(r.param for r in outcome_refs if isinstance(r, ParamRef))
        for ref in _rule_refs(rule.when):
            if ref not in seen:
                names.extend(self.parameters(self.rules[ref], seen | {rule.id}))
        return list(dict.fromkeys(names))

    def run(self) -> ResolvedRuleset:
        rules = []
        for rule in self.ruleset.rules:
            outcome = self.outcome(rule)
            applies = None
            if outcome.documents is not None and rule.when is not None:
                applies = self.node(rule.when)
            rules.append(
                ResolvedRule(
                    id=rule.id,
                    title_zh=rule.title.zh,
                    title_en=rule.title.en,
                    condition=self.condition(rule),
                    applies=applies,
                    outcome=outcome,
                    parameters=tuple(self.parameters(rule)),
                )
            )
        return ResolvedRuleset(self.ruleset, tuple(rules), {r.id: r for r in rules})


def _param_refs(node: Any) -> Iterator[str]:
    if isinstance(node, AllOf | AnyOf):
        for child in node.all if isinstance(node, AllOf) else node.any:
            yield from _param_refs(child)
    elif isinstance(node, NotOf):
        yield from _param_refs(node.not_)
    elif isinstance(node, Comparison) and isinstance(node.value, ParamRef):
        yield node.value.param


def _rule_refs(node: Any) -> Iterator[str]:
    if isinstance(node, AllOf | AnyOf):
        for child in node.all if isinstance(node, AllOf) else node.any:
            yield from _rule_refs(child)
    elif isinstance(node, NotOf):
        yield from _rule_refs(node.not_)
    elif isinstance(node, RuleRef):
        yield node.rule


def resolve(ruleset: AnyRuleset) -> ResolvedRuleset:
    """The checked ruleset in resolved form (call only on a ruleset `check` accepted)."""
    return _Resolver(ruleset).run()


def leaves(node: Node) -> Iterator[Cmp]:
    """Every comparison in a tree, in reading order."""
    if isinstance(node, Cmp):
        yield node
    elif isinstance(node, All | AnyN):
        for item in node.items:
            yield from leaves(item)
    else:
        yield from leaves(node.item)
