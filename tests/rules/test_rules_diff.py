"""`investflow rules diff A B` in maintainers' terms (issue 14.5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from investflow.rules_cli import main
from shared.settings import REPO_ROOT

SCORING = (REPO_ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
X2 = "        - {fact: investor.single_champion, eq: true}\n    outcome: {multiplier: 2}"


def test_diff_names_dates_parameters_and_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = (
        SCORING.replace('version: "2022.1"', 'version: "2022.2"', 1)
        .replace(
            "effective: {from: 2022-01-01, to: 2022-12-31}",
            "effective: {from: 2022-07-01, to: 2022-12-31}",
            1,
        )
        .replace(X2, X2.replace("multiplier: 2", "multiplier: 4"), 1)
        .replace("    value: 3\n", "    value: 4\n", 1)
        .replace("  - id: inside_city\n", "  - id: inside_city_gone\n", 1)
    )
    path = tmp_path / "scoring-2022.2.yaml"
    path.write_text(new, encoding="utf-8")
    assert (
        main(["rules", "diff", str(REPO_ROOT / "rulesets" / "scoring-2022.1.yaml"), str(path)]) == 0
    )
    out = capsys.readouterr().out
    assert "in force / 生效期: 2022-01-01..2022-12-31 → 2022-07-01..2022-12-31" in out
    assert "~ parameter foreign_multiplier: 3 → 4" in out
    assert (
        '~ rule little_giant (国家级专精特新“小巨人”或单项冠军企业 / National "little giant" or single champion): outcome / 结果 multiplier: 2 → multiplier: 4'
        in out
    )
    assert (
        "+ rule inside_city_gone added / 新增规则" in out
        and "- rule inside_city removed / 删除规则" in out
    )
    assert main(["rules", "diff", str(path), str(path)]) == 0
    assert "the same policy" in capsys.readouterr().out
