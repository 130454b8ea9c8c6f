"""The committee's authority and deadlines, end to end (issue 13, items 2–6): intake → review →
scoring on a real nats-server, SQLite and PostgreSQL.

Materials are filed at intake's receipt time (now), so meetings here lie ahead of today, or
behind it where a test wants the deadline passed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from sqlmodel import Session, select

from services.notify.store import Notification
from shared.db import make_engine
from tests.helpers import idle, lead, publish, read_subject, uid
from tests.review.test_review_flow import COMMITTEE, PROOFS_NEW_LAND, ahead, approval

SYSTEM_BACKEND = "postgresql"  # `system` tests here: this backend (both under INVESTFLOW_SLOW)

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
    # Materials are in before the committee sits: the unit's and the Center's inboxes are
    # read side by side, so a decision sent at once could overtake the documents.
    await idle(js)
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

    # A second decision for the same meeting is refused by review (the meeting decided);
    # the rejection stands.
    await publish(js, "intake.CENTER.decision", approval(pid, meeting_id, "TS04"))
    await idle(js)
    [again] = await events(js, "REVIEW", "review.refused", pid)
    assert any(
        err["field"] == "meeting_id" and "already decided" in err["problem"]
        for err in again["errors"]
    )
    assert len(await events(js, "REVIEW", "review.decided", pid)) == 1
    assert not await events(js, "SCORE", "score.credited", pid)

    # The attracting unit and the Center are told of the rejection, and the minutes go to
    # the county's principal leaders (会议纪要报县委主要领导: directory role `principal`).
    told = planned_for(system, f"rejected:{pid}:{meeting_id}")
    assert {"TS04", "CENTER"} <= told
    assert planned_for(system, f"minutes:{pid}:{meeting_id}") == {"L01"}


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
    # Named in full, it is taken at the same meeting: the refused one decided nothing.
    await publish(js, "intake.CENTER.decision", approval(pid, meeting_id, "TS06"))
    await idle(js)
    [decided] = await events(js, "REVIEW", "review.decided", pid)
    assert decided["responsible_leader"] == "L02" and decided["meeting_id"] == meeting_id
    assert planned_for(system, f"minutes:{pid}:{meeting_id}") == {"L01"}


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


def _standard_recognised(unit: str) -> tuple[str, dict]:
    data = lead(
        unit,
        planned_investment="50000000",
        # The funds record's voucher files the funds_voucher proof.
        documents=[{"type": p, "ref": p} for p in PROOFS_NEW_LAND if p != "funds_voucher"],
    )
    return f"{unit}-{data['lead_id']}", data


async def test_a_corrected_lead_is_decided_again_and_a_withdrawn_record_reversed(system) -> None:
    """更正 / 撤回 (issue 13 item 11) through review: recognition follows the corrected facts,
    scoring reverses and credits once each time, notify tells the owner of each change."""
    js = system.js
    pid, data = _standard_recognised("TS02")
    await publish(js, "intake.TS02.lead", data)
    await publish(js, "intake.TS02.funds", funds(pid, "F1", "2000000"))
    await idle(js)
    [credit] = await events(js, "SCORE", "score.credited", pid)

    unsafe = data["environment"] | {"safety_ok": False}
    fix = {"correction_id": "C1", "target": {"kind": "lead", "project_id": pid}}
    await publish(
        js,
        "intake.TS02.correction",
        fix | {"changes": {"environment": unsafe}, "reason": "安全评估未通过"},
        key="c1",
    )
    await idle(js)
    last = (await events(js, "REVIEW", "review.recognition", pid))[-1]
    assert last["recognized"] is False
    [reversal] = await events(js, "SCORE", "score.reversed", pid)
    assert reversal["points"] == credit["points"] and "environment_failed" in reversal["reason"]
    assert "TS02" in planned_for(system, "corrected:correction:TS02:c1")

    back = fix | {"correction_id": "C2", "changes": {"environment": data["environment"]}}
    await publish(js, "intake.TS02.correction", back | {"reason": "复核通过"}, key="c2")
    await idle(js)
    assert (await events(js, "REVIEW", "review.recognition", pid))[-1]["recognized"] is True
    assert len(await events(js, "SCORE", "score.credited", pid)) == 2

    # Withdrawn funds record: its voucher no longer files the funds_voucher proof either.
    target = {"kind": "funds", "project_id": pid, "funds_id": "F1"}
    await publish(js, "intake.TS02.withdrawal", {"target": target, "reason": "录入错误"}, key="w1")
    await idle(js)
    assert len(await events(js, "SCORE", "score.reversed", pid)) == 2
    last = (await events(js, "REVIEW", "review.recognition", pid))[-1]
    assert last["recognized"] is False and "funds_voucher" in last["missing_proofs"]
    assert "TS02" in planned_for(system, "withdrawn:withdrawal:TS02:w1")


async def test_the_center_resolves_a_held_claim_with_the_cli(system, capsys) -> None:
    """Held duplicate claims (issue 13 item 12): `investflow claims list|resolve`."""
    import argparse

    from investflow import claims_cli

    js = system.js
    pid, data = _standard_recognised("TS03")
    await publish(js, "intake.TS03.lead", data)
    await idle(js)  # the units' inboxes are read side by side: TS03's report is the first
    again = lead("TS07", title=data["title"], investor=data["investor"])
    held = f"TS07-{again['lead_id']}"
    await publish(js, "intake.TS07.lead", again)
    await idle(js)
    db = {"database_url": system.database_url, "data": None}
    assert claims_cli.cmd_list(argparse.Namespace(format="json", **db)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"project_id": held, "duplicate_of": pid}.items() <= next(
        r for r in listed if r["project_id"] == held
    ).items()

    resolve = argparse.Namespace(
        project_id=held, assign=None, distinct=True, reason="两个项目", url=system.nats_url
    )
    assert await asyncio.to_thread(claims_cli.cmd_resolve, resolve) == 0
    # Again: a re-send, nothing changes.
    assert await asyncio.to_thread(claims_cli.cmd_resolve, resolve) == 0
    await idle(js)
    assert "already sent" in capsys.readouterr().out
    assert claims_cli.cmd_list(argparse.Namespace(format="json", **db)) == 0
    assert held not in {r["project_id"] for r in json.loads(capsys.readouterr().out)}
    # The held report goes ahead: review screens it, and both units and the Center are told.
    assert await events(js, "REVIEW", "review.screened", held)
    assert {"TS03", "TS07", "CENTER"} <= planned_for(system, f"claim_resolved:{held}")
