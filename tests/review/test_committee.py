"""The committee's authority and deadlines, end to end (issue 13, items 2–6): intake → review →
scoring on a real nats-server, SQLite and PostgreSQL.

Materials are filed at intake's receipt time (now), so meetings here lie ahead of today, or
behind it where a test wants the deadline passed.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import Session, select

from services.notify.store import Notification
from shared.db import make_engine
from tests.helpers import idle, lead, publish, read_subject, uid
from tests.review.test_review_flow import COMMITTEE, PROOFS_NEW_LAND, ahead, approval

pytestmark = pytest.mark.timeout(240)


def planned_for(system, cause: str) -> set[str]:
    """Recipients notify planned a cause for (its outbox, whatever the delivery's fate)."""
    url = system.database_url
    if url is None or "intake.db" in url:
        url = f"sqlite:///{system.data_dir / 'notify.db'}"
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(Notification).where(Notification.cause == cause)).all()
            return {r.recipient for r in rows}
    finally:
        engine.dispose()


async def events(js, stream: str, subject: str, pid: str) -> list[dict]:
    return [e for e in await read_subject(js, stream, subject) if e.get("project_id") == pid]


async def major_project(js, unit: str, *, meeting_on: str, materials: bool = True, **kw):
    data = lead(unit, planned_investment="200000000", **kw)
    pid = f"{unit}-{data['lead_id']}"
    meeting_id = f"M{uid()}"
    await publish(js, f"intake.{unit}.lead", data)
    await publish(
        js, "intake.CENTER.meeting", {"meeting_id": meeting_id, "on": meeting_on, "agenda": [pid]}
    )
    for doc in COMMITTEE if materials else []:
        await publish(js, f"intake.{unit}.document", {"project_id": pid, "type": doc, "ref": doc})
    for doc in PROOFS_NEW_LAND:
        await publish(js, f"intake.{unit}.document", {"project_id": pid, "type": doc, "ref": doc})
    return pid, meeting_id


def funds(pid: str, funds_id: str = "F1", amount: str = "5000000") -> dict:
    return {
        "project_id": pid,
        "funds_id": funds_id,
        "amount": amount,
        "currency": "CNY",
        "arrived_on": "2022-06-01",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": f"BR-{funds_id}"},
    }


async def test_a_rejection_ends_the_track_holds_the_funds_and_is_told(system) -> None:
    js = system.js
    pid, meeting_id = await major_project(js, "TS04", meeting_on=ahead(30))
    await publish(js, "intake.TS04.funds", funds(pid))
    await idle(js)
    held = (await events(js, "SCORE", "score.held", pid))[-1]
    assert "committee_approval_missing" in held["reason"]  # a major project needs an approval

    rejection = {
        "project_id": pid,
        "meeting_id": meeting_id,
        "decision": "rejected",
        "minutes_ref": "MIN-R1",
    }
    await publish(js, "intake.CENTER.decision", rejection)
    await idle(js)
    [decided] = await events(js, "REVIEW", "review.decided", pid)
    assert decided["decision"] == "rejected"
    last = (await events(js, "REVIEW", "review.recognition", pid))[-1]
    assert last["recognized"] is False and last["committee_rejected"] is True
    assert last["recognition_blockers"][0] == "committee_rejected"
    holds = await events(js, "SCORE", "score.held", pid)
    assert (
        "未通过集体决策" in holds[-1]["reason"]
        and "rejected by the committee" in holds[-1]["reason"]
    )
    assert not await events(js, "SCORE", "score.credited", pid)

    # A second decision for the same meeting is refused (intake knows the pair already;
    # review would refuse it too); the rejection stands.
    await publish(js, "intake.CENTER.decision", approval(pid, meeting_id, "TS04"))
    await idle(js)
    again = [
        e
        for e in await read_subject(js, "INTAKE", "intake.rejected.CENTER.decision")
        if any(err["field"] == "meeting_id" for err in e["errors"])
    ]
    assert again
    assert len(await events(js, "REVIEW", "review.decided", pid)) == 1
    assert not await events(js, "SCORE", "score.credited", pid)

    # The attracting unit and the Center are told of the rejection.
    told = planned_for(system, f"rejected:{pid}:{meeting_id}")
    assert {"TS04", "CENTER"} <= told


async def test_re_review_at_a_later_meeting_approves_and_credits_once(system) -> None:
    js = system.js
    pid, first = await major_project(js, "TS05", meeting_on=ahead(20))
    await publish(js, "intake.TS05.funds", funds(pid, "F1", "3000000"))
    await publish(
        js,
        "intake.CENTER.decision",
        {"project_id": pid, "meeting_id": first, "decision": "rejected", "minutes_ref": "R"},
    )
    await idle(js)
    later = f"M{uid()}"
    await publish(
        js, "intake.CENTER.meeting", {"meeting_id": later, "on": ahead(50), "agenda": [pid]}
    )
    await publish(js, "intake.CENTER.decision", approval(pid, later, "TS05", sponsor="L04"))
    await idle(js)
    decided = await events(js, "REVIEW", "review.decided", pid)
    assert [d["decision"] for d in decided] == ["rejected", "approved"]
    [credit] = await events(js, "SCORE", "score.credited", pid)
    assert credit["points"] == "3000000.00" and "L04" in credit["credited_to"]


async def test_the_latest_meeting_governs(system) -> None:
    js = system.js
    pid, early = await major_project(js, "TS03", meeting_on=ahead(20))
    late = f"M{uid()}"
    await publish(
        js, "intake.CENTER.meeting", {"meeting_id": late, "on": ahead(45), "agenda": [pid]}
    )
    await publish(js, "intake.CENTER.decision", approval(pid, late, "TS03"))
    await idle(js)
    # The earlier meeting's decision, arriving after the later one's, cannot overturn it.
    await publish(
        js,
        "intake.CENTER.decision",
        {"project_id": pid, "meeting_id": early, "decision": "rejected", "minutes_ref": "R2"},
    )
    await idle(js)
    [refused] = await events(js, "REVIEW", "review.refused", pid)
    assert refused["unit"] == "CENTER"
    assert any("latest meeting governs" in e["problem"] for e in refused["errors"])
    [decided] = await events(js, "REVIEW", "review.decided", pid)
    assert decided["decision"] == "approved" and decided["meeting_id"] == late
    last = (await events(js, "REVIEW", "review.recognition", pid))[-1]
    assert last["recognized"] is True and last["committee_rejected"] is False


async def test_an_approval_must_name_leaders_and_an_hq_with_unit_and_landing_area(system) -> None:
    js = system.js
    pid, meeting_id = await major_project(js, "TS06", meeting_on=ahead(25))
    bad = approval(pid, meeting_id, "TS06")
    del bad["responsible_leader"]
    bad["hq"] = {"commander": "L03", "members": ["DRC"]}
    await publish(js, "intake.CENTER.decision", bad)
    await idle(js)
    [refused] = await events(js, "REVIEW", "review.refused", pid)
    fields = sorted(e["field"] for e in refused["errors"])
    assert fields == ["hq.members", "hq.members", "responsible_leader"]
    assert not await events(js, "REVIEW", "review.decided", pid)
    # Named in full, it is taken (at another meeting: intake holds one decision per meeting).
    again = f"M{uid()}"
    await publish(
        js, "intake.CENTER.meeting", {"meeting_id": again, "on": ahead(40), "agenda": [pid]}
    )
    await publish(js, "intake.CENTER.decision", approval(pid, again, "TS06"))
    await idle(js)
    [decided] = await events(js, "REVIEW", "review.decided", pid)
    assert decided["responsible_leader"] == "L02" and decided["meeting_id"] == again


async def test_materials_filed_after_the_deadline_do_not_count_and_the_project_is_late(
    system,
) -> None:
    js = system.js
    # The agenda closed yesterday: the four materials filed now are late (材料逾期).
    past = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    pid, meeting_id = await major_project(js, "TS07", meeting_on=past)
    await idle(js)
    materials = await events(js, "REVIEW", "review.materials", pid)
    late = [m for m in materials if m.get("late")]
    assert late and late[-1]["meeting_id"] == meeting_id and late[-1]["complete"] is False
    assert sorted(late[-1]["missing_materials"]) == sorted(COMMITTEE)
    # No decision can be taken on it at that meeting.
    await publish(js, "intake.CENTER.decision", approval(pid, meeting_id, "TS07"))
    await idle(js)
    [refused] = await events(js, "REVIEW", "review.refused", pid)
    assert "材料逾期" in refused["errors"][0]["problem"]
    # At the next meeting the materials filed meanwhile count, and it can be approved.
    nxt = f"M{uid()}"
    await publish(
        js, "intake.CENTER.meeting", {"meeting_id": nxt, "on": ahead(35), "agenda": [pid]}
    )
    await publish(js, "intake.CENTER.decision", approval(pid, nxt, "TS07"))
    await idle(js)
    materials = await events(js, "REVIEW", "review.materials", pid)
    assert materials[-1]["complete"] is True and materials[-1]["meeting_id"] == nxt
    [decided] = await events(js, "REVIEW", "review.decided", pid)
    assert decided["meeting_id"] == nxt


async def test_the_voucher_on_a_funds_record_files_the_funds_voucher_proof(system) -> None:
    js = system.js
    proofs = [p for p in PROOFS_NEW_LAND if p != "funds_voucher"]
    data = lead(
        "TS08", planned_investment="50000000", documents=[{"type": p, "ref": p} for p in proofs]
    )
    pid = f"TS08-{data['lead_id']}"
    await publish(js, "intake.TS08.lead", data)
    await idle(js)
    [first] = await events(js, "REVIEW", "review.recognition", pid)
    assert first["missing_proofs"] == ["funds_voucher"]
    await publish(js, "intake.TS08.funds", funds(pid, "F9", "1000000"))
    await idle(js)
    last = (await events(js, "REVIEW", "review.recognition", pid))[-1]
    assert last["recognized"] is True and last["missing_proofs"] == []
    [credit] = await events(js, "SCORE", "score.credited", pid)
    assert credit["funds_id"] == "F9"


async def test_an_unassessed_project_is_not_recognised(system) -> None:
    js = system.js
    proofs = PROOFS_NEW_LAND
    data = lead(
        "TS01",
        planned_investment="50000000",
        environment={"emissions_ok": True, "energy_ok": True},
        documents=[{"type": p, "ref": p} for p in proofs],
    )
    pid = f"TS01-{data['lead_id']}"
    await publish(js, "intake.TS01.lead", data)
    await idle(js)
    [rec] = await events(js, "REVIEW", "review.recognition", pid)
    assert rec["recognized"] is False and rec["recognition_blockers"] == [
        "environment_not_assessed"
    ]
