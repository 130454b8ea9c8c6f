"""Stateless validation: errors name the field, every problem is reported at once."""

from __future__ import annotations

import json

from services.intake.validate import Parsed, parse
from shared.directory import load_directory
from shared.settings import Settings
from tests.helpers import lead

DIRECTORY = load_directory(Settings.from_env().units_file)


def check(unit: str, kind: str, data: object) -> Parsed | list:
    return parse(unit, kind, json.dumps(data).encode(), DIRECTORY, 65536)


def test_valid_lead_gets_its_project_id() -> None:
    data = lead("TS01")
    result = check("TS01", "lead", data)
    assert isinstance(result, Parsed) and result.project_id == f"TS01-{data['lead_id']}"


def test_all_problems_are_reported_together() -> None:
    data = lead("TS01", planned_investment="-1", kind="casino", reported_on="2022-13-01")
    result = check("TS01", "lead", data)
    assert isinstance(result, list)
    assert {e.field for e in result} == {"planned_investment", "kind", "reported_on"}


def test_nested_fields_are_named_by_path() -> None:
    data = lead("TS01")
    data["documents"] = [{"type": "aerial_view", "ref": "A"}, {"type": "selfie", "ref": "B"}]
    result = check("TS01", "lead", data)
    assert isinstance(result, list) and result[0].field == "documents[1].type"


def test_urban_complex_needs_its_floor_area() -> None:
    result = check("TS01", "lead", lead("TS01", kind="urban_complex"))
    assert isinstance(result, list) and result[0].field == "commercial_floor_area_m2"
