"""A plain-Python evaluator of the ruleset YAML, written from the language's definition and
sharing no code with the compiler: the property tests check the engine against it.

Used only in tests. Semantics (docs/rules.md):
- a fact that is absent (or null) satisfies no comparison, except `missing`;
- `not` negates whatever is inside it, so `not (x = 1)` holds when x is absent;
- `{rule: X}` holds when rule X matches;
- a rule with a document list (`documents` / `unless_filed`) matches when its `when` holds
  and at least one listed document is not filed; `common` is always listed, every other
  group when one of the `chosen_by` facts equals the group's name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Any

from shared.rules.model import (
    AllOf,
    AnyOf,
    AnyRuleset,
    Comparison,
    NotOf,
    ParamRef,
    RuleRef,
)


def _get(facts: Mapping[str, Any], path: str) -> Any:
    node: Any = facts
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return None
        node = node[part]
    return node


def _norm(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool | str | dt.date):
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    return value


class Reference:
    def __init__(self, ruleset: AnyRuleset) -> None:
        self.ruleset = ruleset
        self.rules = {r.id: r for r in ruleset.rules}

    def param(self, value: Any) -> Any:
        if isinstance(value, ParamRef):
            return self.ruleset.parameters[value.param].value
        return value

    def compare(self, facts: Mapping[str, Any], node: Comparison) -> bool:
        actual = _get(facts, node.fact)
        value = self.param(node.value)
        if node.op == "exists":
            return actual is not None
        if node.op == "missing":
            return actual is None
        if actual is None:
            return False
        if node.op == "matches":
            return re.fullmatch(value, _norm(actual)) is not None
        a = _norm(actual)
        if node.op in ("in", "not_in"):
            inside = any(a == _norm(v) for v in value)
            return inside if node.op == "in" else not inside
        v = _norm(value)
        return {
            "eq": lambda: a == v,
            "ne": lambda: a != v,
            "gt": lambda: a > v,
            "gte": lambda: a >= v,
            "lt": lambda: a < v,
            "lte": lambda: a <= v,
        }[node.op]()

    def holds(self, facts: Mapping[str, Any], node: Any) -> bool:
        if isinstance(node, AllOf):
            return all(self.holds(facts, c) for c in node.all)
        if isinstance(node, AnyOf):
            return any(self.holds(facts, c) for c in node.any)
        if isinstance(node, NotOf):
            return not self.holds(facts, node.not_)
        if isinstance(node, RuleRef):
            return self.matches(facts, node.rule)
        return self.compare(facts, node)

    def required(self, facts: Mapping[str, Any], rule_id: str) -> list[str] | None:
        outcome = self.rules[rule_id].outcome
        spec = getattr(outcome, "documents", None)
        if spec is None:
            spec = getattr(outcome, "unless_filed", None)
        if spec is None:
            return None
        docs = self.param(spec)
        if not isinstance(docs, Mapping):
            return list(docs)
        chosen = [_norm(_get(facts, p)) for p in outcome.chosen_by]
        out = list(docs.get("common", []))
        for group, listed in docs.items():
            if group != "common" and group in chosen:
                out.extend(listed)
        return out

    def applies(self, facts: Mapping[str, Any], rule_id: str) -> bool:
        when = self.rules[rule_id].when
        return True if when is None else self.holds(facts, when)

    def missing_documents(self, facts: Mapping[str, Any], rule_id: str) -> list[str]:
        filed = {k for k, v in facts.get("filed", {}).items() if v}
        return [d for d in self.required(facts, rule_id) or [] if d not in filed]

    def matches(self, facts: Mapping[str, Any], rule_id: str) -> bool:
        if not self.applies(facts, rule_id):
            return False
        if self.required(facts, rule_id) is None:
            return True
        return bool(self.missing_documents(facts, rule_id))

    def evaluate(self, facts: Mapping[str, Any]) -> tuple[set[str], set[str]]:
        """(matched rules, document rules whose requirement applies)."""
        matched = {rid for rid in self.rules if self.matches(facts, rid)}
        applicable = {
            rid
            for rid in self.rules
            if self.required(facts, rid) is not None and self.applies(facts, rid)
        }
        return matched, applicable
