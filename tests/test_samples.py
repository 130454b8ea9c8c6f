"""The committed sample year (samples/year-2022.jsonl) and its generator: no NATS needed.

The sample is what `investflow demo` feeds and what later services' tests lean on, so these
tests pin what it promises: valid payloads in the intake's own strict parse, full coverage
of the contract's vocabularies, a believable order of events, and edge cases that are
detectably what their "case" marker says.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from samples.generate import generate, write
from shared import subjects
from shared.contract import (
    CENTER_ONLY_KINDS,
    INBOUND_MODELS,
    DocumentType,
    Flags,
    FundsForm,
    InboundKind,
    Investor,
    MilestoneKind,
    Origin,
    ProjectKind,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "year-2022.jsonl"
CATALOGUE = {
    "new_generation_it",
    "high_end_equipment",
    "new_energy",
    "new_materials",
    "modern_marine",
    "healthcare",
    "high_end_chemicals",
    "modern_agriculture",
    "cultural_creative",
    "boutique_tourism",
    "modern_finance",
    "biomedicine",
    "textiles_apparel",
    "modern_packaging",
    "electromechanical_equipment",
    "agri_food_processing",
    "modern_services",
}
MAJOR_KINDS = {"industrial", "headquarters", "modern_services", "expansion"}
COMMITTEE = {"basic_info_form", "feasibility_report", "aerial_view", "investment_contract"}
BAD_CASES = {
    "bad:credit_code",
    "bad:negative_amount",
    "bad:unknown_kind",
    "bad:unit_mismatch",
    "bad:attracting_unit_mismatch",
    "bad:impossible_date",
    "bad:unknown_project",
    "bad:not_json",
}
# Kinds whose payload carries the business date the line is sorted by.
DATE_FIELD = {
    "lead": "reported_on",
    "document": "issued_on",
    "milestone": "on",
    "funds": "arrived_on",
    "visit": "on",
    "rates": "on",
}

Line = dict[str, Any]


def _kind(line: Line) -> str:
    return line["subject"].split(".")[2]


def _unit(line: Line) -> str:
    return line["subject"].split(".")[1]


def _is_bad(line: Line) -> bool:
    return line.get("case", "").startswith("bad:")


def _validate(line: Line) -> BaseModel:
    """Exactly as intake parses a body: the JSON text, strict mode."""
    model = INBOUND_MODELS[InboundKind(_kind(line))]
    return model.model_validate_json(json.dumps(line["data"], ensure_ascii=False), strict=True)


@pytest.fixture(scope="module")
def lines() -> list[Line]:
    return [json.loads(text) for text in SAMPLE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def good(lines: list[Line]) -> list[Line]:
    return [line for line in lines if not _is_bad(line)]


@pytest.fixture(scope="module")
def leads(good: list[Line]) -> dict[str, Line]:
    """Project id → its lead's payload (first reports only; duplicate claims are held)."""
    out = {}
    for line in good:
        if _kind(line) == "lead" and line.get("case") not in ("resend", "duplicate_claim"):
            out[f"{_unit(line)}-{line['data']['lead_id']}"] = line["data"]
    return out


@pytest.fixture(scope="module")
def directory() -> dict[str, set[str]]:
    doc = yaml.safe_load((ROOT / "deploy" / "units.yaml").read_text(encoding="utf-8"))
    return {
        "units": {u["code"] for u in doc["units"]},
        "landing": {u["code"] for u in doc["units"] if u["kind"] in ("township", "park")},
        "leaders": {leader["code"] for leader in doc["leaders"]},
    }


def _render(leads: int, year: int, seed: int) -> str:
    buffer = io.StringIO()
    write(generate(leads, year, seed), buffer)
    return buffer.getvalue()


# -- the file is current and reproducible ------------------------------------------------


def test_committed_sample_is_a_fresh_generation_with_the_defaults() -> None:
    fresh = _render(300, 2022, 2022)
    committed = SAMPLE.read_text(encoding="utf-8")
    if committed != fresh:
        # Name the first differing line rather than letting pytest diff megabytes.
        old, new = committed.splitlines(), fresh.splitlines()
        n = next(
            (i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y),
            min(len(old), len(new)),
        )
        pytest.fail(
            f"samples/year-2022.jsonl is stale from line {n + 1} on "
            f"({len(old)} lines committed, {len(new)} generated): "
            "regenerate with `python -m samples.generate`"
        )


def test_generation_is_deterministic_and_seeded() -> None:
    assert _render(60, 2023, 7) == _render(60, 2023, 7)
    assert _render(60, 2023, 7) != _render(60, 2023, 8)


@pytest.mark.parametrize("how", [["-m", "samples.generate"], ["samples/generate.py"]])
def test_cli_runs_both_ways_and_writes_the_same_file(how: list[str], tmp_path: Path) -> None:
    out = tmp_path / "year.jsonl"
    args = [sys.executable, *how, "--leads", "25", "--year", "2024", "--seed", "3"]
    subprocess.run([*args, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    assert out.read_text(encoding="utf-8") == _render(25, 2024, 3)


# -- every line is what a unit's system may publish ---------------------------------------


def test_good_lines_validate_strictly_and_are_in_the_contracts_own_form(
    good: list[Line],
) -> None:
    for line in good:
        assert set(line) <= {"subject", "msg_id", "case", "data"}, line
        payload = _validate(line)
        # The payload is exactly the model's serialisation: nothing a consumer would reshape.
        assert payload.model_dump(mode="json", exclude_none=True) == line["data"], line


def test_subjects_units_and_codes_agree_with_the_directory(
    good: list[Line], leads: dict[str, Line], directory: dict[str, set[str]]
) -> None:
    for line in good:
        unit, kind, data = _unit(line), _kind(line), line["data"]
        assert line["subject"] == subjects.inbound(unit, kind)
        assert unit in directory["units"], line
        assert data["unit"] == unit, line
        if kind in CENTER_ONLY_KINDS or kind == "decision":
            assert unit == "CENTER", line
        if kind == "lead":
            assert data["attracting_unit"] == unit, line
            assert data["landing_area"] in directory["landing"], line
        elif kind == "claim":  # the held report and the first one it duplicates
            assert data["assign_to"] in leads and data["project_id"] not in leads, line
        elif "project_id" in data:
            lead = leads[data["project_id"]]
            # Intake takes follow-ups from the project's own unit, its landing area, the Center.
            assert unit in (lead["attracting_unit"], lead["landing_area"], "CENTER"), line
        if kind == "visit":
            assert data["leader"] in directory["leaders"]
        if kind == "decision" and data["decision"] == "approved":
            assert {data["sponsor_leader"], data["hq"]["commander"]} <= directory["leaders"]
            assert set(data["hq"]["members"]) <= directory["units"]


def test_bad_lines_are_detectably_bad_as_marked(lines: list[Line], leads: dict[str, Line]) -> None:
    bad = [line for line in lines if _is_bad(line)]
    assert {line["case"] for line in bad} == BAD_CASES
    assert len(bad) == len(BAD_CASES)
    for line in bad:
        case = line["case"]
        if case == "bad:not_json":
            assert "data" not in line
            with pytest.raises(json.JSONDecodeError):
                json.loads(line["raw"])
        elif case == "bad:unknown_kind":
            assert _kind(line) not in InboundKind.__members__
        elif case == "bad:unit_mismatch":
            _validate(line)  # well-formed: only the sender is wrong
            assert line["data"]["unit"] != _unit(line)
        elif case == "bad:attracting_unit_mismatch":
            _validate(line)
            assert line["data"]["unit"] == _unit(line) != line["data"]["attracting_unit"]
        elif case == "bad:unknown_project":
            _validate(line)
            assert line["data"]["project_id"] not in leads
        else:
            with pytest.raises(ValidationError) as exc:
                _validate(line)
            field = {
                "bad:credit_code": "credit_code",
                "bad:negative_amount": "amount",
                "bad:impossible_date": "on",
            }[case]
            assert field in {str(part) for e in exc.value.errors() for part in e["loc"]}, exc


# -- coverage of the contract's vocabularies ---------------------------------------------


def test_every_vocabulary_value_appears(good: list[Line], leads: dict[str, Line]) -> None:
    by_kind: dict[str, list[Line]] = defaultdict(list)
    for line in good:
        by_kind[_kind(line)].append(line["data"])
    lead_data = list(leads.values())
    assert {d["kind"] for d in lead_data} == {k.value for k in ProjectKind}
    assert {d["investor"]["origin"] for d in lead_data} == {o.value for o in Origin}
    for flag in ("fortune_global_500", "china_top_500", "little_giant", "single_champion"):
        assert flag in Investor.model_fields
        assert any(d["investor"][flag] for d in lead_data), flag
    for flag in Flags.model_fields:
        assert any(d["flags"][flag] for d in lead_data), flag
    assert {d["type"] for d in by_kind["document"]} == {t.value for t in DocumentType}
    assert {d["milestone"] for d in by_kind["milestone"]} == {m.value for m in MilestoneKind}
    assert {d["form"] for d in by_kind["funds"]} == {f.value for f in FundsForm}
    assert {d["currency"] for d in by_kind["funds"]} == {"CNY", "USD", "EUR", "HKD"}
    assert {d["decision"] for d in by_kind["decision"]} == {"approved", "rejected"}
    assert set(InboundKind) == {InboundKind(k) for k in by_kind}


def test_leads_cover_the_screening_and_scoring_situations(leads: dict[str, Line]) -> None:
    data = list(leads.values())
    assert len({d["attracting_unit"] for d in data}) >= 12
    industries = Counter(d["industry"] for d in data if d["kind"] != "real_estate")
    assert sum(n for i, n in industries.items() if i in CATALOGUE) > 0.9 * sum(industries.values())
    assert {"steel_smelting", "coal_mining"} <= set(industries)
    assert any(False in d["environment"].values() for d in data)
    areas = [Decimal(d["commercial_floor_area_m2"]) for d in data if d["kind"] == "urban_complex"]
    assert min(areas) < 100_000 < max(areas)
    major = [
        d
        for d in data
        if d["kind"] in MAJOR_KINDS and Decimal(d["planned_investment"]) >= 100_000_000
    ]
    assert len(major) >= 0.2 * len(data)
    planned = [Decimal(d["planned_investment"]) for d in data]
    assert min(planned) < 10_000_000 and max(planned) > 1_000_000_000
    foreign = [d["investor"] for d in data if d["investor"]["origin"] == "foreign"]
    assert all("country" in i for i in foreign)
    assert sum("credit_code" not in i for i in foreign) > len(foreign) / 2
    assert all("credit_code" in d["investor"] for d in data if d["investor"]["origin"] != "foreign")


# -- a believable order of events ---------------------------------------------------------


def test_lines_follow_business_dates(good: list[Line]) -> None:
    latest = ""
    for line in good:
        kind, data = _kind(line), line["data"]
        if kind in DATE_FIELD and line.get("case") not in ("resend", "late_rates"):
            assert data[DATE_FIELD[kind]] >= latest, line
            latest = data[DATE_FIELD[kind]]
        elif kind == "meeting":
            assert data["on"] > latest  # announced ahead of the day it sits
        elif line.get("case") in ("resend", "late_rates"):
            assert data[DATE_FIELD[kind]] < latest  # the late ones come later than their date


def test_follow_ups_come_after_their_lead_and_meetings_before_decisions(
    good: list[Line],
) -> None:
    reported: set[str] = set()
    meetings: dict[str, Line] = {}
    approved: dict[str, tuple[str, str]] = {}
    for line in good:
        kind, data = _kind(line), line["data"]
        if kind == "lead":
            reported.add(f"{_unit(line)}-{data['lead_id']}")
        elif kind == "meeting":
            assert set(data["agenda"]) <= reported
            meetings[data["meeting_id"]] = data
        elif kind == "decision":
            meeting = meetings[data["meeting_id"]]
            assert data["project_id"] in meeting["agenda"]
            if data["decision"] == "approved":
                approved[data["project_id"]] = (data["sponsor_leader"], meeting["on"])
        elif kind == "visit":
            sponsor, since = approved[data["project_id"]]
            assert data["leader"] == sponsor and data["on"] > since
        if "project_id" in data:
            assert data["project_id"] in reported, line


def test_major_projects_go_to_a_meeting_with_their_materials_mostly_on_time(
    good: list[Line], leads: dict[str, Line]
) -> None:
    filed: dict[str, dict[str, str]] = defaultdict(dict)
    agenda: dict[str, str] = {}
    for line in good:
        kind, data = _kind(line), line["data"]
        if kind == "document" and data["type"] in COMMITTEE:
            filed[data["project_id"]][data["type"]] = data["issued_on"]
        elif kind == "meeting":
            agenda.update(dict.fromkeys(data["agenda"], data["on"]))
    assert len(agenda) >= 30
    on_time = 0
    for pid, on in agenda.items():
        lead = leads[pid]
        assert lead["kind"] in MAJOR_KINDS and Decimal(lead["planned_investment"]) >= 100_000_000
        # The agenda closes 3 days before the meeting (SPEC §6 `agenda_lead_days`).
        deadline = (dt.date.fromisoformat(on) - dt.timedelta(days=3)).isoformat()
        on_time += all(filed[pid].get(t, "9999-12-31") <= deadline for t in COMMITTEE)
    assert 0.6 * len(agenda) < on_time < len(agenda), "some, not all, must miss materials"


def test_visits_are_mostly_weekly_with_some_overdue_gaps(good: list[Line]) -> None:
    visits: dict[str, list[dt.date]] = defaultdict(list)
    for line in good:
        if _kind(line) == "visit":
            visits[line["data"]["project_id"]].append(dt.date.fromisoformat(line["data"]["on"]))
    gaps = [(b - a).days for days in visits.values() for a, b in itertools.pairwise(days)]
    assert gaps and all(g > 0 for g in gaps)
    assert sum(g <= 7 for g in gaps) > 0.85 * len(gaps)
    assert sum(g > 14 for g in gaps) >= 5


def test_funds_ids_are_unique_per_project_and_currencies_match_the_investor(
    good: list[Line], leads: dict[str, Line]
) -> None:
    seen: set[tuple[str, str]] = set()
    signed: set[str] = set()
    vouchers = {
        "cash": {"bank_receipt", "capital_verification_report"},
        "tangible": {"equipment_invoice"},
        "intangible": {"valuation_report"},
    }
    for line in good:
        kind, data = _kind(line), line["data"]
        if kind == "milestone" and data["milestone"] == "signed":
            signed.add(data["project_id"])
        if kind != "funds" or line.get("case") == "resend":
            continue
        key = (data["project_id"], data["funds_id"])
        assert key not in seen
        seen.add(key)
        assert data["project_id"] in signed, "funds arrive after signing"
        assert data["voucher"]["kind"] in vouchers[data["form"]]
        if data["currency"] != "CNY":
            assert leads[data["project_id"]]["investor"]["origin"] == "foreign"


# -- the marked edge cases ----------------------------------------------------------------


def test_msg_ids_are_unique_except_marked_resends(lines: list[Line]) -> None:
    first: dict[str, Line] = {}
    resends = 0
    for line in lines:
        msg_id = line["msg_id"]
        if line.get("case") == "resend":
            resends += 1
            original = first[msg_id]
            assert original["subject"] == line["subject"] and original["data"] == line["data"]
            continue
        assert msg_id not in first, msg_id
        first[msg_id] = line
    assert resends == 3


def test_duplicate_claims_repeat_an_earlier_investor_and_landing_area_from_another_unit(
    good: list[Line], leads: dict[str, Line]
) -> None:
    claims = [line for line in good if line.get("case") == "duplicate_claim"]
    assert len(claims) == 2
    for line in claims:
        data = line["data"]
        assert f"{_unit(line)}-{data['lead_id']}" not in leads
        earlier = [
            lead
            for lead in leads.values()
            if lead["investor"].get("credit_code") == data["investor"]["credit_code"]
            and lead["landing_area"] == data["landing_area"]
            and lead["reported_on"] < data["reported_on"]
        ]
        assert len(earlier) == 1 and earlier[0]["attracting_unit"] != data["attracting_unit"]
    # Nothing else may look like a claim on an existing project (SPEC §2 item 6).
    keys = Counter(
        (d["investor"].get("credit_code"), d["landing_area"])
        for d in leads.values()
        if "credit_code" in d["investor"]
    )
    names = Counter((d["title"], d["investor"]["name"]) for d in leads.values())
    assert max(keys.values()) == 1 and max(names.values()) == 1


def test_rates_cover_every_day_with_a_few_published_late_after_foreign_funds(
    good: list[Line],
) -> None:
    rates: dict[str, tuple[int, Line]] = {}
    held: dict[str, int] = {}
    for n, line in enumerate(good):
        if _kind(line) == "rates":
            assert line["data"]["on"] not in rates
            rates[line["data"]["on"]] = (n, line)
            usd = Decimal(line["data"]["rates"]["USD"])
            assert Decimal("6.2") < usd < Decimal("7.4")
        elif line.get("case") == "rate_missing":
            assert line["data"]["currency"] != "CNY"
            assert line["data"]["arrived_on"] not in rates, "its rate must not be known yet"
            held.setdefault(line["data"]["arrived_on"], n)
    assert len(rates) == 365
    late = {on: n for on, (n, line) in rates.items() if line.get("case") == "late_rates"}
    assert 2 <= len(late) <= 3
    assert set(held) == set(late)
    assert all(held[on] < n for on, n in late.items())


@pytest.mark.skipif(not os.environ.get("INVESTFLOW_SLOW"), reason="set INVESTFLOW_SLOW=1")
@pytest.mark.slow
def test_a_hundred_thousand_leads_generate_in_well_under_a_minute(tmp_path: Path) -> None:
    out = tmp_path / "big.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "samples.generate", "--leads", "100000", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert time.perf_counter() - started < 45
    assert out.stat().st_size > 100_000_000


def test_a_full_meeting_day_gets_more_sessions_each_a_message_that_fits(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """At 100,000 leads one month's landing review agenda was over the 64 KB a Center
    message may be, and the whole meeting was refused (the soak). Sessions of at most
    AGENDA_MAX projects: every project on exactly one agenda, every decision naming the
    session that had it on its agenda, and no session before its announcement."""
    import samples.generate as gen

    monkeypatch.setattr(gen, "AGENDA_MAX", 4)
    lines = list(generate(300, 2022, 2022))
    meetings = [x for x in lines if x["subject"].endswith(".meeting")]
    agendas = {m["data"]["meeting_id"]: m["data"]["agenda"] for m in meetings}
    assert max(len(a) for a in agendas.values()) <= 4
    assert any(mid.count("-") == 2 for mid in agendas), "some day needed a second session"
    on_agenda = Counter(pid for a in agendas.values() for pid in a)
    assert set(on_agenda.values()) == {1}
    for x in lines:
        if x["subject"].endswith(".decision") and x["data"].get("meeting_id"):
            assert x["data"]["project_id"] in agendas[x["data"]["meeting_id"]], x
    limit = 64 * 1024
    for m in meetings:
        assert len(json.dumps(m["data"], ensure_ascii=False).encode()) < limit
