"""What changed between two rulesets, in the maintainers' terms (dates, parameters, rules
with their titles in Chinese and English), not a text diff: `investflow rules diff A B`."""

from __future__ import annotations

from typing import Any

from .explain import show
from .model import AnyRuleset


def _value(value: Any) -> str:
    return show(value, limit=12)


def _outcome(rule: Any) -> str:
    dumped = rule.outcome.model_dump(by_alias=True, exclude_defaults=True)
    return ", ".join(f"{k}: {_value(v)}" for k, v in sorted(dumped.items()))


def diff(a: AnyRuleset, b: AnyRuleset) -> list[str]:
    """Lines describing each change from `a` to `b` (empty: the same policy)."""
    from .explain import text
    from .resolve import resolve

    out: list[str] = []
    if a.id != b.id:
        out.append(f"ruleset id / 规则集: {a.id} → {b.id}")
    if a.version != b.version:
        out.append(f"version / 版本: {a.version} → {b.version}")
    if a.effective != b.effective:
        out.append(f"in force / 生效期: {a.effective} → {b.effective}")
    for name in sorted(set(a.parameters) | set(b.parameters)):
        pa, pb = a.parameters.get(name), b.parameters.get(name)
        label = f"parameter {name}"
        if pa is None and pb is not None:
            out.append(
                f"+ {label} added / 新增参数: {_value(pb.value)} — {pb.description.zh} / {pb.description.en}"
            )
        elif pb is None and pa is not None:
            out.append(f"- {label} removed / 删除参数 (was {_value(pa.value)})")
        elif pa is not None and pb is not None and pa.value != pb.value:
            out.append(
                f"~ {label}: {_value(pa.value)} → {_value(pb.value)} — {pb.description.zh} / "
                f"{pb.description.en}"
            )
    ra = {r.id: r for r in resolve(a).rules}
    rb = {r.id: r for r in resolve(b).rules}
    ma = {r.id: r for r in a.rules}
    mb = {r.id: r for r in b.rules}
    for rid in [r for r in mb if r not in ma]:
        r = rb[rid]
        en, zh = text(r.condition)
        out.append(f"+ rule {rid} added / 新增规则：{r.title_zh} / {r.title_en}")
        out.append(f"    when / 条件: {en} / {zh}; outcome / 结果: {_outcome(mb[rid])}")
    for rid in [r for r in ma if r not in mb]:
        out.append(f"- rule {rid} removed / 删除规则：{ra[rid].title_zh} / {ra[rid].title_en}")
    for rid in [r for r in mb if r in ma]:
        x, y = ra[rid], rb[rid]
        head = f"~ rule {rid} ({y.title_zh} / {y.title_en})"
        if (x.title_zh, x.title_en) != (y.title_zh, y.title_en):
            out.append(
                f"{head}: title / 标题 {x.title_zh} / {x.title_en} → {y.title_zh} / {y.title_en}"
            )
        if ma[rid].when != mb[rid].when:
            (en_a, zh_a), (en_b, zh_b) = text(x.condition), text(y.condition)
            out.append(
                f"{head}: when / 条件\n    was / 原: {en_a} / {zh_a}\n    now / 现: {en_b} / {zh_b}"
            )
        if ma[rid].outcome != mb[rid].outcome:
            out.append(f"{head}: outcome / 结果 {_outcome(ma[rid])} → {_outcome(mb[rid])}")
    return out
