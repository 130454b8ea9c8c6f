"""The engine wrapper around durable_rules, and the registry of versions, on the real engine."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.rules import RulesEngine, RulesEngineError, RulesetError, RulesetRegistry, to_engine
from shared.rules.compile import STATE_GUARD, compile_ruleset
from shared.rules.engine import RulesetDropped
from shared.rules.load import parse_yaml, ruleset_from_data
from shared.rules.resolve import resolve
from shared.rules.ruletest import gate_on_rule_tests

ROOT = Path(__file__).resolve().parents[2]
SCORING_TEXT = (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
DAY = dt.date(2022, 6, 30)


def scoring_text(**changes: Any) -> str:
    data = parse_yaml(SCORING_TEXT, "s")
    for key, value in changes.items():
        if key in data["parameters"]:
            data["parameters"][key]["value"] = value
        else:
            data[key] = value
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def tiny(rules: list[dict[str, Any]]) -> Any:
    return ruleset_from_data(
        {
            "id": "review",
            "version": "t",
            "title": {"zh": "测", "en": "t"},
            "effective": {"from": dt.date(2022, 1, 1)},
            "rules": [
                {
                    "id": rid,
                    "title": {"zh": rid, "en": rid},
                    "when": when,
                    "outcome": {"action": "terminate"},
                }
                for rid, when in rules
            ],
        },
        "tiny.yaml",
    )


@pytest.fixture
def engine() -> RulesEngine:
    # A private engine so counts of registered rulesets are this test's own.
    return RulesEngine()


@pytest.fixture(scope="module")
def registry() -> Iterator[RulesetRegistry]:
    with RulesetRegistry.from_paths([ROOT / "rulesets"]) as reg:
        yield reg


def test_every_matching_rule_is_returned_not_just_the_first(registry: RulesetRegistry) -> None:
    facts = {
        "kind": "headquarters",
        "investor": {"origin": "foreign", "fortune_global_500": True},
        "flags": {"provincial_dispatch_list": True, "city_observation_stop": True},
    }
    ev = registry.evaluate("scoring", facts, DAY)
    assert ev.matched == (
        "foreign_funded",
        "top_enterprise",
        "provincial_dispatch_list",
        "city_observation_stop",
        "headquarters",
    )


def test_a_missing_fact_satisfies_no_comparison_but_satisfies_missing() -> None:
    ruleset = tiny(
        [
            ("ne", {"fact": "kind", "ne": "industrial"}),
            ("not_in", {"fact": "industry", "not_in": ["coal_mining"]}),
            ("lt", {"fact": "planned_investment", "lt": 1}),
            ("eq_false", {"fact": "environment.safety_ok", "eq": False}),
            ("missing", {"fact": "environment.safety_ok", "missing": True}),
            ("not_eq", {"not": {"fact": "kind", "eq": "industrial"}}),
            ("not_gte", {"not": {"fact": "planned_investment", "gte": 1}}),
        ]
    )
    with RulesetRegistry() as reg:
        reg.load(ruleset)
        assert reg.evaluate("review", {}, DAY).matched == ("missing", "not_eq", "not_gte")
        present = {
            "kind": "other",
            "industry": "steel",
            "planned_investment": Decimal("0.5"),
            "environment": {"safety_ok": False},
        }
        assert reg.evaluate("review", present, DAY).matched == (
            "ne",
            "not_in",
            "lt",
            "eq_false",
            "not_eq",
            "not_gte",
        )


def test_in_compiles_to_equalities_and_every_pattern_guards_the_state_fact(
    registry: RulesetRegistry,
) -> None:
    ruleset = registry.in_force("review", DAY)
    compiled = compile_ruleset(resolve(ruleset))
    text = json.dumps(compiled.definition)
    assert "$in" not in text  # the engine reads `$in` as a field name and never fires
    major = compiled.definition["m.major_project"]["all"][0]["m"]
    assert STATE_GUARD in major["$and"]
    assert {
        "$or": [{"kind": k} for k in ("industrial", "headquarters", "modern_services", "expansion")]
    } in major["$and"]
    for rule in compiled.definition.values():
        assert STATE_GUARD in rule["all"][0]["m"]["$and"]


def test_the_engine_is_given_a_copy_of_the_definition(
    engine: RulesEngine, registry: RulesetRegistry
) -> None:
    compiled = compile_ruleset(resolve(registry.in_force("scoring", DAY)))
    before = copy.deepcopy(compiled.definition)
    handle = engine.register("scoring@copy", compiled.definition)
    assert compiled.definition == before  # durable deletes `run` from what it is given
    engine.unregister(handle)


def test_facts_are_retracted_so_the_one_session_stays_empty(
    engine: RulesEngine, registry: RulesetRegistry
) -> None:
    compiled = compile_ruleset(resolve(registry.in_force("scoring", DAY)))
    handle = engine.register("scoring@retract", compiled.definition)
    for i in range(2000):
        facts = {"kind": "headquarters" if i % 2 else "other", "investor": {"origin": "foreign"}}
        engine.fire(handle, facts)
    assert engine._host.get_facts(handle.name, "0") == []
    engine.unregister(handle)


def test_an_action_that_fails_is_reported_and_the_state_cleared(
    engine: RulesEngine, registry: RulesetRegistry
) -> None:
    compiled = compile_ruleset(resolve(registry.in_force("scoring", DAY)))

    def boom(name: str) -> None:
        raise RuntimeError("collector broken")

    engine._host._on_fire = boom  # actions bind their collector when registered
    broken = engine.register("scoring@broken", compiled.definition)
    with pytest.raises(RulesEngineError, match=r"action failed.*collector broken"):
        engine.fire(broken, {"kind": "headquarters"})
    # The failure was cleared: a call on which no action runs is not blamed for it.
    assert engine.fire(broken, {"kind": "other"}) == frozenset()
    engine.unregister(broken)


def test_a_dropped_ruleset_cannot_be_used(engine: RulesEngine, registry: RulesetRegistry) -> None:
    compiled = compile_ruleset(resolve(registry.in_force("scoring", DAY)))
    handle = engine.register("scoring@drop", compiled.definition)
    engine.unregister(handle)
    assert handle.name not in engine._host._ruleset_directory
    with pytest.raises(RulesetDropped):
        engine.fire(handle, {"kind": "headquarters"})


def test_republishing_releases_the_replaced_version(engine: RulesEngine) -> None:
    with RulesetRegistry(engine=engine) as reg:
        reg.add_version(SCORING_TEXT)
        facts = {"kind": "headquarters", "investor": {"origin": "foreign"}}
        reg.evaluate("scoring", facts, DAY).leaf_truths()  # also registers the explain ruleset
        baseline = engine.registered
        for i in range(40):
            reg.add_version(scoring_text(foreign_multiplier=3 + i % 2))
            reg.evaluate("scoring", facts, DAY).leaf_truths()
        assert engine.registered == baseline
    assert engine.registered == 0


def test_the_version_in_force_is_picked_by_the_date_given() -> None:
    with RulesetRegistry() as reg:
        reg.add_version(SCORING_TEXT)
        reg.add_version(
            scoring_text(
                version="2023.1", effective={"from": dt.date(2023, 1, 1)}, foreign_multiplier=5
            )
        )
        foreign = {"investor": {"origin": "foreign"}}
        last = reg.evaluate("scoring", foreign, dt.date(2022, 12, 31))
        first = reg.evaluate("scoring", foreign, dt.date(2023, 1, 1))
        assert (last.version, last.outcome("foreign_funded").multiplier) == ("2022.1", Decimal(3))
        assert (first.version, first.outcome("foreign_funded").multiplier) == ("2023.1", Decimal(5))
        with pytest.raises(LookupError, match="no scoring ruleset in force on 2021-12-31"):
            reg.evaluate("scoring", foreign, dt.date(2021, 12, 31))
        with pytest.raises(TypeError):
            reg.evaluate("scoring", foreign, dt.datetime(2022, 1, 1, 12))  # type: ignore[arg-type]


def test_an_invalid_publication_is_refused_and_the_running_version_kept() -> None:
    with RulesetRegistry() as reg:
        reg.add_version(SCORING_TEXT)
        with pytest.raises(RulesetError, match="foreign_multiplier"):
            reg.add_version(scoring_text(foreign_multiplier="三倍"))
        assert [r.key for r in reg.versions("scoring")] == ["scoring@2022.1"]
        ev = reg.evaluate("scoring", {"investor": {"origin": "foreign"}}, DAY)
        assert ev.outcome("foreign_funded").multiplier == Decimal(3)


def test_a_published_version_takes_precedence_on_the_days_it_covers() -> None:
    foreign = {"investor": {"origin": "foreign"}}
    with RulesetRegistry() as reg:
        reg.add_version(SCORING_TEXT)  # 2022.1: the whole year, ×3
        reg.add_version(
            scoring_text(
                version="2022.2",
                effective={"from": dt.date(2022, 7, 1), "to": dt.date(2022, 12, 31)},
                foreign_multiplier=4,
            )
        )
        before, after = (
            reg.evaluate("scoring", foreign, dt.date(2022, 6, 30)),
            reg.evaluate("scoring", foreign, dt.date(2022, 7, 1)),
        )
        assert (before.version, before.outcome("foreign_funded").multiplier) == (
            "2022.1",
            Decimal(3),
        )
        assert (after.version, after.outcome("foreign_funded").multiplier) == ("2022.2", Decimal(4))
        # Rolling back is publishing 2022.1 again: it is newest, so it decides every day again.
        reg.add_version(SCORING_TEXT)
        assert reg.evaluate("scoring", foreign, dt.date(2022, 7, 1)).version == "2022.1"
        # 2022.1 covers all of 2022.2's days, so 2022.2 is dropped rather than kept forever.
        assert [r.key for r in reg.versions("scoring")] == ["scoring@2022.1"]


def test_a_publication_failing_its_rule_tests_is_never_loaded() -> None:
    with RulesetRegistry(gate=gate_on_rule_tests(ROOT / "rulesets" / "tests")) as reg:
        reg.add_version(SCORING_TEXT)
        with pytest.raises(RulesetError) as info:
            reg.add_version(scoring_text(foreign_multiplier=5))
        assert "rule test failed" in str(info.value)
        assert "外资项目按外资倍数" in str(info.value)  # the case that caught it
        with pytest.raises(RulesetError, match=re.escape("no rule test covers scoring@2031.1")):
            reg.add_version(scoring_text(version="2031.1", effective={"from": dt.date(2031, 1, 1)}))
        ev = reg.evaluate("scoring", {"investor": {"origin": "foreign"}}, DAY)
        assert ev.outcome("foreign_funded").multiplier == Decimal(3)
        assert [r.key for r in reg.versions("scoring")] == ["scoring@2022.1"]


def test_evaluations_on_many_threads_share_one_engine() -> None:
    with RulesetRegistry.from_paths([ROOT / "rulesets"]) as reg:
        cases = [
            ({"kind": "headquarters"}, ("headquarters",)),
            ({"investor": {"origin": "inside_city"}}, ("inside_city",)),
            (
                {"investor": {"origin": "foreign", "china_top_500": True, "china_rank": 12}},
                ("foreign_funded", "top_enterprise"),
            ),
            ({"kind": "other"}, ()),
        ]
        errors: list[str] = []

        def work(offset: int) -> None:
            for i in range(400):
                facts, expected = cases[(i + offset) % len(cases)]
                got = reg.evaluate("scoring", facts, DAY).matched
                if got != expected:
                    errors.append(f"{facts}: {got} != {expected}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_publishing_while_evaluating_swaps_atomically() -> None:
    with RulesetRegistry() as reg:
        reg.add_version(SCORING_TEXT)
        stop = threading.Event()
        seen: set[Decimal] = set()
        errors: list[BaseException] = []

        def evaluate() -> None:
            while not stop.is_set():
                try:
                    ev = reg.evaluate("scoring", {"investor": {"origin": "foreign"}}, DAY)
                    assert ev.matched == ("foreign_funded",)
                    seen.add(ev.outcome("foreign_funded").multiplier)  # type: ignore[arg-type]
                except BaseException as exc:
                    errors.append(exc)
                    return

        reader = threading.Thread(target=evaluate)
        reader.start()
        for i in range(30):
            reg.add_version(scoring_text(foreign_multiplier=3 + i % 2))
        stop.set()
        reader.join()
        assert errors == []
        assert seen <= {Decimal(3), Decimal(4)}


def test_facts_passed_in_are_left_as_they_were(registry: RulesetRegistry) -> None:
    facts = {
        "kind": "headquarters",
        "planned_investment": Decimal("1.50"),
        "reported_on": DAY,
        "filed": {},
    }
    before = copy.deepcopy(facts)
    registry.evaluate("review", facts, DAY)
    assert facts == before


def test_engine_form_of_facts() -> None:
    out = to_engine(
        {
            "a": Decimal("100000000.00"),
            "b": Decimal("99999999.99"),
            "d": dt.date(2022, 1, 2),
            "none": None,
            "nested": {"flag": True, "docs": ["x"]},
        }
    )
    assert out == {
        "a": 100000000,
        "b": 99999999.99,
        "d": dt.date(2022, 1, 2).toordinal(),
        "nested": {"flag": True},
    }
    with pytest.raises(TypeError):
        to_engine({"at": dt.datetime(2022, 1, 1, 8, 0)})


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_releasing_a_used_ruleset_frees_its_memory(
    engine: RulesEngine, registry: RulesetRegistry
) -> None:
    # delete_ruleset alone left ~175 KB per used ruleset (35 MB per 200 here).
    compiled = compile_ruleset(resolve(registry.in_force("scoring", DAY)))
    for _ in range(20):  # warm-up
        handle = engine.register("scoring@mem", compiled.definition)
        engine.fire(handle, {"kind": "headquarters"})
        engine.unregister(handle)
    before = _rss_mb()
    for i in range(200):
        handle = engine.register("scoring@mem", compiled.definition)
        engine.fire(handle, {"kind": "headquarters" if i % 2 else "other"})
        engine.unregister(handle)
    assert _rss_mb() - before < 8
    assert engine.registered == 0


def test_releasing_a_ruleset_on_which_nothing_ever_matched_does_not_crash() -> None:
    # Native deleteStateNode frees an action context that is never initialised until an
    # action runs; the engine runs its release rule first. In a subprocess, so a regression
    # fails this test instead of killing the test run.
    script = """
import datetime as dt
from shared.rules import RulesEngine
guard = {"$nex": {"$s": 1}}
never = {"a": {"all": [{"m": {"$and": [{"kind": "real_estate"}, guard]}}], "run": "a"}}
engine = RulesEngine()
for _ in range(50):
    handle = engine.register("never", never)
    engine.fire(handle, {"kind": "industrial"})
    engine.fire(handle, {"filed": {}})
    engine.unregister(handle)
print("released", engine.registered)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "released 0"
