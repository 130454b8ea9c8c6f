"""Checks that need the contract and the whole ruleset: fact paths, value types, parameters,
rule references, document lists. Every problem names the file, the rule and the key.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from shared.contract import DocumentType

from .facts import FactSpec, FactType, known_facts
from .model import (
    AllOf,
    AnyOf,
    AnyRule,
    AnyRuleset,
    Comparison,
    NotifyRuleset,
    NotOf,
    NotRecognised,
    ParamRef,
    Problem,
    RequireMaterials,
    RuleRef,
    ScoringRuleset,
)

DOCUMENT_TYPES = tuple(d.value for d in DocumentType)
QUARTERS = ("Q1", "Q2", "Q3", "Q4")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def scalar_problem(spec: FactSpec, value: Any) -> str | None:
    """Why `value` cannot be compared with the fact `spec`, or None."""
    path = spec.path
    if spec.type is FactType.number:
        if _is_number(value):
            return None
        if isinstance(value, str):
            return (
                f"`{path}` is a number, but {value!r} is text (remove the quotes) "
                f"/ `{path}` 是数值，{value!r} 是文字"
            )
        return f"`{path}` is a number, not {_show(value)} / `{path}` 是数值"
    if spec.type is FactType.boolean:
        if isinstance(value, bool):
            return None
        return f"`{path}` is true/false, not {_show(value)} / `{path}` 只能是 true 或 false"
    if spec.type is FactType.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return None
        if isinstance(value, str):
            return (
                f"`{path}` is a date, but {value!r} is text (write 2022-06-30 without quotes) "
                f"/ `{path}` 是日期，请去掉引号"
            )
        return f"`{path}` is a date, not {_show(value)} / `{path}` 是日期"
    if not isinstance(value, str):
        return f"`{path}` is text, but {_show(value)} is not (put it in quotes) / `{path}` 是文字"
    if spec.values is not None and value not in spec.values:
        close = difflib.get_close_matches(value, spec.values, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (
            f"{value!r} is not a value of `{path}` ({', '.join(spec.values)}){hint} "
            f"/ {value!r} 不是 `{path}` 的可选值"
        )
    return None


def pattern_problem(pattern: str) -> str | None:
    """The engine's regex dialect is small: refuse what it would silently mis-read."""
    if "\\" in pattern:
        return (
            "backslash escapes (\\d, \\w, \\.) are not supported by the engine: write [0-9], "
            "[.] instead / 引擎不支持反斜杠转义"
        )
    if "$" in pattern or any(
        ch == "^" and (i == 0 or pattern[i - 1] != "[") for i, ch in enumerate(pattern)
    ):
        return "no ^ or $: a pattern always matches the whole text / 模式总是匹配整段文字，无需 ^ $"
    if "(?" in pattern or re.search(r"[*+?}]\?", pattern):
        return "(?...) groups and lazy quantifiers are not supported / 不支持 (?...) 和惰性量词"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a valid pattern: {exc} / 模式无效"
    return engine_pattern_problem(pattern)


@functools.lru_cache(maxsize=256)
def engine_pattern_problem(pattern: str) -> str | None:
    """Some patterns Python accepts the engine cannot compile (error 504 for `(.*a){30}`):
    ask the engine itself, so such a rule is refused by `validate`, not at evaluation."""
    from .engine import shared_engine

    engine = shared_engine()
    definition = {"p": {"all": [{"m": {"$mt": {"x": pattern}}}], "run": "p"}}
    try:
        handle = engine.register("pattern-check", definition)
    except Exception as exc:
        return f"the rules engine cannot compile this pattern ({exc}); simplify it / 规则引擎无法编译该模式"
    try:
        engine.fire(handle, {"x": "0"})
    except Exception as exc:
        return (
            f"the rules engine fails on this pattern ({exc}); simplify it / 规则引擎无法执行该模式"
        )
    finally:
        engine.unregister(handle)
    return None


def value_problem(spec: FactSpec, op: str, value: Any) -> str | None:
    """Why `fact op value` is not a sensible comparison, or None."""
    if op in ("exists", "missing"):
        if value is True:
            return None
        other = "missing" if op == "exists" else "exists"
        return f"write `{op}: true` (for the opposite use `{other}: true`) / 请写 {op}: true"
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple):
            return f"`{op}` needs a list of values / `{op}` 需要列表"
        for item in value:
            problem = scalar_problem(spec, item)
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        return f"`{op}` compares with one value, not a list (use `in`) / `{op}` 只能比较单个值"
    if op in ("gt", "gte", "lt", "lte") and spec.type not in (FactType.number, FactType.date):
        return (
            f"`{op}` orders numbers or dates; `{spec.path}` is {spec.describe()} "
            f"/ 只有数值或日期可比较大小"
        )
    if op == "matches":
        if spec.type is not FactType.text:
            return f"`matches` applies to text; `{spec.path}` is {spec.describe()} / 只能匹配文字"
        if not isinstance(value, str):
            return f"`matches` needs a text pattern, not {_show(value)} / 需要文字模式"
        return pattern_problem(value)
    return scalar_problem(spec, value)


class _Checker:
    def __init__(self, ruleset: AnyRuleset, file: str) -> None:
        self.ruleset = ruleset
        self.file = file
        self.facts = known_facts(ruleset.id)
        self.rules = {rule.id: rule for rule in ruleset.rules}
        self.problems: list[Problem] = []

    def add(self, where: str, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, where, key, message))

    def param(self, where: str, key: str, ref: ParamRef) -> tuple[bool, Any]:
        parameter = self.ruleset.parameters.get(ref.param)
        if parameter is None:
            known = ", ".join(sorted(self.ruleset.parameters)) or "none"
            self.add(
                where,
                key,
                f"parameter `{ref.param}` is not defined (defined: {known}) / 参数未定义",
            )
            return False, None
        return True, parameter.value

    def fact(self, where: str, key: str, path: str, *, types: tuple[FactType, ...] = ()) -> bool:
        spec = self.facts.get(path)
        if spec is None:
            close = difflib.get_close_matches(path, list(self.facts), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            self.add(where, key, f"unknown fact `{path}`{hint} / 未知的事实字段")
            return False
        if types and spec.type not in types:
            self.add(where, key, f"`{path}` is {spec.describe()}, which cannot be used here")
            return False
        return True

    # --- conditions ---

    def condition(self, where: str, key: str, node: Any) -> None:
        if isinstance(node, AllOf):
            for i, child in enumerate(node.all):
                self.condition(where, f"{key}.all[{i}]", child)
        elif isinstance(node, AnyOf):
            for i, child in enumerate(node.any):
                self.condition(where, f"{key}.any[{i}]", child)
        elif isinstance(node, NotOf):
            self.condition(where, f"{key}.not", node.not_)
        elif isinstance(node, RuleRef):
            if node.rule not in self.rules:
                self.add(where, f"{key}.rule", f"no rule `{node.rule}` in this ruleset / 无此规则")
        elif isinstance(node, Comparison):
            self.comparison(where, key, node)

    def comparison(self, where: str, key: str, node: Comparison) -> None:
        if not self.fact(where, f"{key}.fact", node.fact):
            return
        value = node.value
        label = ""
        if isinstance(value, ParamRef):
            ok, value = self.param(where, f"{key}.{node.op}", value)
            if not ok:
                return
            label = f"parameter `{node.value.param}`: "
        problem = value_problem(self.facts[node.fact], node.op, value)
        if problem:
            self.add(where, f"{key}.{node.op}", label + problem)

    def negated_matches(
        self, node: Any, key: str, negated: bool, seen: frozenset[str]
    ) -> Iterator[str]:
        """Keys of `matches` reached under an odd number of `not`: the engine cannot negate a
        regex, so such a rule could never be compiled faithfully."""
        if isinstance(node, AllOf | AnyOf):
            items = node.all if isinstance(node, AllOf) else node.any
            tag = "all" if isinstance(node, AllOf) else "any"
            for i, child in enumerate(items):
                yield from self.negated_matches(child, f"{key}.{tag}[{i}]", negated, seen)
        elif isinstance(node, NotOf):
            yield from self.negated_matches(node.not_, f"{key}.not", not negated, seen)
        elif isinstance(node, RuleRef):
            target = self.rules.get(node.rule)
            if target is not None and target.when is not None and node.rule not in seen:
                for inner in self.negated_matches(target.when, "when", negated, seen | {node.rule}):
                    yield f"{key}.rule (rule {node.rule}: {inner})"
        elif isinstance(node, Comparison) and node.op == "matches" and negated:
            yield key

    # --- documents and outcomes ---

    def documents(self, where: str, key: str, spec: Any, chosen_by: list[str]) -> None:
        value = spec
        label = ""
        if isinstance(spec, ParamRef):
            ok, value = self.param(where, key, spec)
            if not ok:
                return
            label = f"parameter `{spec.param}`: "
        for i, path in enumerate(chosen_by):
            self.fact(
                where, f"{key.rsplit('.', 1)[0]}.chosen_by[{i}]", path, types=(FactType.text,)
            )
        if isinstance(value, list | tuple):
            if chosen_by:
                self.add(
                    where, key, label + "`chosen_by` needs a map of lists / chosen_by 需要分类清单"
                )
            self.document_list(where, key, label, value)
        elif isinstance(value, Mapping):
            if not chosen_by:
                self.add(
                    where,
                    key,
                    label + "a map of document lists needs `chosen_by` (the facts whose value "
                    "picks a list, e.g. [land, kind]) / 分类清单需指定 chosen_by",
                )
            for group, docs in value.items():
                if group != "common" and chosen_by and not self.group_fits(str(group), chosen_by):
                    self.add(
                        where,
                        f"{key}.{group}",
                        label + f"{group!r} is not a value of {', '.join(chosen_by)} "
                        "(nor `common`) / 分类名不是所列字段的取值",
                    )
                if not isinstance(docs, list | tuple):
                    self.add(where, f"{key}.{group}", label + "must be a list of document types")
                else:
                    self.document_list(where, f"{key}.{group}", label, docs)
        else:
            self.add(where, key, label + "must be a list of document types, or a map of such lists")

    def group_fits(self, group: str, chosen_by: list[str]) -> bool:
        specs = [self.facts.get(p) for p in chosen_by]
        return any(s is not None and (s.values is None or group in s.values) for s in specs)

    def document_list(self, where: str, key: str, label: str, docs: Any) -> None:
        for i, doc in enumerate(docs):
            if doc not in DOCUMENT_TYPES:
                close = difflib.get_close_matches(str(doc), DOCUMENT_TYPES, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.add(
                    where,
                    f"{key}[{i}]",
                    label + f"unknown document type {doc!r}{hint} / 未知文件类型",
                )

    def whole_number(self, where: str, key: str, value: Any) -> None:
        label = ""
        if isinstance(value, ParamRef):
            ok, resolved = self.param(where, key, value)
            if not ok:
                return
            label, value = f"parameter `{value.param}`: ", resolved
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.add(
                where,
                key,
                label + f"must be a whole number of days ≥ 0, not {_show(value)} / 须为非负整数",
            )

    def multiplier(self, where: str, key: str, value: Any) -> None:
        label = ""
        if isinstance(value, ParamRef):
            ok, resolved = self.param(where, key, value)
            if not ok:
                return
            label, value = f"parameter `{value.param}`: ", resolved
        if not _is_number(value) or value <= 0:
            self.add(
                where,
                key,
                label + f"a multiplier is a number > 0, not {_show(value)} / 倍数须为正数",
            )

    def rule(self, index: int, rule: AnyRule) -> None:
        where = f"rule {rule.id}"
        if rule.when is not None:
            self.condition(where, "when", rule.when)
            for key in self.negated_matches(rule.when, "when", False, frozenset({rule.id})):
                self.add(
                    where,
                    key,
                    "`matches` cannot be negated (write the pattern you want "
                    "to match instead) / 模式匹配不能取反",
                )
        outcome = rule.outcome
        if isinstance(outcome, RequireMaterials):
            self.documents(where, "outcome.documents", outcome.documents, outcome.chosen_by)
            self.whole_number(
                where, "outcome.due_days_before_meeting", outcome.due_days_before_meeting
            )
        elif isinstance(outcome, NotRecognised):
            if outcome.unless_filed is not None:
                self.documents(
                    where, "outcome.unless_filed", outcome.unless_filed, outcome.chosen_by
                )
            elif outcome.chosen_by:
                self.add(where, "outcome.chosen_by", "`chosen_by` only goes with `unless_filed`")
            elif rule.when is None:
                self.add(
                    where, "when", "a rule without `when` would block every project / 缺少 when"
                )
        elif hasattr(outcome, "multiplier"):
            self.multiplier(where, "outcome.multiplier", outcome.multiplier)
            if rule.when is None:
                self.add(
                    where, "when", "a rule without `when` would apply to every project / 缺少 when"
                )
        elif rule.when is None:
            self.add(
                where, "when", "a rule without `when` would apply to every project / 缺少 when"
            )

    def cycles(self) -> None:
        graph = {rid: sorted(set(_refs(rule.when))) for rid, rule in self.rules.items()}
        state: dict[str, int] = {}

        def visit(rid: str, path: list[str]) -> None:
            state[rid] = 1
            for nxt in graph.get(rid, []):
                if state.get(nxt) == 1:
                    cycle = " → ".join([*path[path.index(nxt) :], nxt])
                    self.add(
                        f"rule {rid}",
                        "when",
                        f"rules refer to each other in a circle: {cycle} / 规则循环引用",
                    )
                elif nxt in graph and state.get(nxt) is None:
                    visit(nxt, [*path, nxt])
            state[rid] = 2

        for rid in graph:
            if state.get(rid) is None:
                visit(rid, [rid])

    def scoring(self, ruleset: ScoringRuleset) -> None:
        if not _is_number(ruleset.default_multiplier) or ruleset.default_multiplier <= 0:
            self.add("", "default_multiplier", "must be a number > 0 / 须为正数")
        roles = ruleset.parameters.get("credit_roles")
        if roles is None:
            self.add(
                "",
                "parameters",
                "`credit_roles` is required: who is credited the points "
                "(e.g. [attracting_unit, landing_area, sponsor_leader]) / 缺少计分对象参数",
            )
        elif not isinstance(roles.value, list) or not roles.value:
            self.add("parameter credit_roles", "value", "must be a non-empty list of fact names")
        else:
            for i, role in enumerate(roles.value):
                spec = self.facts.get(role) if isinstance(role, str) else None
                if spec is None or spec.type is not FactType.text or "." in role or spec.values:
                    self.add(
                        "parameter credit_roles",
                        f"value[{i}]",
                        f"{role!r} is not a project field naming a unit or leader "
                        "(e.g. attracting_unit, landing_area, sponsor_leader)",
                    )
            if len(set(map(str, roles.value))) != len(roles.value):
                self.add("parameter credit_roles", "value", "lists a role twice / 重复")
        targets = ruleset.parameters.get("signing_targets")
        if targets is None:
            self.add(
                "",
                "parameters",
                "`signing_targets` is required: {Q1: n, Q2: n, Q3: n, Q4: n} "
                "/ 缺少季度签约目标参数",
            )
        elif not isinstance(targets.value, Mapping) or sorted(map(str, targets.value)) != list(
            QUARTERS
        ):
            self.add(
                "parameter signing_targets", "value", "must map exactly Q1, Q2, Q3, Q4 to numbers"
            )
        else:
            for q, n in targets.value.items():
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    self.add(
                        "parameter signing_targets", f"value.{q}", "must be a whole number ≥ 0"
                    )

    def run(self) -> list[Problem]:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.ruleset.rules):
            if rule.id in seen:
                self.add(
                    f"rule {rule.id}",
                    f"rules[{i}].id",
                    f"duplicate rule id (also rules[{seen[rule.id]}]) / 规则编号重复",
                )
            seen.setdefault(rule.id, i)
        for i, rule in enumerate(self.ruleset.rules):
            self.rule(i, rule)
        self.cycles()
        if isinstance(self.ruleset, ScoringRuleset):
            self.scoring(self.ruleset)
        if isinstance(self.ruleset, NotifyRuleset):
            self.notify(self.ruleset)
        return self.problems

    def notify(self, ruleset: NotifyRuleset) -> None:
        from pydantic import ValidationError

        from .load import pydantic_problems
        from .notify import notify_params

        try:
            notify_params(dict(ruleset.parameters))
        except ValidationError as exc:
            for p in pydantic_problems(exc, self.file, {}):
                name, _, rest = p.key.partition(".")
                where = f"parameter {name}" if name in ruleset.parameters else ""
                key = f"value.{rest}" if where and rest else ("value" if where else "parameters")
                message = p.message
                if p.message.startswith("required"):
                    message = f"`{name}` is required / 缺少参数 {name}"
                self.problems.append(Problem(self.file, where, key, message))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, AllOf):
        for child in node.all:
            yield from _refs(child)
    elif isinstance(node, AnyOf):
        for child in node.any:
            yield from _refs(child)
    elif isinstance(node, NotOf):
        yield from _refs(node.not_)
    elif isinstance(node, RuleRef):
        yield node.rule


def check(ruleset: AnyRuleset, file: str) -> list[Problem]:
    """Every semantic problem in an already well-formed ruleset (empty when it may load)."""
    return _Checker(ruleset, file).run()
