"""Review end to end: leads through intake into review, decisions out on review.*."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.helpers import idle, lead, publish, read_subject, uid

SYSTEM_BACKEND = "sqlite"  # `system` tests here: this backend (both under INVESTFLOW_SLOW)

pytestmark = pytest.mark.timeout(180)

COMMITTEE = ["basic_info_form", "feasibility_report", "aerial_view", "investment_contract"]
PROOFS_NEW_LAND = [
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
    "progress_images",
    "land_use_certificate",
]


def approval(pid: str, meeting_id: str, unit: str, sponsor: str = "L03") -> dict:
    """An approval naming everything the ruleset's `approval_requires` asks for."""
    return {
        "project_id": pid,
        "meeting_id": meeting_id,
        "decision": "approved",
        "minutes_ref": f"MIN-{meeting_id}",
        "responsible_leader": "L02",
        "sponsor_leader": sponsor,
        "hq": {"commander": sponsor, "members": [unit, "DEVZONE", "DRC"]},
    }


def ahead(days: int) -> str:
    """A meeting day `days` from now: materials are filed at intake's receipt time (now), so
    a meeting whose agenda deadline is past has them late (材料逾期)."""
    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


async def events_for(js, subject: str, project_id: str) -> list[dict]:
    return [e for e in await read_subject(js, "REVIEW", subject) if e["project_id"] == project_id]


async def test_real_estate_is_terminated_with_its_rule(system) -> None:
    data = lead("TS01", kind="real_estate", planned_investment="300000000")
    await publish(system.js, "intake.TS01.lead", data)
    await idle(system.js)
    [screened] = await events_for(system.js, "review.screened", f"TS01-{data['lead_id']}")
    assert screened["outcome"] == "terminated"
    assert "real_estate_excluded" in screened["reasons"]
    expl = screened["explanation"]
    assert (
        expl["ruleset_id"] == "review"
        and expl["version"]
        and expl["deciding_rule"] == "real_estate_excluded"
    )
    assert len(expl["input_sha256"]) == 64
    [recognition] = await events_for(system.js, "review.recognition", f"TS01-{data['lead_id']}")
    assert (
        recognition["recognized"] is False
        and "real_estate_excluded" in recognition["recognition_blockers"]
    )


async def test_major_project_materials_then_recognition(system) -> None:
    data = lead("TS02", planned_investment="150000000", kind="industrial", land="new_land")
    pid = f"TS02-{data['lead_id']}"
    await publish(system.js, "intake.TS02.lead", data)
    await idle(system.js)
    [screened] = await events_for(system.js, "review.screened", pid)
    assert screened["outcome"] == "accepted" and screened["track"] == "major"
    [materials] = await events_for(system.js, "review.materials", pid)
    assert materials["complete"] is False and sorted(materials["missing_materials"]) == sorted(
        COMMITTEE
    )

    meeting_id = f"M{uid()}"
    await publish(
        system.js,
        "intake.CENTER.meeting",
        {"meeting_id": meeting_id, "on": ahead(40), "agenda": [pid]},
    )
    # The Center's and the unit's inboxes are read side by side: the agenda first, so each
    # document's materials event names the meeting's deadline.
    await idle(system.js)
    for doc in COMMITTEE:
        await publish(
            system.js, "intake.TS02.document", {"project_id": pid, "type": doc, "ref": f"{doc}-1"}
        )
    await idle(system.js)
    history = await events_for(system.js, "review.materials", pid)
    # meeting − agenda_lead_days (3)
    assert (
        history[1]["deadline"] == (dt.date.fromisoformat(ahead(40)) - dt.timedelta(3)).isoformat()
    )
    assert [len(m["missing_materials"]) for m in history] == [4, 4, 3, 2, 1, 0]
    assert history[-1]["complete"] is True

    recognitions = await events_for(system.js, "review.recognition", pid)
    assert recognitions[-1]["recognized"] is False
    await publish(system.js, "intake.CENTER.decision", approval(pid, meeting_id, "TS02"))
    for doc in PROOFS_NEW_LAND:
        await publish(
            system.js, "intake.TS02.document", {"project_id": pid, "type": doc, "ref": f"{doc}-1"}
        )
    await idle(system.js)
    recognitions = await events_for(system.js, "review.recognition", pid)
    assert recognitions[-1]["recognized"] is True and recognitions[-1]["missing_proofs"] == []
    assert recognitions[-2]["missing_proofs"] == ["land_use_certificate"]


async def test_committee_decision_names_sponsor_and_hq(system) -> None:
    data = lead("TS03", planned_investment="200000000")
    pid = f"TS03-{data['lead_id']}"
    meeting_id = f"M{uid()}"
    await publish(system.js, "intake.TS03.lead", data)
    await publish(
        system.js,
        "intake.CENTER.meeting",
        {"meeting_id": meeting_id, "on": ahead(30), "agenda": [pid]},
    )
    for doc in COMMITTEE:
        await publish(
            system.js, "intake.TS03.document", {"project_id": pid, "type": doc, "ref": f"{doc}-1"}
        )
    await idle(system.js)  # materials in before the committee sits (inboxes read side by side)
    members = ["TS03", "DEVZONE", "DRC", "NRB"]
    await publish(
        system.js,
        "intake.CENTER.decision",
        {
            "project_id": pid,
            "meeting_id": meeting_id,
            "decision": "approved",
            "minutes_ref": "MIN-7",
            "responsible_leader": "L02",
            "sponsor_leader": "L03",
            "hq": {"commander": "L03", "members": members},
        },
    )
    await idle(system.js)
    [decided] = await events_for(system.js, "review.decided", pid)
    assert decided["decision"] == "approved" and decided["sponsor_leader"] == "L03"
    assert decided["hq_commander"] == "L03" and decided["hq_members"] == members
    assert decided["responsible_leader"] == "L02"
