"""A ruleset that is wrong is refused with an error naming the file, the rule and the key."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.rules import RulesetError, load_paths, load_text
from shared.rules.load import parse_yaml, ruleset_from_data, with_parameters

ROOT = Path(__file__).resolve().parents[2]
REVIEW = parse_yaml(
    (ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8"), "review"
)
SCORING = parse_yaml(
    (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8"), "scoring"
)


def refused(data: dict[str, Any], file: str = "rulesets/x.yaml") -> str:
    with pytest.raises(RulesetError) as info:
        ruleset_from_data(data, file)
    return str(info.value)


def rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def test_default_rulesets_are_valid() -> None:
    loaded = load_paths([ROOT / "rulesets"])
    assert sorted(r.key for r, _ in loaded) == ["notify@2022.1", "review@2022.1", "scoring@2022.1"]


def test_spec_rule_ids_and_parameters_are_exactly_those_of_spec_section_6() -> None:
    """SPEC §6's ids, plus those issue 13 (assessment integrity) added, each marked below."""
    assert [r["id"] for r in REVIEW["rules"]] == [
        "real_estate_excluded",
        "industry_out_of_scope",
        "environment_failed",
        "major_project",
        "committee_materials",
        "committee_approval_missing",  # issue 13.2: a major project needs an approval
        "inside_county_source",
        "environment_not_assessed",  # issue 13.5: unassessed is not recognised
        "landing_proofs",
    ]
    assert set(REVIEW["parameters"]) == {
        "industry_catalogue",
        "major_project_min_investment",
        "agenda_lead_days",
        "committee_materials",
        "landing_proofs",
        "approval_requires",  # 13.4
        "funds_voucher_from_funds_record",  # 13.6
        "unassessed_waiver_below",  # 13.5
    }
    assert [r["id"] for r in SCORING["rules"]] == [
        "foreign_funded",
        "top_enterprise",
        "little_giant",
        "provincial_dispatch_list",
        "city_leader_campaign",
        "city_observation_stop",
        "headquarters",
        "urban_complex",
        "inside_city",
    ]
    assert set(SCORING["parameters"]) == {
        "foreign_multiplier",
        "top_enterprise_multiplier",
        "urban_complex_min_floor_area_m2",
        "credit_roles",
        "signing_targets",
        # issue 13.7, 13.8, 13.15: counts, targets, rates and the combination reading
        "china_top_n",
        "multiplier_combination",
        "new_start_min_amount",
        "new_start_target",
        "rate_definitions",
        "signing_excluded_origins",
        "signing_min_amount",
        "unit_signing_targets",
    }
    assert SCORING["parameters"]["signing_targets"]["value"] == {
        "Q1": 6,
        "Q2": 15,
        "Q3": 15,
        "Q4": 6,
    }


def test_every_parameter_names_the_clause_of_the_plan_it_implements() -> None:
    for data in (REVIEW, SCORING):
        for name, param in data["parameters"].items():
            assert "·" in param["reference"] or "实施方案" in param["reference"], name
            assert param["description"]["zh"] and param["description"]["en"], name


def test_unknown_key_in_a_rule() -> None:
    data = copy.deepcopy(SCORING)
    rule(data, "headquarters")["whn"] = rule(data, "headquarters").pop("when")
    message = refused(data)
    assert "rulesets/x.yaml: rule headquarters: whn: unknown key" in message


def test_unknown_operator_names_the_rule_and_key() -> None:
    data = copy.deepcopy(SCORING)
    rule(data, "headquarters")["when"] = {"fact": "kind", "equals": "headquarters"}
    assert "rule headquarters: when: unknown key 'equals'" in refused(data)


def test_unknown_fact_path_suggests_the_right_one() -> None:
    data = copy.deepcopy(SCORING)
    rule(data, "foreign_funded")["when"] = {"fact": "investor.orign", "eq": "foreign"}
    message = refused(data)
    assert "rule foreign_funded: when.fact: unknown fact `investor.orign`" in message
    assert "did you mean `investor.origin`" in message


def test_number_field_compared_with_text() -> None:
    data = copy.deepcopy(REVIEW)
    rule(data, "major_project")["when"]["all"][1] = {
        "fact": "planned_investment",
        "gte": "100000000",
    }
    message = refused(data)
    assert "rule major_project: when.all[1].gte:" in message
    assert "is a number, but '100000000' is text" in message


def test_parameter_of_the_wrong_type_is_refused_where_it_is_used() -> None:
    data = copy.deepcopy(REVIEW)
    data["parameters"]["major_project_min_investment"]["value"] = "一亿"
    assert (
        "rule major_project: when.all[1].gte: parameter `major_project_min_investment`"
        in refused(data)
    )


def test_enum_value_typo() -> None:
    data = copy.deepcopy(REVIEW)
    rule(data, "real_estate_excluded")["when"] = {"fact": "kind", "eq": "realestate"}
    message = refused(data)
    assert "'realestate' is not a value of `kind`" in message
    assert "did you mean 'real_estate'" in message


def test_duplicate_rule_ids() -> None:
    data = copy.deepcopy(SCORING)
    data["rules"].append(copy.deepcopy(rule(data, "headquarters")))
    assert "rule headquarters: rules[9].id: duplicate rule id (also rules[6])" in refused(data)


def test_parameter_referenced_but_not_defined() -> None:
    data = copy.deepcopy(SCORING)
    del data["parameters"]["foreign_multiplier"]
    message = refused(data)
    assert (
        "rule foreign_funded: outcome.multiplier: parameter `foreign_multiplier` is not defined"
        in message
    )


def test_parameter_missing_in_a_condition() -> None:
    data = copy.deepcopy(REVIEW)
    del data["parameters"]["industry_catalogue"]
    assert (
        "rule industry_out_of_scope: when.not_in: parameter `industry_catalogue` is not defined"
        in refused(data)
    )


def test_unknown_document_type_in_a_parameter() -> None:
    data = copy.deepcopy(REVIEW)
    data["parameters"]["landing_proofs"]["value"]["new_land"] = ["land_certificate"]
    message = refused(data)
    assert (
        "rule landing_proofs: outcome.unless_filed.new_land[0]: parameter `landing_proofs`"
        in message
    )
    assert "did you mean 'land_use_certificate'" in message


def test_document_group_that_no_chosen_fact_can_take() -> None:
    data = copy.deepcopy(REVIEW)
    data["parameters"]["landing_proofs"]["value"]["new_lnad"] = ["land_use_certificate"]
    assert "'new_lnad' is not a value of land, kind" in refused(data)


def test_matches_cannot_be_negated_and_regex_dialect_is_checked() -> None:
    data = copy.deepcopy(REVIEW)
    rule(data, "real_estate_excluded")["when"] = {"not": {"fact": "title", "matches": ".*房地产.*"}}
    assert "rule real_estate_excluded: when.not: `matches` cannot be negated" in refused(data)
    rule(data, "real_estate_excluded")["when"] = {"fact": "title", "matches": r"\d+号地块"}
    assert "backslash escapes" in refused(data)


def test_negated_matches_through_a_rule_reference() -> None:
    data = copy.deepcopy(REVIEW)
    rule(data, "real_estate_excluded")["when"] = {"fact": "title", "matches": ".*房地产.*"}
    rule(data, "inside_county_source")["when"] = {"not": {"rule": "real_estate_excluded"}}
    assert "rule inside_county_source: when.not.rule (rule real_estate_excluded: when)" in refused(
        data
    )


def test_rule_references_must_exist_and_not_loop() -> None:
    data = copy.deepcopy(REVIEW)
    rule(data, "committee_materials")["when"] = {"rule": "major_projects"}
    assert "rule committee_materials: when.rule: no rule `major_projects`" in refused(data)
    data = copy.deepcopy(REVIEW)
    rule(data, "major_project")["when"] = {"rule": "committee_materials"}
    assert "rules refer to each other in a circle" in refused(data)


def test_ordering_a_text_field_is_refused() -> None:
    data = copy.deepcopy(SCORING)
    rule(data, "headquarters")["when"] = {"fact": "kind", "gt": "headquarters"}
    assert "`gt` orders numbers or dates" in refused(data)


def test_version_must_be_quoted_text() -> None:
    text = (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    with pytest.raises(RulesetError) as info:
        load_text(text.replace('version: "2022.1"', "version: 2022.10"), "s.yaml")
    line = text[: text.index('version: "2022.1"')].count("\n") + 1
    assert f"s.yaml:{line}:1: version: write the version in quotes" in str(info.value)


def test_yaml_key_written_twice_is_an_error_with_its_line() -> None:
    text = (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    doubled = text.replace("    value: 3\n", "    value: 3\n    value: 4\n", 1)
    with pytest.raises(RulesetError) as info:
        load_text(doubled, "s.yaml")
    assert "key 'value' is written twice" in str(info.value)
    line = doubled[: doubled.index("    value: 4\n")].count("\n") + 1
    assert f"s.yaml:{line}:5: key" in str(info.value)


def test_on_and_no_stay_words_in_yaml() -> None:
    # YAML 1.1 would read these as booleans; a test case's `on:` must stay a key.
    assert parse_yaml("on: 2022-06-30\ncountry: no\n", "f") == {
        "on": __import__("datetime").date(2022, 6, 30),
        "country": "no",
    }


def test_scoring_needs_credit_roles_and_signing_targets() -> None:
    data = copy.deepcopy(SCORING)
    data["parameters"]["signing_targets"]["value"] = {"Q1": 6, "Q2": 15, "Q3": 15}
    data["parameters"]["credit_roles"]["value"] = ["attracting_unit", "investor.name"]
    message = refused(data)
    assert "parameter signing_targets: value: must map exactly Q1, Q2, Q3, Q4" in message
    assert "parameter credit_roles: value[1]: 'investor.name' is not a project field" in message


def test_every_problem_is_reported_at_once() -> None:
    data = copy.deepcopy(SCORING)
    rule(data, "foreign_funded")["when"] = {"fact": "investor.orign", "eq": "foreign"}
    rule(data, "headquarters")["outcome"] = {"multiplier": {"param": "hq_multiplier"}}
    with pytest.raises(RulesetError) as info:
        ruleset_from_data(data, "f.yaml")
    assert {p.where for p in info.value.problems} == {"rule foreign_funded", "rule headquarters"}


def test_overlapping_versions_of_one_ruleset_across_files(tmp_path: Path) -> None:
    later = copy.deepcopy(SCORING)
    later["version"] = "2022.2"
    later["effective"] = {"from": dt.date(2022, 7, 1)}
    (tmp_path / "scoring-2022.1.yaml").write_text(
        (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "scoring-2022.2.yaml").write_text(
        yaml.safe_dump(later, allow_unicode=True), encoding="utf-8"
    )
    with pytest.raises(RulesetError) as info:
        load_paths([tmp_path])
    message = str(info.value)
    assert (
        "scoring-2022.2.yaml:3:1: effective: scoring@2022.2 (2022-07-01..) overlaps scoring@2022.1"
        in message
    )


def test_consecutive_versions_load_together(tmp_path: Path) -> None:
    nxt = copy.deepcopy(SCORING)
    nxt["version"] = "2023.1"
    nxt["effective"] = {"from": dt.date(2023, 1, 1)}
    (tmp_path / "a.yaml").write_text(
        (ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(nxt, allow_unicode=True), encoding="utf-8")
    assert sorted(r.key for r, _ in load_paths([tmp_path])) == ["scoring@2022.1", "scoring@2023.1"]


def test_parameter_override_is_checked_like_a_file() -> None:
    ruleset = ruleset_from_data(copy.deepcopy(SCORING), "s.yaml")
    assert (
        with_parameters(ruleset, {"foreign_multiplier": 4}, "t.yaml", "case A")
        .parameters["foreign_multiplier"]
        .value
        == 4
    )
    with pytest.raises(RulesetError) as info:
        with_parameters(ruleset, {"foreign_multiplyer": 4}, "t.yaml", 'case "A"')
    assert (
        't.yaml: case "A": parameters.foreign_multiplyer: scoring@2022.1 has no such parameter'
        in str(info.value)
    )
    with pytest.raises(RulesetError) as info:
        with_parameters(ruleset, {"foreign_multiplier": "三"}, "t.yaml", 'case "A"')
    assert "a multiplier is a number > 0" in str(info.value)
