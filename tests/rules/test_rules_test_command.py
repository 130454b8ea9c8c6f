"""`investflow rules test -v | --run | --coverage | --require-coverage` (issue 14.7)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from investflow.rules_cli import main
from shared.settings import REPO_ROOT

TESTS = REPO_ROOT / "rulesets" / "tests"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["rules", "test", *argv])
    return code, capsys.readouterr().out


def test_verbose_lists_each_case_with_the_rules_it_matched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(capsys, str(TESTS), "-v", "--run", "单项冠军按2倍")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[-1] == "1 passed, 0 failed"
    assert (
        lines[0].startswith("ok   ")
        and 'case "单项冠军按2倍 / a single champion counts ×2"' in lines[0]
    )
    assert "[scoring@2022.1]: matched / 命中: little_giant" in lines[0]


def test_run_picks_cases_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(TESTS), "--run", "headquarters")
    assert code == 0
    picked = int(out.strip().splitlines()[-1].split()[0])
    code, out = run(capsys, str(TESTS))
    assert 0 < picked < int(out.strip().splitlines()[-1].split()[0])


def test_the_shipped_rulesets_are_covered_both_ways(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(TESTS), "--require-coverage")
    assert code == 0, out
    assert "MISSING" not in out
    assert "ok      scoring@2022.1 little_giant:" in out


def test_require_coverage_fails_for_a_rule_no_case_matches(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rulesets = tmp_path / "rulesets"
    shutil.copytree(REPO_ROOT / "rulesets", rulesets)
    scoring = rulesets / "scoring-2022.1.yaml"
    text = scoring.read_text(encoding="utf-8")
    extra = (
        "\n  - id: data_centre\n    title: {zh: 数据中心, en: Data centre}\n"
        "    when: {fact: planned_investment, gt: 900000000000}\n"
        "    outcome: {multiplier: 1.2}\n"
    )
    scoring.write_text(text.rstrip("\n") + "\n" + extra, encoding="utf-8")
    code, out = run(
        capsys, str(rulesets / "tests"), "--rulesets", str(rulesets), "--require-coverage"
    )
    assert code == 1, out
    assert "MISSING scoring@2022.1 data_centre: 0 / " in out
    assert "no case where it matches / 缺少命中用例" in out
    # Without the flag the same run passes: coverage is reported, not required.
    code, out = run(capsys, str(rulesets / "tests"), "--rulesets", str(rulesets), "--coverage")
    assert code == 0, out


def test_explain_a_notify_situation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The notify ruleset is explained like the other two (issue 14.9)."""
    import json

    path = tmp_path / "situation.json"
    path.write_text(
        json.dumps({"on": "2022-05-09", "situation": {"days_without_visit": 9}}), encoding="utf-8"
    )
    assert main(["rules", "explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "提醒 Alerts: visit_overdue" in out
    assert "✓ visit_overdue: N = 7（现为 now 9）" in out
    assert "✗ visit_escalated: N = 14（现为 now 9）；再过 6 天 in 6 more days" in out
