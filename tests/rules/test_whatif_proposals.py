"""`investflow rules whatif` on scoring's real tables (issue 14.3): a proposal is compared
with a named set; a version covering only some days changes only records on those days;
identical rules under new dates change nothing (a property over random date splits);
several files form one proposal; `--records` lists each changed record. The expected
numbers are computed by hand from the plan's multipliers, not by the code under test."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from investflow.rules_cli import main
from services.scoring import store
from services.scoring.inputs import inbox_key
from services.scoring.record import apply
from shared import subjects
from shared.db import create_tables, make_engine, unit_of_work
from shared.rules import default_registry
from shared.settings import REPO_ROOT
from tests.helpers import credit_code
from tests.scoring import builders

pytestmark = pytest.mark.timeout(300)

SCORING = (REPO_ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
WHOLE_YEAR = "effective: {from: 2022-01-01, to: 2022-12-31}"
X2 = "        - {fact: investor.single_champion, eq: true}\n    outcome: {multiplier: 2}"

# (unit, investor overrides, [(amount, arrived_on)]) — little giants ×2 in the plan.
PROJECTS = [
    ("TS01", {"little_giant": True}, [("1000000", "2022-03-10"), ("500000.50", "2022-08-01")]),
    ("TS02", {"little_giant": True, "origin": "foreign"}, [("2000000", "2022-09-15")]),
    ("TS03", {}, [("300000", "2022-10-01")]),
    ("TS04", {"little_giant": True}, [("100000", "2022-06-30"), ("100000", "2022-07-01")]),
]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('whatif') / 'scoring.db'}"
    engine = make_engine(url)
    create_tables(engine, store.TABLES)
    rules = default_registry()
    now = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    seq = 0
    ids = {}
    with unit_of_work(engine) as session:
        for unit, investor, funds in PROJECTS:
            lead = builders.lead(
                unit,
                investor={
                    "name": f"某某科技有限公司{unit}",
                    "origin": "outside_province",
                    "credit_code": credit_code(),
                }
                | investor,
            )
            events = [(subjects.canonical("lead"), lead)]
            events.append((subjects.REVIEW_RECOGNITION, builders.recognition(lead.project_id)))
            for i, (amount, day) in enumerate(funds):
                events.append(
                    (
                        subjects.canonical("funds"),
                        builders.funds(lead.project_id, f"F{i}", amount, "CNY", day),
                    )
                )
            for subject, event in events:
                seq += 1
                apply(session, event, inbox_key(subject, event), subject, seq, rules, now)
            ids[unit] = lead.project_id
    engine.dispose()
    yield url


def proposal(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def x4(
    effective: str = "effective: {from: 2022-07-01, to: 2022-12-31}", version: str = "2022.2"
) -> str:
    return (
        SCORING.replace('version: "2022.1"', f'version: "{version}"', 1)
        .replace(WHOLE_YEAR, effective, 1)
        .replace(X2, X2.replace("multiplier: 2", "multiplier: 4"), 1)
    )


def whatif(database: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    from investflow.main import build_parser

    args = build_parser().parse_args(
        ["rules", "whatif", *argv, "--year", "2022", "--database-url", database]
    )
    code = args.func(args, out=out)
    return code, out.getvalue()


def changed_records(database: str, *argv: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    code, out = whatif(database, *argv, "--records", "--format", "json")
    assert code == 0, out
    body = json.loads(out)
    return body["records"], {s["subject"]: s for s in body["subjects"] if s["changed"]}


def points(side: dict[str, Any] | None) -> Decimal:
    return Decimal(side["points"]) if side else Decimal(0)


def test_x4_from_july_changes_only_july_onward_little_giants_by_the_exact_amounts(
    database: str, tmp_path: Path
) -> None:
    file = proposal(tmp_path, "scoring-2022.2.yaml", x4())
    records, subjects_ = changed_records(
        database, str(file), "--against", str(REPO_ROOT / "rulesets")
    )
    got = {(r["project_id"].split("-")[0], r["arrived_on"]): r for r in records}
    # By hand: 500,000.50 ×2 → ×4; foreign ×3 vs little giant ×4 → the highest, 4; 100,000 ×2 → ×4.
    assert set(got) == {("TS01", "2022-08-01"), ("TS02", "2022-09-15"), ("TS04", "2022-07-01")}
    expect = {
        ("TS01", "2022-08-01"): ("1000001", "2000002", "little_giant", "little_giant"),
        ("TS02", "2022-09-15"): ("6000000", "8000000", "foreign_funded", "little_giant"),
        ("TS04", "2022-07-01"): ("200000", "400000", "little_giant", "little_giant"),
    }
    for key, (old, new, old_rule, new_rule) in expect.items():
        r = got[key]
        assert points(r["old"]) == Decimal(old) and points(r["new"]) == Decimal(new), r
        assert (r["old"]["deciding_rule"], r["new"]["deciding_rule"]) == (old_rule, new_rule)
        assert (r["old"]["version"], r["new"]["version"]) == ("2022.1", "2022.2")
    delta = {s: points(v["new"]) - points(v["old"]) for s, v in subjects_.items()}
    assert delta == {
        "TS01": Decimal("1000001"),
        "TS02": Decimal("2000000"),
        "TS04": Decimal("200000"),
        "DEVZONE": Decimal("3200001"),
    }


def test_a_proposal_inside_the_directory_compared_with_is_still_a_proposal(
    database: str, tmp_path: Path
) -> None:
    rulesets = tmp_path / "rulesets"
    shutil.copytree(REPO_ROOT / "rulesets", rulesets)
    file = proposal(rulesets, "scoring-2022.2.yaml", x4())
    code, out = whatif(database, str(file), "--against", str(rulesets))
    assert code == 0, out
    assert "(no rule or parameter differs)" not in out
    assert "rule little_giant: ×2 → ×4" in out
    assert "4 of " in out  # TS01, TS02, TS04 and DEVZONE


def test_several_files_form_one_proposal(database: str, tmp_path: Path) -> None:
    first = proposal(
        tmp_path,
        "scoring-2022.1.yaml",
        SCORING.replace(WHOLE_YEAR, "effective: {from: 2022-01-01, to: 2022-06-30}"),
    )
    second = proposal(tmp_path, "scoring-2022.2.yaml", x4())
    records, _ = changed_records(
        database, str(first), str(second), "--against", str(REPO_ROOT / "rulesets")
    )
    assert sorted((r["project_id"].split("-")[0], r["arrived_on"]) for r in records) == [
        ("TS01", "2022-08-01"),
        ("TS02", "2022-09-15"),
        ("TS04", "2022-07-01"),
    ]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(split=st.dates(dt.date(2022, 1, 2), dt.date(2022, 12, 31)), two_files=st.booleans())
def test_identical_rules_under_new_dates_change_nothing(
    database: str, tmp_path: Path, split: dt.date, two_files: bool
) -> None:
    later = SCORING.replace('version: "2022.1"', 'version: "2022.9"', 1).replace(
        WHOLE_YEAR, f"effective: {{from: {split}, to: 2022-12-31}}", 1
    )
    files = [proposal(tmp_path, "scoring-2022.9.yaml", later)]
    if two_files:
        earlier = SCORING.replace(
            WHOLE_YEAR, f"effective: {{from: 2022-01-01, to: {split - dt.timedelta(days=1)}}}", 1
        )
        files.append(proposal(tmp_path, "scoring-2022.1.yaml", earlier))
    records, subjects_ = changed_records(
        database, *map(str, files), "--against", str(REPO_ROOT / "rulesets")
    )
    assert records == [] and subjects_ == {}


def test_records_as_csv_and_a_clear_error_without_a_live_system(
    database: str, tmp_path: Path
) -> None:
    file = proposal(tmp_path, "scoring-2022.2.yaml", x4())
    code, out = whatif(
        database,
        str(file),
        "--against",
        str(REPO_ROOT / "rulesets"),
        "--records",
        "--format",
        "csv",
    )
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("project_id,arrived_on,amount,currency,old_version")
    assert len(lines) == 4 and any(
        ",2022-07-01,100000,CNY,2022.1,2,little_giant,200000," in x for x in lines
    )
    from investflow.nats_server import free_port

    code, out = whatif(database, str(file), "--url", f"nats://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot connect to NATS" in out and "--against rulesets/" in out
    assert main is not None


def test_the_top_level_whatif_is_rules_whatif(database: str, tmp_path: Path) -> None:
    """Issue 14.3: `investflow whatif` gave the old numbers (a July version emptied the first
    half's "new" column); it is now the same command as `investflow rules whatif`."""
    from investflow.main import build_parser

    file = proposal(tmp_path, "scoring-2022.2.yaml", x4())
    argv = ["--ruleset", str(file), "--against", str(REPO_ROOT / "rulesets"), "--records"]
    argv += ["--format", "json", "--year", "2022", "--database-url", database]
    outputs = []
    for command in (["whatif"], ["rules", "whatif"]):
        args = build_parser().parse_args([*command, *argv])
        out = io.StringIO()
        assert args.func(args, out=out) == 0, out.getvalue()
        outputs.append(json.loads(out.getvalue()))
    top, rules = outputs

    def untimed(body: dict[str, Any]) -> dict[str, Any]:  # the replay's wall time differs
        return {k: v for k, v in body.items() if not k.endswith("seconds")}

    assert untimed(top) == untimed(rules)
    # Only the July-onward records of little giants change; March and June keep ×2.
    assert sorted((r["project_id"].split("-")[0], r["arrived_on"]) for r in top["records"]) == [
        ("TS01", "2022-08-01"),
        ("TS02", "2022-09-15"),
        ("TS04", "2022-07-01"),
    ]
