"""Rules engine benchmark: our wrapper against raw durable_rules, and memory over time.

    .venv/bin/python bench/rules.py [--evaluations N] [--reloads N] [--projects N] [--seed S]

Prints, on the same generated projects in the same run:
- evaluations/s through `RulesetRegistry.evaluate` (facts conversion, lock, all-matches,
  state check, Evaluation) and through raw durable_rules assert/collect/retract of the same
  compiled ruleset, and their ratio (target ≥ 0.5);
- RSS before and after N evaluations (default 1,000,000) and before and after publishing a
  version N times (default 300) through `add_version` with the rule-test gate
  (target: flat within 10 MB).
Numbers only: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from durable.engine import Host, MessageNotHandledException  # noqa: E402

from shared.contract import DocumentType, Land, Origin, ProjectKind  # noqa: E402
from shared.rules import RulesetRegistry, project_facts, to_engine  # noqa: E402
from shared.rules.compile import compile_ruleset  # noqa: E402
from shared.rules.resolve import resolve  # noqa: E402
from shared.rules.ruletest import gate_on_rule_tests  # noqa: E402

DAY = dt.date(2022, 6, 30)
INDUSTRIES = [
    "new_materials",
    "biomedicine",
    "high_end_chemicals",
    "modern_services",
    "coal_mining",
]


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    """Projects as the services pass them: validated Python values, some fields not given."""
    rng = random.Random(seed)
    docs = [d.value for d in DocumentType]
    out = []
    for _ in range(n):
        project: dict[str, Any] = {
            "kind": rng.choice([k.value for k in ProjectKind]),
            "industry": rng.choice(INDUSTRIES),
            "planned_investment": Decimal(
                rng.choice([50_000_000, 99_999_999.99, 100_000_000, 3e8])
            ),
            "land": rng.choice([x.value for x in Land]),
            "investor": {
                "origin": rng.choice([o.value for o in Origin]),
                "fortune_global_500": rng.random() < 0.1,
                "china_top_500": rng.random() < 0.1,
                "little_giant": rng.random() < 0.1,
            },
            "flags": {
                "provincial_dispatch_list": rng.random() < 0.2,
                "city_leader_campaign": rng.random() < 0.2,
            },
            "environment": {"emissions_ok": rng.random() < 0.95, "safety_ok": True},
            "reported_on": DAY,
        }
        if project["kind"] == "urban_complex":
            project["commercial_floor_area_m2"] = Decimal(rng.choice([80_000, 100_000, 150_000]))
        facts = project_facts(project, rng.sample(docs, rng.randint(0, len(docs))))
        facts["meeting_on"] = DAY
        out.append(facts)
    return out


class _RawHost(Host):  # type: ignore[misc]
    def __init__(self, fired: list[str]) -> None:
        self._fired = fired
        super().__init__()

    def _run(self) -> None:
        return None

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        fired = self._fired

        def action(c: Any) -> None:
            fired.append(action_name)

        return action


def raw_loop(definition: dict[str, Any], facts: list[dict[str, Any]], count: int) -> float:
    """durable_rules as the notes measured it: assert with a unique id, collect, retract."""
    fired: list[str] = []
    host = _RawHost(fired)
    host.set_rulesets({"raw": copy.deepcopy(definition)})
    prepared = [to_engine(f) for f in facts]  # JSON-ready beforehand: the raw engine's best case
    start = time.perf_counter()
    for i in range(count):
        fact = dict(prepared[i % len(prepared)], id=i + 1, sid="0")
        fired.clear()
        with contextlib.suppress(MessageNotHandledException):
            host.assert_fact("raw", fact)
        with contextlib.suppress(MessageNotHandledException):
            host.retract_fact("raw", fact)
    return count / (time.perf_counter() - start)


def ours_loop(
    registry: RulesetRegistry, ruleset_id: str, facts: list[dict[str, Any]], count: int
) -> float:
    start = time.perf_counter()
    for i in range(count):
        registry.evaluate(ruleset_id, facts[i % len(facts)], DAY)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    parser.add_argument("--reloads", type=int, default=300)
    parser.add_argument("--projects", type=int, default=5_000)
    parser.add_argument(
        "--rounds", type=int, default=20_000, help="evaluations per throughput round"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    import durable_rules_engine  # noqa: F401 - only to show which build ran

    print(
        f"investflow rules bench — Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    facts = generate(args.projects, args.seed)
    print(f"projects: {len(facts)} generated (seed {args.seed}); the same facts for both sides")

    registry = RulesetRegistry.from_paths([ROOT / "rulesets"])
    print(f"\nthroughput, evaluations/s (best of 3 rounds of {args.rounds:,}):")
    for ruleset_id in ("review", "scoring"):
        definition = dict(compile_ruleset(resolve(registry.in_force(ruleset_id, DAY))).definition)
        raw = max(raw_loop(definition, facts, args.rounds) for _ in range(3))
        ours = max(ours_loop(registry, ruleset_id, facts, args.rounds) for _ in range(3))
        matched = (
            sum(len(registry.evaluate(ruleset_id, f, DAY).matched) for f in facts[:1000]) / 1000
        )
        print(
            f"  {ruleset_id:8} raw durable_rules {raw:>9,.0f}/s   investflow {ours:>9,.0f}/s   "
            f"ratio {ours / raw:.2f}   ({matched:.1f} rules matched per project)"
        )

    # Warm up allocators and caches before taking the memory baseline.
    ours_loop(registry, "review", facts, 20_000)
    before = rss_mb()
    start = time.perf_counter()
    for i in range(args.evaluations):
        registry.evaluate("review" if i % 2 else "scoring", facts[i % len(facts)], DAY)
    took = time.perf_counter() - start
    after = rss_mb()
    print(
        f"\nRSS over {args.evaluations:,} evaluations (review and scoring alternating, {took:.0f} s):"
    )
    print(f"  before {before:.1f} MB   after {after:.1f} MB   change {after - before:+.1f} MB")

    text = (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    variants = [text, text.replace("    value: 1.5\n", "    value: 1.5\n", 1)]
    gated = RulesetRegistry(gate=gate_on_rule_tests(ROOT / "rulesets" / "tests"))
    gated.add_version(text, "bench")
    for _ in range(10):  # warm up the publication path, too
        gated.add_version(variants[0], "bench")
        gated.evaluate("scoring", facts[0], DAY).leaf_truths()
    before = rss_mb()
    start = time.perf_counter()
    for i in range(args.reloads):
        gated.add_version(variants[i % 2], "bench")
        gated.evaluate(
            "scoring", facts[i % len(facts)], DAY
        ).leaf_truths()  # explain registers, too
    took = time.perf_counter() - start
    after = rss_mb()
    print(
        f"\nRSS over {args.reloads} publications (add_version with the rule-test gate, {took:.0f} s):"
    )
    print(f"  before {before:.1f} MB   after {after:.1f} MB   change {after - before:+.1f} MB")
    gated.close()
    registry.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
