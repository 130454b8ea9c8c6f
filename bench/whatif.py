"""What-if benchmark: replay a generated year through a proposed scoring ruleset.

    .venv/bin/python bench/whatif.py [--leads 100000] [--funds 500000] [--database-url URL]
                                     [--keep PATH] [--seed 2022]

Generates a year of facts straight into scoring's own tables (projects with their lead,
sponsor leader and recognition; funds records; the Center's daily rates, a few days
missing), not through NATS, then runs the what-if as `investflow rules whatif --against
rulesets/` does: rulesets/ vs `little_giant` at ×3, both replayed from the tables. Prints the
generation time, then the replay's wall time and records/s (target: under 60 s for
100,000 leads and 500,000 funds records on a 2-core machine). Numbers only: nothing here
asserts timings. Default database: a temporary SQLite file (--keep PATH to keep it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from services.scoring import store, whatif  # noqa: E402
from services.scoring.scoreboard import default_directory  # noqa: E402
from shared.contract import make_credit_code  # noqa: E402
from shared.db import create_tables, make_engine  # noqa: E402
from shared.rules import load_paths, rulesets_dir  # noqa: E402
from shared.rules.load import load_file  # noqa: E402

UNITS = ["TS01", "TS02", "TS03", "TS04", "TS05", "TS06", "TS07", "TS08"]
UNITS += ["DEVZONE", "CHEMPARK", "BIOPARK", "DRC", "COMMERCE", "MIIT", "NRB"]
AREAS = [
    "TS01",
    "TS02",
    "TS03",
    "TS04",
    "TS05",
    "TS06",
    "TS07",
    "TS08",
    "DEVZONE",
    "CHEMPARK",
    "BIOPARK",
]
LEADERS = ["L01", "L02", "L03", "L04", "L05", "L06"]
KINDS = [
    ("industrial", 50),
    ("headquarters", 8),
    ("modern_services", 15),
    ("expansion", 12),
    ("urban_complex", 5),
    ("financial_institution", 5),
    ("other", 5),
]
ORIGINS = [
    ("foreign", 8),
    ("outside_province", 40),
    ("outside_city", 27),
    ("inside_city", 20),
    ("inside_county", 5),
]
CURRENCIES = [("CNY", 85), ("USD", 8), ("EUR", 4), ("HKD", 3)]
BASE_RATES = {"USD": Decimal("6.70"), "EUR": Decimal("7.10"), "HKD": Decimal("0.86")}
CHUNK = 20_000


def pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def lead_json(rng: random.Random, i: int, unit: str, area: str) -> str:
    kind = pick(rng, KINDS)
    origin = pick(rng, ORIGINS)
    investor: dict[str, object] = {"name": f"Investor {i}", "origin": origin}
    if origin == "foreign":
        investor["country"] = rng.choice(["DE", "US", "JP", "SG", "KR"])
    else:
        investor["credit_code"] = make_credit_code(f"91320100{i:09d}")
    for flag, p in (
        ("fortune_global_500", 0.02),
        ("china_top_500", 0.04),
        ("little_giant", 0.05),
        ("single_champion", 0.02),
    ):
        if rng.random() < p:
            investor[flag] = True
    flags = {
        f: True
        for f, p in (
            ("provincial_dispatch_list", 0.06),
            ("city_leader_campaign", 0.05),
            ("city_observation_stop", 0.03),
        )
        if rng.random() < p
    }
    lead: dict[str, object] = {
        "unit": unit,
        "lead_id": f"B{i:06d}",
        "title": f"Generated project {i}",
        "attracting_unit": unit,
        "landing_area": area,
        "kind": kind,
        "industry": "new_materials",
        "planned_investment": str(rng.randrange(10, 2000) * 1_000_000),
        "land": rng.choice(["new_land", "existing_land", "none"]),
        "investor": investor,
        "flags": flags,
        "reported_on": "2022-01-01",
    }
    if kind == "urban_complex":
        lead["commercial_floor_area_m2"] = str(rng.randrange(20, 300) * 1000)
    return json.dumps(lead, ensure_ascii=False)


def generate(engine, leads: int, funds: int, seed: int, year: int = 2022) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    days = [dt.date(year, 1, 1) + dt.timedelta(days=d) for d in range(365)]
    missing = set(rng.sample(days, 10))  # the Center skipped these days
    counts = {"leads": leads, "funds": funds, "recognised": 0}
    with engine.begin() as conn:
        rates = [
            {
                "on": day,
                "currency": cur,
                "cny_per_unit": str(
                    (base * Decimal(1 + rng.uniform(-0.03, 0.03))).quantize(Decimal("0.0001"))
                ),
                "stream_seq": 0,
            }
            for day in days
            if day not in missing
            for cur, base in BASE_RATES.items()
        ]
        conn.execute(insert(store.Rate), rates)
        batch = []
        _projects: list[dict[str, object]] = []
        for i in range(leads):
            unit, area = rng.choice(UNITS), rng.choice(AREAS)
            recognised = rng.random() < 0.8
            counts["recognised"] += recognised
            batch.append(
                {
                    "project_id": f"{unit}-B{i:06d}",
                    "lead": lead_json(rng, i, unit, area),
                    "attracting_unit": unit,
                    "landing_area": area,
                    "sponsor_leader": rng.choice(LEADERS) if rng.random() < 0.5 else None,
                    "sponsor_seq": 0,
                    "recognized": recognised,
                    "recognition": None,
                    "recognition_seq": 0,
                }
            )
            if len(batch) == CHUNK:
                conn.execute(insert(store.Project), batch)
                _projects.extend({"project_id": r["project_id"]} for r in batch)
                batch = []
        if batch:
            conn.execute(insert(store.Project), batch)
            _projects.extend({"project_id": r["project_id"]} for r in batch)
        project_ids = [str(row["project_id"]) for row in _projects]
        batch = []
        for n in range(funds):
            pid = project_ids[n % leads] if n < leads else rng.choice(project_ids)
            batch.append(
                {
                    "project_id": pid,
                    "funds_id": f"F{n:07d}",
                    "amount_fen": rng.randrange(1_000_000, 5_000_000_000),
                    "currency": pick(rng, CURRENCIES),
                    "arrived_on": rng.choice(days),
                    "form": "cash",
                    "payload": "{}",
                    "event_id": f"bench:{n}",
                    "state": "held",
                    "hold_reason": None,
                    "holds": 0,
                    "entries": 0,
                }
            )
            if len(batch) == CHUNK:
                conn.execute(insert(store.FundsRecord), batch)
                batch = []
        if batch:
            conn.execute(insert(store.FundsRecord), batch)
    return counts


def proposal_file(directory: Path) -> Path:
    text = (rulesets_dir() / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    rule = text.index("- id: little_giant")
    end = text.index("outcome: {multiplier: 2}", rule)
    path = directory / "scoring-little-giant-3.yaml"
    path.write_text(text[:end] + "outcome: {multiplier: 3}" + text[end + 24 :], encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--funds", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--keep", type=Path, default=None, help="SQLite file to write and keep")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="investflow-bench-") as tmp:
        url = args.database_url or f"sqlite:///{args.keep or Path(tmp) / 'scoring.db'}"
        if args.keep and args.keep.exists():
            args.keep.unlink()
        engine = make_engine(url)
        create_tables(engine, store.TABLES)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}; database: {url.split('://')[0]}",
            flush=True,
        )
        started = time.perf_counter()
        counts = generate(engine, args.leads, args.funds, args.seed)
        print(
            f"generated {counts['leads']:,} leads ({counts['recognised']:,} recognised) and "
            f"{counts['funds']:,} funds records into scoring's tables in {time.perf_counter() - started:.1f}s",
            flush=True,
        )

        baseline = [(r, o) for r, o in load_paths([rulesets_dir()]) if r.id == "scoring"]
        proposal = proposal_file(Path(tmp))
        sides = whatif.proposal_rules(baseline, [(load_file(proposal), str(proposal))])
        wall = time.perf_counter()
        result = whatif.run(
            engine,
            2022,
            sides.base,
            sides.proposed,
            proposal="little_giant ×3",
            ruleset_changes=sides.changes,
            directory=default_directory(),
            compare_stored=False,
        )
        wall = time.perf_counter() - wall
        sides.close()
        engine.dispose()

    print(whatif.render_table(result, only_changed=True))
    print()
    print(
        f"what-if replay: {result.records:,} funds records ({result.replayed:,} scored per side, "
        f"old and new) in {wall:.2f}s wall = {result.records / wall:,.0f} records/s "
        f"(load {result.load_seconds:.2f}s, score {result.replay_seconds:.2f}s, "
        f"{result.evaluations:,} rule evaluations)"
    )
    print("target: under 60 s for 100,000 leads and 500,000 funds records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
