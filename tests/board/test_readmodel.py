"""The board's numbers against the events sent, on a real nats-server with every service running.

Units TS03 and TS04 and leaders L04/L05 are this module's: what their tokens see is exactly
what was reported here.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from services.board.readmodel import Thresholds
from tests.helpers import idle, read_subject, uid

from .conftest import token
from .support import eventually, get_json, new_lead, report

CENTER = token("center")
TS03 = token("unit", "TS03")
TS04 = token("unit", "TS04")
L05 = token("leader", "L05")


async def test_stages_signings_funds_and_scope(board_system) -> None:
    js, base = board_system.js, board_system.board_url
    a = await new_lead(js, "TS03", reported_on="2022-03-01")
    b = await new_lead(js, "TS03", industry="coal_mining", reported_on="2022-03-02")
    c = await new_lead(js, "TS03", planned_investment="5000000", reported_on="2022-03-03")
    d = await new_lead(js, "TS04", reported_on="2022-03-02")
    e = await new_lead(js, "TS04", reported_on="2022-03-04")
    meeting = f"M{uid()}"
    await report(
        js, "CENTER", "meeting", {"meeting_id": meeting, "on": "2022-03-10", "agenda": [a, d, e]}
    )
    decision = {"meeting_id": meeting, "minutes_ref": "纪要〔2022〕1号"}
    await report(
        js,
        "CENTER",
        "decision",
        decision
        | {
            "project_id": a,
            "decision": "approved",
            "sponsor_leader": "L05",
            "hq": {"commander": "L05", "members": ["TS03", "DRC"]},
        },
    )
    await report(js, "CENTER", "decision", decision | {"project_id": d, "decision": "rejected"})
    await report(
        js,
        "CENTER",
        "decision",
        decision | {"project_id": e, "decision": "approved", "sponsor_leader": "L04"},
    )
    await report(js, "TS03", "visit", {"project_id": a, "leader": "L05", "on": "2022-03-12"})
    await report(
        js,
        "TS03",
        "milestone",
        {"project_id": a, "milestone": "signed", "on": "2022-03-20", "amount": "200000000"},
    )
    await report(
        js, "TS03", "milestone", {"project_id": a, "milestone": "started", "on": "2022-04-01"}
    )
    await report(
        js,
        "TS03",
        "funds",
        {
            "project_id": a,
            "funds_id": "F1",
            "amount": "30000000",
            "currency": "CNY",
            "arrived_on": "2022-04-10",
            "form": "cash",
            "voucher": {"kind": "bank_receipt", "ref": "BR-1"},
        },
    )
    await report(
        js,
        "TS03",
        "funds",
        {
            "project_id": a,
            "funds_id": "F2",
            "amount": "1250000.50",
            "currency": "CNY",
            "arrived_on": "2022-05-03",
            "form": "cash",
            "voucher": {"kind": "bank_receipt", "ref": "BR-2"},
        },
    )
    await report(
        js,
        "TS04",
        "milestone",
        {"project_id": e, "milestone": "signed", "on": "2022-03-15", "amount": "120000000"},
    )
    await idle(js)

    seen: list = []

    async def ts03_overview():
        status, body = await get_json(base, "/api/overview", TS03)
        seen[:] = [status, body]
        return (
            body
            if status == 200 and body["projects"] == 3 and body["by_stage"]["funds"] == 1
            else None
        )

    ov = await eventually(ts03_overview, describe=lambda: seen)
    # TS03 reported a (signed, started, funded), b (outside the catalogue) and c (small).
    assert ov["by_stage"] == {
        "reported": 1,
        "review": 0,
        "approved": 0,
        "signed": 0,
        "started": 0,
        "funds": 1,
        "completed": 0,
        "terminated": 1,
        "withdrawn": 0,
    }
    assert [s["actual"] for s in ov["signings"]] == [1, 0, 0, 0]  # a: 200M on 2022-03-20
    assert ov["funds_by_unit_month"] == {
        "TS03": {"2022-04": "30000000.00", "2022-05": "1250000.50"}
    }

    status, ov4 = await get_json(base, "/api/overview", TS04)
    assert status == 200
    assert ov4["projects"] == 2
    assert ov4["by_stage"]["terminated"] == 1 and ov4["by_stage"]["signed"] == 1
    assert [s["actual"] for s in ov4["signings"]] == [1, 0, 0, 0]  # e: 120M on 2022-03-15
    assert ov4["funds_by_unit_month"] == {}

    # Lights: a was visited on 03-12, e never (approved at the 03-10 meeting).
    t = Thresholds.load()
    clock = dt.date.fromisoformat(ov["clock"])
    status, page = await get_json(base, f"/api/projects/{e}", TS04)
    assert status == 200
    days = (clock - dt.date(2022, 3, 10)).days
    expected = "red" if days > t.visit_red else "yellow" if days > t.visit_yellow else None
    visit = [r for r in page["project"]["reasons"] if r["code"] == "visit"]
    assert (visit[0]["light"] if visit else None) == expected
    assert page["project"]["stage"] == "signed"
    assert page["project"]["sponsor_leader"] == "L04"

    # The project page: every event, each decision with its explanation.
    status, page = await get_json(base, f"/api/projects/{a}", CENTER)
    assert status == 200
    subjects = [item["subject"] for item in page["timeline"]]
    for s in (
        "project.lead",
        "project.decision",
        "project.visit",
        "project.funds",
        "review.screened",
    ):
        assert s in subjects, (s, subjects)
    screened = next(i for i in page["timeline"] if i["subject"] == "review.screened")
    assert screened["explanation"]["ruleset_id"] == "review"
    assert screened["explanation"]["version"] == "2022.1"
    assert page["project"]["hq_commander"] == "L05"
    assert {f["funds_id"] for f in page["funds"]} == {"F1", "F2"}
    status, page_b = await get_json(base, f"/api/projects/{b}", CENTER)
    assert page_b["project"]["stage"] == "terminated" and page_b["project"]["terminated_by"]

    # Scope: a unit sees its own projects only, a leader those it sponsors.
    status, _ = await get_json(base, f"/api/projects/{d}", TS03)
    assert status == 404
    status, listing = await get_json(base, "/api/projects", L05)
    assert [r["project_id"] for r in listing["rows"]] == [a]
    status, listing = await get_json(base, "/api/projects?unit=TS03&stage=terminated", CENTER)
    assert [r["project_id"] for r in listing["rows"]] == [b]
    status, listing = await get_json(base, "/api/projects", TS03)
    assert {r["project_id"] for r in listing["rows"]} == {a, b, c}


async def test_ranking_points_are_the_credits_published(board_system) -> None:
    """Each subject's points are the sum of score.credited naming it, less what was reversed."""
    js, base = board_system.js, board_system.board_url
    await idle(js)
    credited = await read_subject(js, "SCORE", "score.credited")
    reversed_ = {
        (r["project_id"], r["funds_id"]) for r in await read_subject(js, "SCORE", "score.reversed")
    }
    expected: dict[str, Decimal] = {}
    for c in credited:
        if (c["project_id"], c["funds_id"]) in reversed_ or c["year"] != 2022:
            continue
        for code in c["credited_to"]:
            expected[code] = expected.get(code, Decimal(0)) + Decimal(str(c["points"]))
    status, board = await get_json(base, "/api/ranking", CENTER)
    assert status == 200
    got = {r["subject"]: Decimal(r["points"]) for r in board["rows"]}
    for code, points in got.items():
        assert points == expected.get(code, Decimal(0)), code
    ranks = [r["rank"] for r in board["rows"]]
    assert ranks == sorted(ranks) and ranks[0] == 1
    status, own = await get_json(base, "/api/ranking", TS03)
    assert [r["subject"] for r in own["rows"]] == ["TS03"]  # its own rank only
    assert own["rows"][0]["rank"] == next(
        r["rank"] for r in board["rows"] if r["subject"] == "TS03"
    )
