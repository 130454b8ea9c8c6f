"""Corrections (更正), withdrawals (撤回) and resolved duplicate claims, through intake and
scoring on a real nats-server, SQLite and PostgreSQL (issue 13 items 11, 12 and 13).

The test plays review (it publishes `review.recognition` itself), as test_scoring_flow does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.request
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import Session, select

from services.intake import store as intake_store
from services.scoring import store
from shared.db import make_engine
from tests.helpers import http_post, idle, lead, publish, read_subject, uid
from tests.scoring import test_scoring_flow as flow
from tests.scoring.test_scoring_flow import funds_payload, recognise, report_lead, score_events

scoring_system = flow.scoring_system  # the same system: intake and scoring, SQLite and PostgreSQL

pytestmark = pytest.mark.timeout(180)


def points_of(database_url: str, project_id: str) -> Decimal:
    """What the ledger credits the project now: credits minus reversals."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(store.Entry).where(store.Entry.project_id == project_id))
            return store.from_fen(sum(e.points_fen for e in rows))
    finally:
        engine.dispose()


async def rejections(js: Any, unit: str, kind: str) -> list[dict[str, Any]]:
    return await read_subject(js, "INTAKE", f"intake.rejected.{unit}.{kind}")


def correction(target: dict[str, Any], changes: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"correction_id": f"C{uid()}", "target": target, "changes": changes, "reason": reason}


async def credited_project(js: Any, unit: str, amount: str = "800000", **lead_fields: Any) -> str:
    pid = await report_lead(js, unit, **lead_fields)
    await recognise(js, pid)
    await idle(js)
    await publish(js, f"intake.{unit}.funds", funds_payload(pid, "F1", amount, "CNY", "2022-08-01"))
    await idle(js)
    assert len(await score_events(js, "score.credited", pid, 1)) == 1
    return pid


async def test_a_corrected_amount_reverses_the_old_credit_and_credits_the_new_once(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    pid = await credited_project(js, "TS03")
    target = {"kind": "funds", "project_id": pid, "funds_id": "F1"}
    fix = correction(target, {"amount": "500000"}, "typo: 80万 entered for 50万")
    await publish(js, "intake.TS03.correction", fix, key="fix-1")
    await publish(js, "intake.TS03.correction", fix, key="fix-1")  # redelivered
    await idle(js)

    (reversed_,) = await score_events(js, "score.reversed", pid, 1)
    assert Decimal(reversed_["points"]) == Decimal("800000.00")
    assert "amount 800000 → 500000" in reversed_["reason"]
    credits = await score_events(js, "score.credited", pid, 2)
    assert [Decimal(c["points"]) for c in credits] == [Decimal("800000.00"), Decimal("500000.00")]
    assert "typo" in credits[1]["cause"] and credits[0]["cause"] is None
    assert points_of(scoring_system.scoring_db, pid) == Decimal("500000.00")

    # The same correction under another key is a re-send of a used id, not a second one.
    await publish(js, "intake.TS03.correction", fix, key="fix-1-again")
    # Another unit may not touch TS03's record; the refusal names both.
    await publish(
        js, "intake.TS05.correction", correction(target, {"amount": "1"}, "mine"), key=uid()
    )
    await idle(js)
    assert points_of(scoring_system.scoring_db, pid) == Decimal("500000.00")
    assert len(await score_events(js, "score.credited", pid)) == 2
    again = [r for r in await rejections(js, "TS03", "correction") if r["idempotency_key"]]
    assert any(e["field"] == "correction_id" for r in again for e in r["errors"])
    (refused,) = [
        r
        for r in await rejections(js, "TS05", "correction")
        if any(pid in e["problem"] for e in r["errors"])
    ]
    problem = refused["errors"][0]["problem"]
    assert "reported by TS03" in problem and "TS05" in problem and "仅原报送单位" in problem
    # The same refusal over HTTP, before anything is queued.
    status, body = await http_post(
        f"{scoring_system.http_url}/v1/units/TS05/correction",
        json.dumps(correction(target, {"amount": "2"}, "mine")).encode(),
        uid(),
    )
    assert status == 422 and "reported by TS03" in body["errors"][0]["problem"]

    # The audit trail: who, when, why, old → new, versioned.
    intake_db = scoring_system.database_url or scoring_system.scoring_db.replace(
        "scoring.db", "intake.db"
    )
    engine = make_engine(intake_db)
    try:
        with Session(engine) as session:
            (rev,) = intake_store.revisions(session, pid)
    finally:
        engine.dispose()
    assert (rev.version, rev.action, rev.unit, rev.owner) == (2, "correction", "TS03", "TS03")
    assert '"old": "800000"' in rev.changes and '"new": "500000"' in rev.changes


async def test_a_withdrawn_funds_record_is_reversed_and_a_future_date_is_refused(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    pid = await credited_project(js, "TS04")
    target = {"kind": "funds", "project_id": pid, "funds_id": "F1"}
    future = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    await publish(
        js,
        "intake.TS04.correction",
        correction(target, {"arrived_on": future}, "date"),
        key=uid(),
    )
    # Intake keeps order within one unit only (its inboxes are partitioned by unit), so a
    # Center withdrawal sent right after a unit's correction may be recorded first.
    await idle(js)
    # The Center may withdraw any unit's record.
    withdrawal = {"target": target, "reason": "entered twice by mistake"}
    await publish(js, "intake.CENTER.withdrawal", withdrawal, key="wd-1")
    await publish(js, "intake.CENTER.withdrawal", withdrawal, key="wd-1")
    await idle(js)
    (bad,) = [
        r
        for r in await rejections(js, "TS04", "correction")
        if any("future" in e["problem"] for e in r["errors"])
    ]
    assert bad["errors"][0]["field"] == "changes.arrived_on"
    (reversed_,) = await score_events(js, "score.reversed", pid, 1)
    assert "withdrawn" in reversed_["reason"]
    assert points_of(scoring_system.scoring_db, pid) == 0
    # Withdrawn: a later correction is refused, and nothing more is credited.
    await publish(js, "intake.TS04.correction", correction(target, {"amount": "9"}, "x"), uid())
    await idle(js)
    assert len(await score_events(js, "score.credited", pid)) == 1


async def test_a_corrected_lead_rescores_and_a_withdrawn_lead_takes_its_credits_back(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    pid = await credited_project(js, "TS06")
    foreign = {"name": "Acme Holdings Ltd", "origin": "foreign", "country": "US"}
    fix = correction({"kind": "lead", "project_id": pid}, {"investor": foreign}, "investor")
    await publish(js, "intake.TS06.correction", fix, key=uid())
    await idle(js)
    credits = await score_events(js, "score.credited", pid, 2)
    assert Decimal(credits[-1]["points"]) == Decimal("2400000.00")  # ×3, foreign-funded
    assert points_of(scoring_system.scoring_db, pid) == Decimal("2400000.00")

    await publish(
        js,
        "intake.TS06.withdrawal",
        {"target": {"kind": "lead", "project_id": pid}, "reason": "not our project"},
        key=uid(),
    )
    await idle(js)
    assert points_of(scoring_system.scoring_db, pid) == 0
    # The project is gone: nothing more is recorded for it.
    await publish(js, "intake.TS06.funds", funds_payload(pid, "F2", "5", "CNY", "2022-08-02"))
    await idle(js)
    (refused,) = [
        r
        for r in await rejections(js, "TS06", "funds")
        if any(pid in e["problem"] for e in r["errors"])
    ]
    assert "withdrawn" in refused["errors"][0]["problem"]


async def test_funds_outside_the_assessment_year_are_accepted_and_marked(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    # A project of the 2021 assessment (its lead's year): 2022 funds count, marked 非当年度.
    old = await report_lead(js, "TS07", reported_on="2021-12-01")
    pid = await report_lead(js, "TS08")  # reported 2022-03-01
    await recognise(js, old)
    await recognise(js, pid)
    await idle(js)
    await publish(js, "intake.TS07.funds", funds_payload(old, "F1", "1000", "CNY", "2022-01-05"))
    await publish(js, "intake.TS08.funds", funds_payload(pid, "F1", "1000", "CNY", "2022-12-30"))
    await publish(js, "intake.TS08.funds", funds_payload(pid, "F2", "1000", "CNY", "2021-12-30"))
    await idle(js)
    (marked,) = await score_events(js, "score.credited", old, 1)
    assert marked["out_of_year"] is True and marked["year"] == 2022
    (credited,) = await score_events(js, "score.credited", pid, 1)
    assert credited["funds_id"] == "F1" and credited["out_of_year"] is False
    (held,) = await score_events(js, "score.held", pid, 1)  # no 2021 ruleset: held, marked
    assert held["funds_id"] == "F2" and held["out_of_year"] is True
    # The scoreboard lists both, each with why.
    url = f"{scoring_system.http_urls['scoring']}/v1/scoreboard?year=2022"
    board = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()))
    flagged = {(f["project_id"], f.get("funds_id")): f["problem"] for f in board["flagged"]}
    assert "assessment year 2021" in flagged[(old, "F1")]
    assert "every assessment year" in flagged[(pid, "F2")]
    assert (pid, "F1") not in flagged


async def test_the_center_assigns_a_held_duplicate_and_only_that_claim_is_credited(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    first = lead("TS01")
    await publish(js, "intake.TS01.lead", first)
    first_pid = f"TS01-{first['lead_id']}"
    await idle(js)  # the units' inboxes are read side by side: TS01's report is the first
    again = lead("TS02", title=first["title"], investor=first["investor"])
    await publish(js, "intake.TS02.lead", again)
    held_pid = f"TS02-{again['lead_id']}"
    await recognise(js, first_pid)
    await idle(js)
    await publish(
        js, "intake.TS01.funds", funds_payload(first_pid, "F1", "700000", "CNY", "2022-08-01")
    )
    await idle(js)
    assert points_of(scoring_system.scoring_db, first_pid) == Decimal("700000.00")

    claim = {
        # Either report of the pair names the claim: which came first is not the Center's
        # to know (the units' inboxes are read side by side).
        "project_id": first_pid,
        "resolution": "assign",
        "assign_to": held_pid,
        "reason": "TS02 brought the investor / 由TS02引进",
    }
    await publish(js, "intake.TS01.claim", claim, key=uid())  # not the Center: refused
    await publish(js, "intake.CENTER.claim", claim, key="claim-1")
    await publish(js, "intake.CENTER.claim", claim, key="claim-1")
    await idle(js)
    (resolved,) = await read_subject(js, "PROJECT", "project.claim")
    assert (resolved["released"], resolved["withdrawn"]) == (held_pid, first_pid)
    assert points_of(scoring_system.scoring_db, first_pid) == 0
    leads = [
        e for e in await read_subject(js, "PROJECT", "project.lead") if e["project_id"] == held_pid
    ]
    assert len(leads) == 1

    await recognise(js, held_pid)
    await idle(js)
    await publish(
        js, "intake.TS02.funds", funds_payload(held_pid, "F1", "700000", "CNY", "2022-08-01")
    )
    await idle(js)
    assert points_of(scoring_system.scoring_db, held_pid) == Decimal("700000.00")
    (credited,) = await score_events(js, "score.credited", held_pid, 1)
    assert credited["credited_to"][0] == "TS02"
