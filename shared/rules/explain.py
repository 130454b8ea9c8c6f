"""Conditions in words, Chinese and English, and for a rule that did not match, the parts of
its condition that were not met ("what would make it match").

Which comparisons hold is asked of the engine (`Evaluation.leaf_truths`), so the explanation
and the decision can never disagree about a comparison.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .facts import LABELS_ZH, get_path
from .registry import Evaluation
from .resolve import All, Cmp, DocsMissing, Node, Not, Ref

Bi = tuple[str, str]  # (en, zh)

_OPS: dict[str, Bi] = {
    "eq": ("=", "等于"),
    "ne": ("≠", "不等于"),
    "gt": (">", "大于"),
    "gte": ("≥", "不小于"),
    "lt": ("<", "小于"),
    "lte": ("≤", "不大于"),
    "in": ("is one of", "属于"),
    "not_in": ("is not one of", "不属于"),
    "matches": ("matches", "匹配"),
}


def show(value: Any, limit: int = 6) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return (
            str(int(value))
            if value == value.to_integral_value()
            else format(value.normalize(), "f")
        )
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{" + "; ".join(f"{k}: {show(v, limit)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        items = [show(v) for v in value[:limit]]
        more = f", … (+{len(value) - limit})" if len(value) > limit else ""
        return "[" + ", ".join(items) + more + "]"
    return str(value)


def _label(path: str) -> Bi:
    return f"`{path}`", LABELS_ZH.get(path, path)


def text(node: Node) -> Bi:
    """The condition in words."""
    if isinstance(node, Cmp):
        en_l, zh_l = _label(node.fact)
        if node.op == "exists":
            return f"{en_l} is given", f"{zh_l}已填写"
        if node.op == "missing":
            if node.fact.startswith("filed."):
                doc = node.fact.removeprefix("filed.")
                return f"{doc} not filed", f"未提交 {doc}"
            return f"{en_l} is not given", f"{zh_l}未填写"
        en_op, zh_op = _OPS[node.op]
        value = show(node.value)
        if node.param:
            return f"{en_l} {en_op} {node.param} {value}", f"{zh_l}{zh_op}参数 {node.param} {value}"
        return f"{en_l} {en_op} {value}", f"{zh_l}{zh_op} {value}"
    if isinstance(node, Ref):
        return f"rule {node.rule} matches", f"规则 {node.rule} 命中"
    if isinstance(node, DocsMissing):
        source = f" ({node.need.param})" if node.need.param else ""
        return f"a required document is not filed{source}", f"有规定文件未提交{source}"
    if isinstance(node, Not):
        en, zh = text(node.item)
        return f"not ({en})", f"并非（{zh}）"
    parts = [text(item) for item in node.items]
    if isinstance(node, All):
        if not parts:
            return "always", "总是"
        return " and ".join(p[0] for p in parts), "，且".join(p[1] for p in parts)
    if not parts:
        return "never", "从不"
    return "one of: " + " | ".join(p[0] for p in parts), "以下之一：" + "｜".join(
        p[1] for p in parts
    )


def holds(node: Node, truths: Mapping[Cmp, bool]) -> bool:
    if isinstance(node, Cmp):
        return truths[node]
    if isinstance(node, Ref | DocsMissing):
        return holds(node.item, truths)
    if isinstance(node, Not):
        return not holds(node.item, truths)
    if isinstance(node, All):
        return all(holds(i, truths) for i in node.items)
    return any(holds(i, truths) for i in node.items)


def _actual(node: Cmp, facts: Mapping[str, Any]) -> Bi:
    value = get_path(facts, node.fact)
    if value is None:
        return "not given", "未填写"
    return f"now {show(value)}", f"现为 {show(value)}"


def unmet(node: Node, truths: Mapping[Cmp, bool], facts: Mapping[str, Any]) -> list[Bi]:
    """The parts of a false condition that would have to hold for it to hold, each with the
    fact's present value: "what would make it match"."""
    if holds(node, truths):
        return []
    if isinstance(node, Cmp):
        en, zh = text(node)
        if node.op == "missing" and node.fact.startswith("filed."):
            doc = node.fact.removeprefix("filed.")
            return [(f"{doc} is filed", f"已提交 {doc}")]
        a_en, a_zh = _actual(node, facts)
        return [(f"{en} ({a_en})", f"{zh}（{a_zh}）")]
    if isinstance(node, Ref):
        inner = unmet(node.item, truths, facts)
        return [
            (
                f"rule {node.rule} matching: " + "; ".join(i[0] for i in inner),
                f"规则 {node.rule} 命中：" + "；".join(i[1] for i in inner),
            )
        ]
    if isinstance(node, DocsMissing):
        source = f" ({node.need.param})" if node.need.param else ""
        return [
            (
                f"a required document not filed{source} — all are filed",
                f"有规定文件未提交{source}——现已全部提交",
            )
        ]
    if isinstance(node, Not):
        en, zh = text(node.item)
        return [(f"not ({en})", f"并非（{zh}）")]
    if isinstance(node, All):
        return [line for item in node.items for line in unmet(item, truths, facts)]
    options = [unmet(item, truths, facts) for item in node.items]
    if len(options) == 1:
        return options[0]
    en = " | ".join("; ".join(o[0] for o in opt) for opt in options)
    zh = "｜".join("；".join(o[1] for o in opt) for opt in options)
    return [(f"one of: {en}", f"以下之一：{zh}")]


@dataclass(frozen=True)
class RuleReport:
    id: str
    title_en: str
    title_zh: str
    matched: bool
    condition: Bi
    unmet: list[Bi]


def report(evaluation: Evaluation) -> list[RuleReport]:
    """Every rule of the evaluated version: matched or not, and if not, what was not met."""
    truths = evaluation.leaf_truths()
    out = []
    for rule in evaluation.resolved.rules:
        matched = rule.id in evaluation.matched
        out.append(
            RuleReport(
                id=rule.id,
                title_en=rule.title_en,
                title_zh=rule.title_zh,
                matched=matched,
                condition=text(rule.condition),
                unmet=[] if matched else unmet(rule.condition, truths, evaluation.facts),
            )
        )
    return out
