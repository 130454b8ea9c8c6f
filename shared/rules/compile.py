"""Resolved rules → durable_rules JSON rulesets.

What the engine lacks, and how it is made up for (see docs/durable-rules.md):
- no `$in`: `in` is an `$or` of equalities, `not_in` an `$and` of `$neq`;
- no `$not`: negation is pushed down to the comparisons (De Morgan), keeping the rule that a
  missing fact satisfies no comparison, so `not (x = 1)` is "x missing, or x ≠ 1";
  a regex cannot be negated, which `check` refuses up front;
- no constants: true/false are `$nex`/`$ex` of a field no fact has;
- every pattern carries `$nex $s`, so a rule can never match the engine's own state fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .facts import engine_value
from .resolve import All, AnyN, Cmp, DocsMissing, Node, Not, Ref, ResolvedRuleset, leaves

NEVER = "_never_"  # no fact has this field (facts are built from the contract's names)
TRUE: dict[str, Any] = {"$nex": {NEVER: 1}}
FALSE: dict[str, Any] = {"$ex": {NEVER: 1}}
STATE_GUARD: dict[str, Any] = {"$nex": {"$s": 1}}

MATCH = "m."  # durable rule `m.<id>`: the rule matches
APPLIES = "a."  # `a.<id>`: a document rule's `when` holds (its requirement applies)
LEAF = "l."  # `l.<n>`: one comparison, evaluated only to explain


class CompileError(ValueError):
    pass


def _join(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for part in parts:
        flat.extend(part[op] if set(part) == {op} else [part])
    return flat[0] if len(flat) == 1 else {op: flat}


def comparison(c: Cmp, negate: bool = False) -> dict[str, Any]:
    f = c.fact
    present: dict[str, Any] = {"$ex": {f: 1}}
    absent: dict[str, Any] = {"$nex": {f: 1}}
    if c.op == "exists":
        return absent if negate else present
    if c.op == "missing":
        return present if negate else absent
    if c.op == "matches":
        if negate:
            raise CompileError(f"`matches` on {f} cannot be negated")
        return {"$mt": {f: c.value}}

    def eq(v: Any) -> dict[str, Any]:
        return {f: engine_value(v)}

    def neq(v: Any) -> dict[str, Any]:
        return {"$neq": {f: engine_value(v)}}

    flip = {"gt": "$lte", "gte": "$lt", "lt": "$gte", "lte": "$gt"}
    if c.op in flip:
        op = flip[c.op] if negate else f"${c.op}"
        test = {op: {f: engine_value(c.value)}}
        return _join("$or", [absent, test]) if negate else test
    if c.op == "eq":
        return _join("$or", [absent, neq(c.value)]) if negate else eq(c.value)
    if c.op == "ne":
        return _join("$or", [absent, eq(c.value)]) if negate else neq(c.value)
    values = list(dict.fromkeys(c.value))
    if c.op == "in":
        if negate:
            return (
                _join("$or", [absent, _join("$and", [neq(v) for v in values])]) if values else TRUE
            )
        return _join("$or", [eq(v) for v in values]) if values else FALSE
    if c.op == "not_in":
        if negate:
            return _join("$or", [absent, *(eq(v) for v in values)])
        return _join("$and", [neq(v) for v in values]) if values else present
    raise CompileError(f"unknown operator {c.op}")


def expression(node: Node, negate: bool = False) -> dict[str, Any]:
    if isinstance(node, Ref | DocsMissing):
        return expression(node.item, negate)
    if isinstance(node, Not):
        return expression(node.item, not negate)
    if isinstance(node, All | AnyN):
        conjunction = isinstance(node, All) != negate
        parts = [expression(item, negate) for item in node.items]
        if not parts:
            return TRUE if conjunction else FALSE
        return _join("$and" if conjunction else "$or", parts)
    return comparison(node, negate)


def _rule(name: str, node: Node) -> dict[str, Any]:
    return {"all": [{"m": _join("$and", [expression(node), STATE_GUARD])}], "run": name}


@dataclass(frozen=True)
class Compiled:
    definition: Mapping[str, Any]  # the durable_rules ruleset (pass a deep copy to the host)
    names: Mapping[str, tuple[str, str]]  # durable rule name → ("match" | "applies", rule id)


def compile_ruleset(resolved: ResolvedRuleset) -> Compiled:
    definition: dict[str, Any] = {}
    names: dict[str, tuple[str, str]] = {}
    for rule in resolved.rules:
        definition[MATCH + rule.id] = _rule(MATCH + rule.id, rule.condition)
        names[MATCH + rule.id] = ("match", rule.id)
        if rule.applies is not None:
            definition[APPLIES + rule.id] = _rule(APPLIES + rule.id, rule.applies)
            names[APPLIES + rule.id] = ("applies", rule.id)
    return Compiled(definition, names)


def compile_leaves(resolved: ResolvedRuleset) -> tuple[dict[str, Any], list[Cmp]]:
    """One durable rule per distinct comparison, so an explanation can say which parts of a
    rule held, as judged by the engine itself rather than a second evaluator."""
    found: dict[Cmp, None] = {}
    for rule in resolved.rules:
        found.update(dict.fromkeys(leaves(rule.condition)))
        if rule.applies is not None:
            found.update(dict.fromkeys(leaves(rule.applies)))
    cmps = list(found)
    definition = {
        f"{LEAF}{i}": {
            "all": [{"m": _join("$and", [comparison(c), STATE_GUARD])}],
            "run": f"{LEAF}{i}",
        }
        for i, c in enumerate(cmps)
    }
    return definition, cmps
