"""Corrections (更正) and withdrawals (撤回) on the board, through intake on a real nats-server
with every service running: a withdrawn lead leaves the active stages, a withdrawn funds
record no longer counts, corrected fields show their new values, and the project page's
timeline lists each amendment with its reason, version, sender and old → new values.
Unit TS07 is this module's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from sqlmodel import Session

from services.board import ingest
from services.board.store import TABLES, BoardProject
from shared.db import create_tables, make_engine
from tests.helpers import idle, publish, read_subject, uid

from .conftest import token
from .support import eventually, get, get_json, new_lead, report

CENTER = token("center")
TS07 = token("unit", "TS07")


def _funds(pid: str, funds_id: str, amount: str, on: str) -> dict[str, Any]:
    return {
        "project_id": pid,
        "funds_id": funds_id,
        "amount": amount,
        "currency": "CNY",
        "arrived_on": on,
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": f"BR-{funds_id}"},
    }


def _fix(target: dict[str, Any], changes: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"correction_id": f"C{uid()}", "target": target, "changes": changes, "reason": reason}


async def test_corrections_and_withdrawals_show_on_the_board(board_system) -> None:
    js, base = board_system.js, board_system.board_url
    a = await new_lead(js, "TS07", reported_on="2022-03-01", planned_investment="150000000")
    b = await new_lead(js, "TS07", reported_on="2022-03-02")
    signed = {"project_id": a, "milestone": "signed", "on": "2022-03-20", "amount": "200000000"}
    await report(js, "TS07", "milestone", signed)
    await report(js, "TS07", "funds", _funds(a, "F1", "30000000", "2022-04-10"))
    await report(js, "TS07", "funds", _funds(a, "F2", "1250000", "2022-05-03"))
    await idle(js)

    fix_lead = _fix(
        {"kind": "lead", "project_id": a},
        {"title": "年产8万吨新材料项目（更正）", "planned_investment": "180000000"},
        "项目名称与投资额录入有误 / title and investment entered wrongly",
    )
    fix_funds = _fix(
        {"kind": "funds", "project_id": a, "funds_id": "F1"},
        {"amount": "25000000"},
        "到位金额以银行进账单为准 / amount as on the bank receipt",
    )
    fix_signed = _fix(
        {"kind": "milestone", "project_id": a, "milestone": "signed"},
        {"on": "2022-03-25"},
        "签约日期有误 / signing date wrong",
    )
    await publish(js, "intake.TS07.correction", fix_lead, key=f"k-{uid()}")
    await publish(js, "intake.TS07.correction", fix_funds, key=f"k-{uid()}")
    await publish(js, "intake.TS07.correction", fix_signed, key=f"k-{uid()}")
    withdraw_f2 = {
        "target": {"kind": "funds", "project_id": a, "funds_id": "F2"},
        "reason": "重复录入 / entered twice",
    }
    await publish(js, "intake.TS07.withdrawal", withdraw_f2, key=f"k-{uid()}")
    withdraw_b = {
        "target": {"kind": "lead", "project_id": b},
        "reason": "误报 / reported by mistake",
    }
    await publish(js, "intake.TS07.withdrawal", withdraw_b, key=f"k-{uid()}")
    await idle(js)

    seen: list = []

    async def settled():
        status, body = await get_json(base, "/api/overview", TS07)
        seen[:] = [status, body]
        return body if status == 200 and body["by_stage"]["withdrawn"] == 1 else None

    ov = await eventually(settled, describe=lambda: seen)
    # b is withdrawn: out of the projects and the active stages; a signed, funds in place.
    assert ov["projects"] == 1
    assert {s: n for s, n in ov["by_stage"].items() if n} == {"funds": 1, "withdrawn": 1}
    assert sum(ov["lights"].values()) == 1  # only a is active
    assert [s["actual"] for s in ov["signings"]] == [1, 0, 0, 0]
    # F1 corrected to 25M; F2 withdrawn no longer counts (nor is it held).
    assert ov["funds_by_unit_month"] == {"TS07": {"2022-04": "25000000.00"}}

    status, page = await get_json(base, f"/api/projects/{a}", CENTER)
    assert status == 200
    p = page["project"]
    assert (p["title"], p["planned_investment"]) == ("年产8万吨新材料项目（更正）", "180000000")
    assert p["signed_on"] == "2022-03-25" and p["stage"] == "funds"
    funds = {f["funds_id"]: f for f in page["funds"]}
    assert funds["F1"]["amount"] == "25000000" and funds["F2"]["state"] == "withdrawn"
    held = sum(1 for f in page["funds"] if f["state"] == "held")
    assert ov["funds_held"] == held
    amendments = [i["amendment"] for i in page["timeline"] if i["amendment"]]
    assert [(m["label"]["en"], m["record"]["kind"]) for m in amendments] == [
        ("correction", "lead"),
        ("correction", "funds"),
        ("correction", "milestone"),
        ("withdrawal", "funds"),
    ]
    lead_fix = amendments[0]
    assert (lead_fix["version"], lead_fix["sent_by"], lead_fix["owner"]) == (2, "TS07", "TS07")
    assert lead_fix["reason"] == fix_lead["reason"] and lead_fix["label"]["zh"] == "更正"
    assert {c["field"]: (c["old"], c["new"]) for c in lead_fix["changes"]}[
        "planned_investment"
    ] == ("150000000", "180000000")
    assert amendments[1]["changes"] == [{"field": "amount", "old": "30000000", "new": "25000000"}]
    assert amendments[3]["reason"] == "重复录入 / entered twice" and not amendments[3]["changes"]

    status, page_b = await get_json(base, f"/api/projects/{b}", TS07)
    assert page_b["project"]["stage"] == "withdrawn" and page_b["project"]["light"] is None
    assert page_b["project"]["withdrawn_reason"] == withdraw_b["reason"]
    status, listing = await get_json(base, "/api/projects?stage=withdrawn", TS07)
    assert [r["project_id"] for r in listing["rows"]] == [b]

    # The pages, in both languages.
    for lang, words in (
        ("zh", ("项目已撤回", "撤回", "原因")),
        ("en", ("Project withdrawn", "withdrawal", "reason")),
    ):
        status, html, _ = await asyncio.to_thread(get, base, f"/projects/{b}?lang={lang}", TS07)
        text = html.decode()
        assert status == 200 and all(w in text for w in words), (lang, words)
    status, html, _ = await asyncio.to_thread(get, base, f"/projects/{a}?lang=en", CENTER)
    text = html.decode()
    assert 'data-field="amount"' in text and "30000000" in text and "25000000" in text


async def test_an_amendment_out_of_contract_is_dead_lettered_naming_the_field(
    board_system,
) -> None:
    js = board_system.js
    bad = {
        "event_id": f"bad-{uid()}",
        "project_id": "TS07-NOPE",
        "unit": "TS07",
        "idempotency_key": uid(),
        "received_at": "2022-06-01T00:00:00Z",
        "owner": "TS07",
        "before": {},
        "data": {"target": {"kind": "lead", "project_id": "TS07-NOPE"}, "reason": "x"},
    }  # no `version`
    await publish(js, "project.withdrawal", bad, key=bad["event_id"])

    async def lettered():
        letters = await read_subject(js, "DLQ", "dlq.board.>")
        return [d for d in letters if bad["event_id"] in d["body"]]

    (letter,) = await eventually(lettered, timeout=30)
    assert "version" in letter["error"] and "project.withdrawal" in letter["error"]
    status, _ = await get_json(board_system.board_url, "/api/projects/TS07-NOPE", CENTER)
    assert status == 404  # stored nowhere


def _valid(subject: str) -> dict[str, Any]:
    target = {"kind": "funds", "project_id": "TS07-L1", "funds_id": "F1"}
    envelope = {
        "event_id": "e1",
        "project_id": "TS07-L1",
        "unit": "TS07",
        "idempotency_key": "k1",
        "received_at": "2022-06-01T00:00:00Z",
    }
    if subject == "project.claim":
        data = {"project_id": "TS07-L1", "resolution": "distinct", "reason": "两个项目"}
        return envelope | {"data": data, "duplicate_of": "TS07-L0", "units": ["TS07", "TS07"]}
    amended = envelope | {"version": 2, "owner": "TS07", "before": {"amount": "1"}}
    if subject == "project.withdrawal":
        return amended | {"data": {"target": target, "reason": "重复录入"}}
    data = {"correction_id": "C1", "target": target, "changes": {"amount": "2"}, "reason": "有误"}
    change = {"field": "amount", "old": "1", "new": "2"}
    return amended | {"data": data, "after": {"amount": "2"}, "changes": [change]}


@pytest.mark.parametrize(
    ("subject", "drop"),
    [
        ("project.correction", "after"),
        ("project.correction", "version"),
        ("project.withdrawal", "owner"),
        ("project.claim", "duplicate_of"),
    ],
)
def test_amendments_out_of_contract_are_refused_naming_the_field(subject: str, drop: str) -> None:
    event = _valid(subject)
    ingest.parse("PROJECT", 1, subject, json.dumps(event).encode())  # in contract: taken
    del event[drop]
    with pytest.raises(ingest.BadEvent, match=rf"{subject}: {drop}: Field required"):
        ingest.parse("PROJECT", 1, subject, json.dumps(event).encode())


def test_a_released_claim_is_no_longer_shown_as_a_duplicate(database_url: str) -> None:
    """project.claim: the Center assigned the project to the held report (its lead follows)."""
    engine = make_engine(database_url)
    create_tables(engine, TABLES)
    held = {"project_id": "TS07-L2", "duplicate_of": "TS07-L1", "units": ["TS07", "TS07"]}
    claim = _valid("project.claim") | {"project_id": "TS07-L2", "released": "TS07-L2"}
    claim["data"] = claim["data"] | {"project_id": "TS07-L2"}
    items = [
        ingest.Item("PROJECT", 1, "project.duplicate", held, json.dumps(held)),
        ingest.Item("PROJECT", 2, "project.claim", claim, json.dumps(claim)),
    ]
    with Session(engine) as session:
        ingest.ingest(session, items[:1])
        session.commit()
        assert session.get(BoardProject, "TS07-L2").duplicate_of == "TS07-L1"  # type: ignore[union-attr]
    with Session(engine) as session:
        ingest.ingest(session, items)  # the duplicate again (redelivered), then the claim
        session.commit()
        assert session.get(BoardProject, "TS07-L2").duplicate_of is None  # type: ignore[union-attr]


def test_the_weekly_publication_counts_a_withdrawn_project_as_withdrawn(database_url: str) -> None:
    """The weekly page's projects carry 撤回 as notify's own facts do (the Monday email)."""
    from services.board import weekly

    engine = make_engine(database_url)
    create_tables(engine, TABLES)
    lead = {
        "project_id": "TS07-L3",
        "unit": "TS07",
        "data": {"title": "t", "attracting_unit": "TS07", "reported_on": "2022-03-01"},
    }
    gone = _valid("project.withdrawal") | {"project_id": "TS07-L3"}
    gone["data"] = {"target": {"kind": "lead", "project_id": "TS07-L3"}, "reason": "误报"}
    items = [
        ingest.Item("PROJECT", 1, "project.lead", lead, json.dumps(lead)),
        ingest.Item("PROJECT", 2, "project.withdrawal", gone, json.dumps(gone)),
    ]
    with Session(engine) as session:
        ingest.ingest(session, items)
        session.commit()
        view = weekly.snapshot(session).projects["TS07-L3"]
    assert view.outcome == "withdrawn"
    assert view.status(dt.date(2022, 6, 1)) == "withdrawn"  # counted as notify counts it
