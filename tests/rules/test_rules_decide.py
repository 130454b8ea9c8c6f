"""Review and scoring decisions: outcomes, explanations, dates, money."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.review import decide as review
from services.scoring import decide as scoring
from shared.contract import (
    Credited,
    Document,
    DocumentRef,
    Funds,
    Lead,
    Rates,
    Recognition,
    Screened,
    make_credit_code,
)
from shared.rules import FactsError, RulesetRegistry, default_registry
from shared.rules.load import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
PROOFS = [
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
    "progress_images",
]


@pytest.fixture(scope="module")
def rules() -> Iterator[RulesetRegistry]:
    with RulesetRegistry.from_paths([ROOT / "rulesets"]) as reg:
        yield reg


def lead(**changes: Any) -> Lead:
    data: dict[str, Any] = {
        "lead_id": "ZS2022-0042",
        "title": "年产5万吨新材料项目",
        "attracting_unit": "TS03",
        "landing_area": "CHEMPARK",
        "kind": "industrial",
        "industry": "new_materials",
        "planned_investment": "120000000.00",
        "land": "new_land",
        "investor": {
            "name": "上海某新材料有限公司",
            "credit_code": make_credit_code("91310000MA1FL0000"),
            "origin": "outside_province",
        },
        "environment": {"emissions_ok": True, "safety_ok": True, "energy_ok": True},
        "reported_on": "2022-03-14",
        "documents": [{"type": "basic_info_form", "ref": "TS03-2022-001"}],
    }
    data.update(changes)
    return Lead.model_validate(data)


def funds(**changes: Any) -> Funds:
    data: dict[str, Any] = {
        "project_id": "TS03-ZS2022-0042",
        "funds_id": "F-1",
        "amount": "2500000.00",
        "currency": "CNY",
        "arrived_on": "2022-08-15",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "BR-1"},
    }
    data.update(changes)
    return Funds.model_validate(data)


# --- review ----------------------------------------------------------------------------------


def test_screening_accepts_a_major_project_and_explains_it(rules: RulesetRegistry) -> None:
    result = review.screen(lead(), rules=rules)
    assert (result.outcome.value, result.track.value if result.track else None) == (
        "accepted",
        "major",
    )
    ex = result.explanation
    assert (ex.ruleset_id, ex.version, ex.deciding_rule) == ("review", "2022.1", "major_project")
    assert ex.matched == ["major_project"]
    assert ex.parameters["major_project_min_investment"] == 100000000
    assert "industry_catalogue" in ex.parameters  # screening depended on it, even unmatched
    event = result.to_event("TS03-ZS2022-0042")
    assert Screened.model_validate(event.model_dump()) == event


def test_screening_terminates_with_every_reason_and_no_track(rules: RulesetRegistry) -> None:
    result = review.screen(lead(kind="real_estate", industry="steel"), rules=rules)
    assert result.outcome.value == "terminated"
    assert result.track is None
    assert result.reasons == ["real_estate_excluded", "industry_out_of_scope"]
    assert result.explanation.deciding_rule == "real_estate_excluded"


def test_a_fen_below_the_threshold_is_not_major(rules: RulesetRegistry) -> None:
    assert (
        review.screen(lead(planned_investment="99999999.99"), rules=rules).track.value == "standard"
    )  # type: ignore[union-attr]
    assert (
        review.screen(lead(planned_investment="100000000.00"), rules=rules).track.value == "major"
    )  # type: ignore[union-attr]


def test_materials_count_documents_filed_later_in_any_form(rules: RulesetRegistry) -> None:
    later = [
        DocumentRef(type="feasibility_report", ref="FR-1"),
        Document(project_id="TS03-ZS2022-0042", type="aerial_view", ref="AV-1"),
    ]
    result = review.materials(lead(), later, dt.date(2022, 5, 20), rules=rules)
    assert (result.complete, result.missing_materials, result.deadline) == (
        False,
        ["investment_contract"],
        dt.date(2022, 5, 17),
    )
    done = review.materials(
        lead(), [*later, "investment_contract"], dt.date(2022, 5, 20), rules=rules
    )
    assert (done.complete, done.missing_materials, done.deadline) == (
        True,
        [],
        dt.date(2022, 5, 17),
    )
    assert done.explanation.parameters["agenda_lead_days"] == 3


def test_materials_without_a_meeting_have_no_deadline(rules: RulesetRegistry) -> None:
    result = review.materials(lead(), [], None, rules=rules)
    assert result.deadline is None and not result.complete


# Below the major-project line: recognised without a committee approval (issue 13.2).
STANDARD = "50000000.00"


def test_recognition_lists_blockers_and_missing_proofs(rules: RulesetRegistry) -> None:
    result = review.recognize(
        lead(land="existing_land", planned_investment=STANDARD), PROOFS[:4], rules=rules
    )
    assert result.recognition_blockers == ["landing_proofs"]
    assert result.missing_proofs == ["funds_voucher", "progress_images", "premises_agreement"]
    ok = review.recognize(
        lead(land="existing_land", planned_investment=STANDARD),
        [*PROOFS, "premises_agreement"],
        rules=rules,
    )
    assert (ok.recognized, ok.recognition_blockers, ok.missing_proofs) == (True, [], [])
    assert Recognition.model_validate(ok.to_event("P-1").model_dump()).recognized


def test_a_terminated_project_is_never_recognised(rules: RulesetRegistry) -> None:
    env = {"emissions_ok": False, "safety_ok": True, "energy_ok": True}
    result = review.recognize(
        lead(environment=env, planned_investment=STANDARD),
        [*PROOFS, "land_use_certificate"],
        rules=rules,
    )
    assert (result.recognized, result.recognition_blockers) == (False, ["environment_failed"])


def test_a_lead_and_the_same_fields_as_a_mapping_decide_alike(rules: RulesetRegistry) -> None:
    full = lead()
    as_mapping = full.model_dump(mode="json")
    a = review.review(full, ["aerial_view"], dt.date(2022, 5, 20), rules=rules)
    b = review.review(as_mapping, ["aerial_view"], dt.date(2022, 5, 20), rules=rules)
    assert (a.screening, a.materials, a.recognition) == (b.screening, b.materials, b.recognition)


def test_a_partial_project_is_checked_field_by_field() -> None:
    with pytest.raises(FactsError) as info:
        review.screen({"kind": "factory", "planned_investmnt": 5, "reported_on": "2022-01-01"})
    fields = {f for f, _ in info.value.problems}
    assert fields == {"project.kind", "project.planned_investmnt"}


def test_review_uses_the_version_in_force_on_the_report_date(tmp_path: Path) -> None:
    data = parse_yaml((ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8"), "r")
    data["version"] = "2023.1"
    data["effective"] = {"from": dt.date(2023, 1, 1)}
    data["parameters"]["major_project_min_investment"]["value"] = 200000000
    (tmp_path / "review-2023.1.yaml").write_text(
        yaml.safe_dump(data, allow_unicode=True), encoding="utf-8"
    )
    (tmp_path / "review-2022.1.yaml").write_text(
        (ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with RulesetRegistry.from_paths([tmp_path]) as reg:
        late_2022 = review.screen(lead(reported_on="2022-12-31"), rules=reg)
        early_2023 = review.screen(lead(reported_on="2023-01-01"), rules=reg)
    assert (late_2022.track.value, late_2022.explanation.version) == ("major", "2022.1")  # type: ignore[union-attr]
    assert (early_2023.track.value, early_2023.explanation.version) == ("standard", "2023.1")  # type: ignore[union-attr]


def test_input_digest_is_canonical(rules: RulesetRegistry) -> None:
    a = review.screen(lead(planned_investment="120000000.00"), rules=rules).explanation.input_sha256
    b = review.screen(lead(planned_investment="120000000"), rules=rules).explanation.input_sha256
    c = review.screen(lead(planned_investment="120000000.01"), rules=rules).explanation.input_sha256
    assert a == b != c
    assert a is not None and len(a) == 64


def test_default_registry_loads_the_repository_rulesets_once() -> None:
    assert default_registry() is default_registry()
    assert review.screen(lead()).explanation.version == "2022.1"


# --- scoring ---------------------------------------------------------------------------------


def test_scoring_in_cny_with_the_default_multiplier(rules: RulesetRegistry) -> None:
    result = scoring.score(lead(), funds(), sponsor_leader="L03", rules=rules)
    assert isinstance(result, scoring.Scored)
    assert (result.amount_rmb, result.multiplier, result.points) == (
        Decimal("2500000.00"),
        Decimal(1),
        Decimal("2500000.00"),
    )
    assert (result.matched, result.deciding_rule) == ([], None)
    assert (result.year, result.quarter) == (2022, 3)
    assert result.credited_to == ["TS03", "CHEMPARK", "L03"]
    event = result.to_event("TS03-ZS2022-0042", "F-1")
    assert Credited.model_validate(event.model_dump()).points == Decimal("2500000.00")
    assert event.explanation.parameters["credit_roles"] == [
        "attracting_unit",
        "landing_area",
        "sponsor_leader",
    ]


def test_foreign_currency_converts_at_the_rate_of_the_arrival_day(rules: RulesetRegistry) -> None:
    project = lead(investor={"name": "Acme GmbH", "origin": "foreign", "country": "DE"})
    day_rates = Rates(on=dt.date(2022, 8, 15), rates={"EUR": Decimal("6.9012")})
    result = scoring.score(project, funds(currency="EUR", amount="1000.00"), day_rates, rules=rules)
    assert isinstance(result, scoring.Scored)
    assert (result.amount_rmb, result.multiplier, result.points) == (
        Decimal("6901.20"),
        Decimal(3),
        Decimal("20703.60"),
    )


def test_a_missing_rate_holds_the_record_and_says_which(rules: RulesetRegistry) -> None:
    project = lead(investor={"name": "Acme", "origin": "foreign"})
    held = scoring.score(project, funds(currency="USD"), {"EUR": "7.1"}, rules=rules)
    assert isinstance(held, scoring.ScoreHeld)
    assert "USD" in held.reason and "2022-08-15" in held.reason
    other_day = Rates(on=dt.date(2022, 8, 14), rates={"USD": Decimal("6.8")})
    held = scoring.score(project, funds(currency="USD"), other_day, rules=rules)
    assert isinstance(held, scoring.ScoreHeld)
    assert "2022-08-14" in held.reason
    assert held.to_event("P", "F-1").reason == held.reason


def test_the_highest_multiplier_counts_once(rules: RulesetRegistry) -> None:
    project = lead(
        kind="headquarters",
        investor={
            "name": "X",
            "credit_code": make_credit_code("91110000MA00000A0"),
            "origin": "inside_city",
            "little_giant": True,
        },
        flags={"provincial_dispatch_list": True},
    )
    result = scoring.score(project, funds(amount="100.01"), rules=rules)
    assert isinstance(result, scoring.Scored)
    assert result.matched == [
        "little_giant",
        "provincial_dispatch_list",
        "headquarters",
        "inside_city",
    ]
    assert (result.multiplier, result.deciding_rule, result.points) == (
        Decimal(2),
        "little_giant",
        Decimal("200.02"),
    )


def test_scoring_version_is_picked_by_the_arrival_date(rules: RulesetRegistry) -> None:
    with pytest.raises(LookupError, match="2023-01-02"):
        scoring.score(lead(), funds(arrived_on="2023-01-02"), rules=rules)


def test_credit_roles_and_signing_targets_are_parameters(rules: RulesetRegistry) -> None:
    assert scoring.credit_roles(dt.date(2022, 5, 1), rules=rules) == [
        "attracting_unit",
        "landing_area",
        "sponsor_leader",
    ]
    assert scoring.signing_targets(dt.date(2022, 5, 1), rules=rules) == {
        "Q1": 6,
        "Q2": 15,
        "Q3": 15,
        "Q4": 6,
    }
    view = rules.with_parameters(
        "scoring", {"signing_targets": {"Q1": 1, "Q2": 2, "Q3": 3, "Q4": 4}}
    )
    assert scoring.signing_targets(dt.date(2022, 5, 1), rules=view)["Q4"] == 4


def test_a_what_if_parameter_change_leaves_the_running_version_alone(
    rules: RulesetRegistry,
) -> None:
    project = lead(investor={"name": "Acme", "origin": "foreign"})
    what_if = rules.with_parameters("scoring", {"foreign_multiplier": 5})
    a = scoring.score(project, funds(), rules=what_if)
    b = scoring.score(project, funds(), rules=rules)
    assert isinstance(a, scoring.Scored) and isinstance(b, scoring.Scored)
    assert (a.multiplier, b.multiplier) == (Decimal(5), Decimal(3))
    assert a.explanation.parameters["foreign_multiplier"] == 5


def test_each_decision_carries_its_record_the_input_its_digest_hashes(
    rules: RulesetRegistry,
) -> None:
    """Issue 14.8: the decision record holds the input itself (documents filed included), so
    `rules explain --project` replays it; the stored form hashes to the digest and decides
    the same again."""
    import hashlib

    from shared.rules import canonical_json

    filed = [DocumentRef(type="feasibility_report", ref="FR-1"), "investment_contract"]
    rec = review.recognize(lead(), filed, rules=rules).explanation
    assert rec.input is not None
    assert rec.input["documents"] == sorted(
        {d["type"] for d in lead().model_dump()["documents"]}
        | {"feasibility_report", "investment_contract"}
    )
    assert rec.input["project"]["planned_investment"] == "120000000"
    digest = hashlib.sha256(canonical_json(rec.input).encode()).hexdigest()
    assert digest == rec.input_sha256
    # The version's text is named too: one version number may be published with two texts.
    text = (ROOT / "rulesets" / "review-2022.1.yaml").read_bytes()
    assert rec.ruleset_sha256 == hashlib.sha256(text).hexdigest()
    again = review.recognize(
        rec.input["project"],
        rec.input["documents"],
        on=dt.date.fromisoformat(rec.input["on"]),
        rules=rules,
    ).explanation
    assert again == rec

    eur = Rates(on=dt.date(2022, 8, 15), rates={"EUR": Decimal("6.9012")})
    credited = scoring.score(lead(), funds(currency="EUR"), eur, rules=rules)
    assert isinstance(credited, scoring.Scored)
    ex = credited.explanation
    assert ex.input is not None and ex.input["rate"] == "6.9012"
    assert ex.input["funds"]["arrived_on"] == "2022-08-15"
    replayed = scoring.score(
        ex.input["project"],
        ex.input["funds"],
        {"EUR": ex.input["rate"]},
        sponsor_leader=ex.input.get("sponsor_leader"),
        rules=rules,
    )
    assert isinstance(replayed, scoring.Scored) and replayed.explanation == ex
    event = credited.to_event("TS03-ZS2022-0042", "F1")
    assert Credited.model_validate_json(event.model_dump_json()).explanation.input == ex.input
