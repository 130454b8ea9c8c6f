"""score.rates from scoring's tables (no NATS): a revision only when a figure changes, the
changed projects only, the scoreboard's figures, the ruleset version, split into parts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from services.scoring import assessment_rates, scoreboard, store
from shared import subjects
from shared.contract import AssessmentRates, MilestoneReached
from shared.db import unit_of_work
from tests.helpers import uid
from tests.scoring import builders as b
from tests.scoring.harness import Scoring


def _started(project_id: str, on: str) -> MilestoneReached:
    unit = project_id.split("-", 1)[0]
    return MilestoneReached(
        event_id=f"milestone:{unit}:{uid()}",
        project_id=project_id,
        unit=unit,
        idempotency_key=uid(),
        received_at=b.RECEIVED,
        data={"unit": unit, "project_id": project_id, "milestone": "started", "on": on},
    )


def _settle(s: Scoring) -> list[dict[str, Any]]:
    with unit_of_work(s.engine) as session:
        rows = assessment_rates.settle(session, s.rules)
    for row in rows:
        assert subjects.event_type(row.subject) == "score.rates"
        AssessmentRates.model_validate_json(row.body)  # the contract
    return [json.loads(r.body) | {"msg_id": r.msg_id} for r in rows]


def test_a_revision_when_the_rates_change_with_the_changed_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Scoring(f"sqlite:///{tmp_path / 'scoring.db'}")
    a, c, d = b.lead("TS01"), b.lead("TS02", landing_area="CHEMPARK"), b.lead("TS01")
    for lead in (a, c, d):
        s.send(lead)
    assert _settle(s) == []  # nothing signed: nothing to say

    s.send(b.signed(a.project_id, "2022-04-15", "200000000"))
    (first,) = _settle(s)
    assert (first["year"], first["revision"], first["part"], first["parts"]) == (2022, 1, 1, 1)
    assert first["msg_id"] == "score.rates:2022:1:1"
    assert set(first["by_project"]) == {a.project_id}
    assert first["county"]["signed"] == 1 and first["county"]["performance_rate"] == "0.0000"
    assert first["explanation"]["ruleset_id"] == "scoring"
    assert first["explanation"]["version"] == "2022.1"
    assert first["definitions"]["landing"] == ["registered", "started"]
    assert _settle(s) == []  # nothing changed: no revision

    s.send(b.signed(c.project_id, "2022-05-01", "100000000"))
    s.send(b.funds(c.project_id, "F1", "25000000", "CNY", "2022-06-01"))
    (second,) = _settle(s)
    assert second["revision"] == 2
    assert set(second["by_project"]) == {c.project_id}  # a's figures did not change
    assert second["by_project"][c.project_id]["funds_rate"] == "0.2500"
    # The scoreboard's figures, county and unit whole.
    board = scoreboard.build(s.engine, 2022, rules=s.rules).to_json()["rates"]
    assert second["county"] == board["county"] and second["by_unit"] == board["by_unit"]
    assert second["by_project"][c.project_id] == board["by_project"][c.project_id]
    assert second["projects"] == len(board["by_project"]) == 2

    # A revision too large for one message: parts, each with the county's figures.
    monkeypatch.setattr(assessment_rates, "PART_SIZE", 1)
    s.send(_started(a.project_id, "2022-07-01"))
    s.send(b.signed(d.project_id, "2022-07-02", "300000000"))
    third = _settle(s)
    assert [(e["revision"], e["part"], e["parts"]) for e in third] == [(3, 1, 2), (3, 2, 2)]
    assert [e["msg_id"] for e in third] == ["score.rates:2022:3:1", "score.rates:2022:3:2"]
    assert {p for e in third for p in e["by_project"]} == {a.project_id, d.project_id}
    assert all(e["county"]["signed"] == 3 and e["county"]["performed"] == 1 for e in third)
    s.close()


def test_the_rates_hold_a_few_projects_facts_at_a_time_and_add_up_to_the_whole_year(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher recomputes the rates every second: reading the whole year's facts at
    once made scoring's memory grow with the year (≈ 50 MB per 1,000 leads, issue 17).
    Counted, not measured: no query of a recomputation loads more than CHUNK projects or
    funds records, and the figures are the scoreboard's, which reads the year whole."""
    s = Scoring(f"sqlite:///{tmp_path / 'scoring.db'}")
    for i in range(7):
        lead = b.lead(("TS01", "TS02")[i % 2])
        s.send(lead)
        s.send(b.signed(lead.project_id, "2022-04-15", f"{100 + i}000000"))
        s.send(b.funds(lead.project_id, "F1", f"{i + 1}000000", "CNY", "2022-06-01"))
        if i % 3 == 0:
            s.send(_started(lead.project_id, "2022-07-01"))
    s.send(b.signed("TS03-NOLEAD", "2022-04-15", "200000000"))  # facts with no project row

    loaded: list[tuple[str, Any]] = []  # (table, query context): kept, so ids stay unique

    def on_load(target: Any, context: Any) -> None:
        loaded.append((type(target).__name__, context))

    monkeypatch.setattr(assessment_rates, "CHUNK", 3, raising=False)
    for table in (store.Project, store.FundsRecord):
        event.listen(table, "load", on_load)
    try:
        (published,) = _settle(s)
    finally:
        for table in (store.Project, store.FundsRecord):
            event.remove(table, "load", on_load)
    per_query = Counter((table, id(context)) for table, context in loaded)
    assert sum(n for (table, _), n in per_query.items() if table == "Project") == 7
    assert max(per_query.values()) <= 3, per_query

    board = scoreboard.build(s.engine, 2022, rules=s.rules).to_json()["rates"]
    assert published["county"] == board["county"] and published["county"]["signed"] == 7
    assert published["by_unit"] == board["by_unit"] and set(board["by_unit"]) == {"TS01", "TS02"}
    assert published["by_project"] == board["by_project"] and published["projects"] == 7
    s.close()
