"""`investflow rules validate | test | explain` as a rule maintainer runs them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from investflow.rules_cli import main

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "rulesets" / "tests"
SPEC_CASE = "外资世界500强取最高倍数一次 / a Fortune 500 investor from abroad takes the highest multiplier once"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["rules", *argv])
    return code, capsys.readouterr().out


def test_the_repository_rule_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "test", str(TESTS))
    assert code == 0, out
    assert re.fullmatch(r"\d+ passed, 0 failed", out.strip().splitlines()[-1])


def test_changing_one_expectation_fails_and_names_the_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tests = tmp_path / "tests"
    shutil.copytree(TESTS, tests)
    scoring = tests / "scoring-2022.yaml"
    text = scoring.read_text(encoding="utf-8")
    assert "      multiplier: 4\n" in text
    scoring.write_text(
        text.replace("      multiplier: 4\n", "      multiplier: 5\n", 1), encoding="utf-8"
    )
    code, out = run(capsys, "test", str(tests))
    assert code == 1
    lines = out.strip().splitlines()
    failing = [line for line in lines if line.startswith("FAIL")]
    assert len(failing) == 1
    assert f'case "{SPEC_CASE}"' in failing[0]
    assert "multiplier: expected 5, got 4" in failing[0]
    assert re.fullmatch(r"\d+ passed, 1 failed", lines[-1])


def test_a_bad_key_in_a_test_file_names_file_case_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "ruleset: scoring\ncases:\n  - name: typo case\n    project: {kind: industrial}\n"
        "    funds: {amount: 1, currency: CNY, arrived_on: 2022-01-05}\n    expect: {multiplyer: 1}\n",
        encoding="utf-8",
    )
    code, out = run(capsys, "test", str(bad))
    assert code == 1
    assert f'ERROR {bad}:6:14: case "typo case": expect.multiplyer: unknown key' in out
    assert out.strip().splitlines()[-1] == "0 passed, 1 failed"


def test_an_expected_rule_that_does_not_exist_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "ruleset: review\ncases:\n  - name: misspelt rule\n    on: 2022-02-01\n"
        "    project: {kind: real_estate}\n    expect: {reasons: [real_estate_exclude]}\n",
        encoding="utf-8",
    )
    code, out = run(capsys, "test", str(bad))
    assert code == 1
    assert "expect.reasons: no rule 'real_estate_exclude' in review@2022.1" in out


def test_rulesets_that_do_not_validate_are_not_loaded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rulesets = tmp_path / "rulesets"
    rulesets.mkdir()
    text = (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    (rulesets / "scoring-2022.1.yaml").write_text(
        text.replace("fact: kind, eq: headquarters", "fact: kind, eq: hq"), encoding="utf-8"
    )
    code, out = run(capsys, "test", str(TESTS), "--rulesets", str(rulesets))
    assert code == 1
    assert "rule headquarters: when.eq: 'hq' is not a value of `kind`" in out
    assert "nothing was loaded" in out


def test_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run(capsys, "validate", str(ROOT / "rulesets"))
    assert code == 0, out
    assert "review@2022.1" in out and "scoring@2022.1" in out and "notify@2022.1" in out
    assert "(rule tests, " in out
    broken = tmp_path / "review.yaml"
    text = (ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8")
    broken.write_text(
        text.replace("gte: {param: major_project_min_investment}", "gte: {param: major_min}"),
        encoding="utf-8",
    )
    code, out = run(capsys, "validate", str(broken))
    assert code == 1
    at = text.index("gte: {param: major_project_min_investment}")
    line, col = text[:at].count("\n") + 1, at - text.rfind("\n", 0, at)
    assert (
        f"ERROR  {broken}:{line}:{col}: rule major_project: when.all[1].gte: parameter `major_min` is not defined"
        in out
    )
    assert out.strip().splitlines()[-1] == "0 valid, 1 invalid"


def test_explain_review_in_chinese_and_english(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case = {
        "project": {
            "title": "生物医药产业园项目",
            "kind": "industrial",
            "industry": "biomedicine",
            "planned_investment": "80000000",
            "land": "new_land",
            "reported_on": "2022-04-01",
            "investor": {"name": "某公司", "origin": "foreign"},
            "environment": {"emissions_ok": True, "safety_ok": True, "energy_ok": True},
        },
        "documents": ["investment_proof"],
    }
    path = tmp_path / "project.json"
    path.write_text(json.dumps(case, ensure_ascii=False), encoding="utf-8")
    code, out = run(capsys, "explain", str(path))
    assert code == 0, out
    assert "初步筛选 Screening: 受理 accepted — 流程 track: 一般 standard" in out
    assert "认定 Recognition: 不予认定 not recognised — 障碍 blockers: landing_proofs" in out
    # major_project did not match: what would make it match, with the present value
    block = out[out.index("✗ major_project") :]
    assert (
        "需要：计划投资额（元）不小于参数 major_project_min_investment 100000000（现为 80000000）"
        in block
    )
    assert (
        "needs: `planned_investment` ≥ major_project_min_investment 100000000 (now 80000000)"
        in block
    )
    assert "major_project_min_investment = 100000000" in out


def test_explain_scoring_and_a_date_with_no_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case = {
        "project": {
            "kind": "headquarters",
            "attracting_unit": "TS01",
            "investor": {"name": "X", "origin": "inside_city", "credit_code": "91370000MA3C000009"},
        },
        "funds": {
            "amount": "1000000",
            "currency": "CNY",
            "arrived_on": "2022-07-01",
            "form": "cash",
        },
    }
    path = tmp_path / "funds.json"
    path.write_text(json.dumps(case), encoding="utf-8")
    code, out = run(capsys, "explain", str(path))
    assert code == 0, out
    assert "倍数 Multiplier: ×1.5（决定规则 deciding rule: headquarters" in out
    assert "计分 Points: 1500000" in out
    assert "✓ inside_city" in out and "✗ foreign_funded" in out
    code, out = run(capsys, "explain", str(path), "--on", "2024-01-01")
    assert code == 1
    assert "no scoring ruleset in force on 2024-01-01" in out


def test_the_investflow_command_runs_the_rule_tests() -> None:
    # The real entry point, as `make test` and maintainers run it.
    result = subprocess.run(
        [sys.executable, "-m", "investflow.main", "rules", "test", "rulesets/tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"\d+ passed, 0 failed", result.stdout.strip().splitlines()[-1])
