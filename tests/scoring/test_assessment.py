"""What the assessment counts besides points (issue 13, items 7–9 and 13): counted signings,
per-unit and new-start targets, the three rates, every assessed subject with its held funds.
Scoring's write path on SQLite and PostgreSQL, then the scoreboard read from it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from services.scoring import scoreboard
from shared.contract import MilestoneReached, Recognition
from tests.helpers import credit_code, uid
from tests.scoring import builders as b
from tests.scoring.builders import RECEIVED
from tests.scoring.harness import Scoring


def milestone(project_id: str, kind: str, on: str) -> MilestoneReached:
    unit = project_id.split("-", 1)[0]
    return MilestoneReached(
        event_id=f"milestone:{unit}:{uid()}",
        project_id=project_id,
        unit=unit,
        idempotency_key=uid(),
        received_at=RECEIVED,
        data={"unit": unit, "project_id": project_id, "milestone": kind, "on": on},
    )


def recognition(pid: str, **flags: Any) -> Recognition:
    r = b.recognition(pid, recognized=not flags)
    return r.model_copy(update=flags)


@pytest.fixture
def scoring(database_url: str) -> Iterator[Scoring]:
    s = Scoring(database_url)
    yield s
    s.close()


def project(s: Scoring, unit: str = "TS01", **lead: Any) -> str:
    event = b.lead(unit, **lead)
    s.send(event)
    return event.project_id or ""


def board(s: Scoring, quarter: int | None = None) -> scoreboard.Scoreboard:
    return scoreboard.build(s.engine, 2022, quarter, directory=scoreboard.default_directory())


def test_signings_count_only_projects_in_scope_of_at_least_the_threshold(s: Scoring) -> None:
    counted = project(s, "TS01")
    s.send(b.recognition(counted))
    s.send(b.signed(counted, on="2022-02-10", amount="100000000"))  # exactly the threshold
    below = project(s, "TS01")
    s.send(b.signed(below, on="2022-02-11", amount="99999999.99"))  # one fen short
    county = project(
        s,
        "TS02",
        investor={"name": "本县某公司", "origin": "inside_county", "credit_code": credit_code()},
    )
    s.send(b.signed(county, on="2022-02-12", amount="300000000"))
    estate = project(s, "TS03", kind="real_estate")
    s.send(recognition(estate, terminated=True))
    s.send(b.signed(estate, on="2022-02-13", amount="500000000"))
    rejected = project(s, "TS04")
    s.send(recognition(rejected, committee_rejected=True))
    s.send(b.signed(rejected, on="2022-02-14", amount="200000000"))

    result = board(s)
    t = result.targets[0]
    assert (t.quarter, t.plan, t.actual) == (1, 6, 1)
    assert result.signed_by_unit == {"TS01": {1: 1}}
    assert result.assessment is not None
    assert result.assessment.signings_excluded == {
        "inside_county": 1,
        "terminated": 1,
        "committee_rejected": 1,
    }
    targets = result.to_json()["targets"]
    assert targets["signed_min_amount"] == "100000000"
    plan = {r["unit"]: (r["plan"], r["actual"]) for r in targets["unit_plan_vs_actual"]}
    assert plan["TS01"] == (2, 1) and plan["DEVZONE"] == (8, 0)
    text = scoreboard.render_table(result)
    assert "not counted / 不计入: 1 committee rejected, 1 inside county, 1 terminated" in text


@pytest.fixture
def s(scoring: Scoring) -> Scoring:
    return scoring


def test_new_starts_count_projects_of_at_least_the_threshold(s: Scoring) -> None:
    big = project(s, "TS05", planned_investment="100000000")
    small = project(s, "TS05", planned_investment="99999999.99")
    for pid in (big, small):
        s.send(milestone(pid, "started", "2022-07-01"))
    new = board(s).to_json()["new_starts"]
    assert new == {
        "min_amount": "100000000",
        "plan": 20,
        "actual": 1,
        "by_quarter": {"Q3": 1},
        "by_unit": {"TS05": 1},
    }


def test_rates_per_project_unit_and_county(s: Scoring) -> None:
    started = project(s, "TS06")
    registered = project(s, "TS06")
    nothing = project(s, "TS07")
    s.send(b.signed(started, on="2022-03-01", amount="100000000"))
    s.send(b.signed(registered, on="2022-03-02", amount="50000000"))
    s.send(b.signed(nothing, on="2022-03-03", amount="50000000"))
    s.send(milestone(started, "registered", "2022-03-20"))
    s.send(milestone(started, "started", "2022-04-20"))
    s.send(milestone(registered, "registered", "2022-04-01"))
    s.send(b.funds(started, "F1", amount="30000000", arrived_on="2022-05-01"))
    s.send(b.rates("2022-05-02", USD="6.5"))
    s.send(b.funds(registered, "F1", amount="1000000", currency="USD", arrived_on="2022-05-02"))
    s.send(b.funds(nothing, "F1", amount="10", currency="USD", arrived_on="2022-05-03"))  # no rate

    rates = board(s).to_json()["rates"]
    assert rates["county"] == {
        "signed": 3,
        "performed": 1,
        "landed": 2,
        "contracted_rmb": "200000000.00",
        "funds_rmb": "36500000.00",
        "funds_unconverted": 1,
        "performance_rate": "0.3333",
        "landing_rate": "0.6667",
        "funds_rate": "0.1825",
    }
    assert rates["by_unit"]["TS06"]["performance_rate"] == "0.5000"
    assert rates["by_unit"]["TS07"]["landing_rate"] == "0.0000"
    assert rates["by_project"][started]["funds_rate"] == "0.3000"
    text = scoreboard.render_table(board(s))
    assert "county" in text and "33.3%" in text and "66.7%" in text and "18.2%" in text


def test_every_assessed_subject_is_listed_with_its_held_funds_and_why(s: Scoring) -> None:
    pid = project(s, "DRC", landing_area="TS08")
    s.send(b.recognition(pid, recognized=False, missing_proofs=["business_license"]))
    s.send(b.funds(pid, "F1", amount="2500000", arrived_on="2022-06-01"))
    result = board(s)
    rows = {r.subject: r for r in result.subjects}
    # Nothing credited anywhere, yet every unit (but the Center) and leader has its row.
    assert {"DRC", "NRB", "L01", "TS08", "BIOPARK"} <= set(rows)
    assert "CENTER" not in rows and rows["NRB"].points == Decimal(0)
    held = result.held_of("DRC")
    assert (held.records, held.amount_rmb) == (1, Decimal("2500000"))
    assert held.reasons == {"landing_proofs": 1}
    assert held.missing_proofs == {"business_license": 1}
    subject = {r["subject"]: r for r in result.to_json()["subjects"]}["TS08"]
    assert subject["held_records"] == 1 and subject["held_rmb"] == "2500000.00"
    assert subject["held_reasons"] == {"landing_proofs": 1}
    text = scoreboard.render_table(result)
    assert "1× landing proofs missing (business_license)" in text
    line = next(x for x in text.splitlines() if " NRB " in x)
    assert "0.00" in line

    rejected = project(s, "NRB")
    s.send(recognition(rejected, committee_rejected=True))
    s.send(b.funds(rejected, "F1", amount="100", arrived_on="2022-06-02"))
    assert board(s).held_of("NRB").reasons == {"committee_rejected": 1}
    assert "rejected by the committee" in scoreboard.render_table(board(s))


def test_funds_dated_outside_every_assessment_year_are_flagged(s: Scoring) -> None:
    pid = project(s, "TS02")
    s.send(b.recognition(pid))
    s.send(b.funds(pid, "F1", amount="100", arrived_on="2021-12-31"))  # no 2021 ruleset
    s.send(b.funds(pid, "F2", amount="100", arrived_on="2022-01-01"))  # the first day of one
    result = board(s)
    assert result.assessment is not None
    assert [(f["funds_id"], f["arrived_on"]) for f in result.assessment.outside_year] == [
        ("F1", "2021-12-31")
    ]
    assert "不在考核年度内" in result.to_json()["flagged"][0]["problem"]
    assert "Flagged / 提示: 1 funds records dated outside every assessment year" in (
        scoreboard.render_table(result)
    )
