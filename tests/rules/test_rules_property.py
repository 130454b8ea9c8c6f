"""The engine agrees with the plain-Python reference evaluator (tests/rules/reference.py):
on the default 2022 rulesets over thousands of generated projects, and on generated rulesets
that use every operator, `not`, rule references and document lists."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contract import DocumentType, Land, Origin, ProjectKind
from shared.rules import RulesetRegistry, load_file, project_dict, project_facts
from shared.rules.explain import holds
from shared.rules.load import ruleset_from_data
from tests.rules.reference import Reference

ROOT = Path(__file__).resolve().parents[2]
SLOW = bool(os.environ.get("INVESTFLOW_SLOW"))  # the repo's switch for larger sizes
DAY = dt.date(2022, 6, 30)
CATALOGUE = (
    load_file(ROOT / "rulesets" / "review-2022.1.yaml").parameters["industry_catalogue"].value
)


@pytest.fixture(scope="module")
def registry() -> Iterator[RulesetRegistry]:
    with RulesetRegistry.from_paths([ROOT / "rulesets"]) as reg:
        yield reg


def money(places: int, edges: list[str]) -> st.SearchStrategy[Decimal]:
    return st.one_of(
        st.sampled_from([Decimal(e) for e in edges]),
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999999"), places=places),
    )


maybe_bool = st.one_of(st.none(), st.booleans())

projects = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from([k.value for k in ProjectKind]),
        "industry": st.sampled_from([*CATALOGUE, "coal_mining", "steel_rolling"]),
        "planned_investment": money(2, ["99999999.99", "100000000", "100000000.01"]),
        "land": st.sampled_from([x.value for x in Land]),
        "commercial_floor_area_m2": money(4, ["99999.9999", "100000", "100000.0001"]),
        "reported_on": st.just(DAY),
        "attracting_unit": st.sampled_from(["TS01", "DEVZONE"]),
        "investor": st.fixed_dictionaries(
            {},
            optional={
                "origin": st.sampled_from([o.value for o in Origin]),
                "fortune_global_500": maybe_bool,
                "china_top_500": maybe_bool,
                "little_giant": maybe_bool,
                "single_champion": maybe_bool,
            },
        ),
        "flags": st.fixed_dictionaries(
            {},
            optional={
                "provincial_dispatch_list": st.booleans(),
                "city_leader_campaign": st.booleans(),
                "city_observation_stop": st.booleans(),
            },
        ),
        "environment": st.fixed_dictionaries(
            {},
            optional={"emissions_ok": maybe_bool, "safety_ok": maybe_bool, "energy_ok": maybe_bool},
        ),
    },
)
document_sets = st.sets(st.sampled_from([d.value for d in DocumentType]))


@settings(
    max_examples=20000 if SLOW else 800,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=projects, filed=document_sets, meeting=st.sampled_from([None, dt.date(2022, 7, 15)]))
def test_engine_agrees_with_reference_on_default_rulesets(
    registry: RulesetRegistry, raw: dict[str, Any], filed: set[str], meeting: dt.date | None
) -> None:
    facts = project_facts(project_dict(raw), sorted(filed))
    if meeting is not None:
        facts["meeting_on"] = meeting
    review = registry.evaluate("review", facts, DAY)
    expected_matched, expected_applicable = Reference(review.resolved.ruleset).evaluate(facts)
    assert set(review.matched) == expected_matched
    assert set(review.applicable) == expected_applicable

    facts["funds"] = {
        "amount": Decimal("1000"),
        "currency": "CNY",
        "arrived_on": DAY,
        "form": "cash",
    }
    scoring = registry.evaluate("scoring", facts, DAY)
    assert set(scoring.matched) == Reference(scoring.resolved.ruleset).evaluate(facts)[0]


# --- generated rulesets ----------------------------------------------------------------------

NUMBERS = [0, 1, 5, 10, 100.5, 100000000]
DATES = [dt.date(2022, 1, 1), dt.date(2022, 6, 30), dt.date(2022, 12, 31)]
FACTS: dict[str, tuple[str, list[Any]]] = {
    "planned_investment": ("number", NUMBERS),
    "commercial_floor_area_m2": ("number", NUMBERS),
    "environment.energy_tce": ("number", NUMBERS),
    "reported_on": ("date", DATES),
    "meeting_on": ("date", DATES),
    "investor.fortune_global_500": ("bool", [True, False]),
    "flags.city_leader_campaign": ("bool", [True, False]),
    "environment.safety_ok": ("bool", [True, False]),
    "kind": ("text", ["industrial", "headquarters", "real_estate", "other"]),
    "land": ("text", ["new_land", "existing_land", "none"]),
    "investor.origin": ("text", ["foreign", "inside_city", "inside_county"]),
    "industry": ("text", ["new_materials", "biomedicine", "coal_mining", "bio_fuels"]),
    "title": ("text", ["新材料项目", "生物医药产业园", "Solar farm 2", "x"]),
}
PATTERNS = ["新材料.*", ".*产业园", "[A-Z][a-z]+ farm [0-9]", "bio.*", "(new|bio)_[a-z]+", "x?"]
OPS = {
    "number": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "missing"],
    "date": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "missing"],
    "bool": ["eq", "ne", "in", "exists", "missing"],
    "text": ["eq", "ne", "in", "not_in", "exists", "missing", "matches"],
}


@st.composite
def comparison(draw: st.DrawFn) -> dict[str, Any]:
    fact = draw(st.sampled_from(sorted(FACTS)))
    kind, pool = FACTS[fact]
    op = draw(st.sampled_from(OPS[kind]))
    if op in ("exists", "missing"):
        return {"fact": fact, op: True}
    if op == "matches":
        if fact not in ("industry", "title"):
            op = "eq"
        else:
            return {"fact": fact, "matches": draw(st.sampled_from(PATTERNS))}
    if op in ("in", "not_in"):
        return {"fact": fact, op: draw(st.lists(st.sampled_from(pool), max_size=3))}
    return {"fact": fact, op: draw(st.sampled_from(pool))}


conditions = st.recursive(
    comparison(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=6,
)


def _no_negated_matches(node: Any, negated: bool = False) -> Any:
    """The engine cannot negate a regex (check refuses it): turn such leaves into `exists`."""
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        return {key: [_no_negated_matches(c, negated) for c in node[key]]}
    if "not" in node:
        return {"not": _no_negated_matches(node["not"], not negated)}
    if "matches" in node and negated:
        return {"fact": node["fact"], "exists": True}
    return node


def _has_matches(node: Any) -> bool:
    if "all" in node or "any" in node:
        return any(_has_matches(c) for c in node.get("all", node.get("any", [])))
    if "not" in node:
        return _has_matches(node["not"])
    return "matches" in node


DOCS = [d.value for d in DocumentType]


@st.composite
def rulesets(draw: st.DrawFn) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for i in range(draw(st.integers(4, 10))):
        rules.append(
            {
                "id": f"r{i}",
                "title": {"zh": f"规则{i}", "en": f"rule {i}"},
                "when": _no_negated_matches(draw(conditions)),
                "outcome": {"action": "terminate"},
            }
        )
    plain = [r["id"] for r in rules if not _has_matches(r["when"])]
    for i in range(draw(st.integers(0, 3))):
        if not plain:
            break
        ref = {"rule": draw(st.sampled_from(plain))}
        if draw(st.booleans()):
            ref = {"not": ref}
        rules.append(
            {
                "id": f"ref{i}",
                "title": {"zh": f"引用{i}", "en": f"ref {i}"},
                "when": {
                    draw(st.sampled_from(["all", "any"])): [
                        ref,
                        _no_negated_matches(draw(conditions)),
                    ]
                },
                "outcome": {"action": "terminate"},
            }
        )
    doc_list = draw(st.lists(st.sampled_from(DOCS), max_size=3, unique=True))
    rules.append(
        {
            "id": "docs_list",
            "title": {"zh": "材料", "en": "materials"},
            **({"when": _no_negated_matches(draw(conditions))} if draw(st.booleans()) else {}),
            "outcome": {
                "action": "require_materials",
                "documents": doc_list,
                "due_days_before_meeting": 3,
            },
        }
    )
    groups = {
        "common": draw(st.lists(st.sampled_from(DOCS), max_size=2, unique=True)),
        "new_land": draw(st.lists(st.sampled_from(DOCS), max_size=2, unique=True)),
        "real_estate": draw(st.lists(st.sampled_from(DOCS), max_size=2, unique=True)),
    }
    rules.append(
        {
            "id": "docs_map",
            "title": {"zh": "证明", "en": "proofs"},
            "outcome": {
                "action": "not_recognised",
                "unless_filed": groups,
                "chosen_by": ["land", "kind"],
            },
        }
    )
    return {
        "id": "review",
        "version": "9.9",
        "title": {"zh": "生成", "en": "generated"},
        "effective": {"from": dt.date(2022, 1, 1)},
        "rules": rules,
    }


@st.composite
def fact_sets(draw: st.DrawFn) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for path, (kind, pool) in FACTS.items():
        if not draw(st.booleans()):
            continue
        value = draw(st.sampled_from(pool))
        if kind == "number":
            value = Decimal(str(value))
        node = facts
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    facts["filed"] = {d: True for d in draw(st.sets(st.sampled_from(DOCS), max_size=6))}
    return facts


@settings(
    max_examples=3000 if SLOW else 60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=rulesets(), samples=st.lists(fact_sets(), min_size=20, max_size=20))
def test_engine_agrees_with_reference_on_generated_rulesets(
    raw: dict[str, Any], samples: list[dict[str, Any]]
) -> None:
    ruleset = ruleset_from_data(raw, "<generated>")
    reference = Reference(ruleset)
    with RulesetRegistry() as registry:
        registry.load(ruleset)
        for facts in samples:
            evaluation = registry.evaluate("review", facts, DAY)
            matched, applicable = reference.evaluate(facts)
            assert set(evaluation.matched) == matched, facts
            assert set(evaluation.applicable) == applicable, facts
        # Explanations combine per-comparison answers from the engine; they must agree too.
        truths = evaluation.leaf_truths()
        for rule in evaluation.resolved.rules:
            assert holds(rule.condition, truths) == (rule.id in evaluation.matched), rule.id
