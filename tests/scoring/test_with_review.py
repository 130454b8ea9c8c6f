"""Scoring with the real review service in the whole system (the `system` fixture): review's
own recognition (认定) releases held funds, and the committee's sponsor leader is credited."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from tests.helpers import idle, lead, publish, read_subject, uid

SYSTEM_BACKEND = "postgresql"  # `system` tests here: this backend (both under INVESTFLOW_SLOW)

pytestmark = pytest.mark.timeout(180)

PROOFS = [
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
]
PROOFS += ["land_use_certificate"]  # new_land; progress_images comes later


async def events(js: Any, stream: str, subject: str, pid: str, at_least: int = 0) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        found = [e for e in await read_subject(js, stream, subject) if e["project_id"] == pid]
        if len(found) >= at_least or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.3)


async def test_review_recognition_releases_held_funds_and_the_sponsor_is_credited(
    system: Any,
) -> None:
    js = system.js
    # Standard track (below 100 million): recognised without a committee decision.
    data = lead(
        "TS08",
        planned_investment="50000000",
        documents=[{"type": t, "ref": f"{t}-1"} for t in PROOFS],
    )
    pid = f"TS08-{data['lead_id']}"
    await publish(js, "intake.TS08.lead", data)
    funds = {
        "project_id": pid,
        "funds_id": "F1",
        "amount": "3000000",
        "currency": "CNY",
        "arrived_on": "2022-06-01",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "BR-1"},
    }
    await publish(js, "intake.TS08.funds", funds)
    await idle(js)

    # held, and if the funds overtook review's verdict, held again once it came
    async def last_held() -> str:
        for _ in range(60):
            held = await events(js, "SCORE", "score.held", pid, 1)
            if held and "blocked by landing_proofs" in held[-1]["reason"]:
                break
            await asyncio.sleep(0.3)
        return held[-1]["reason"]

    assert "blocked by landing_proofs" in await last_held()
    assert await events(js, "SCORE", "score.credited", pid) == []

    await publish(
        js, "intake.TS08.document", {"project_id": pid, "type": "progress_images", "ref": "P-1"}
    )
    await idle(js)
    recognition = await events(js, "REVIEW", "review.recognition", pid, 2)
    assert recognition[-1]["recognized"] is True
    (credited,) = await events(js, "SCORE", "score.credited", pid, 1)
    assert Decimal(credited["points"]) == Decimal("3000000.00")
    assert credited["credited_to"] == ["TS08", "DEVZONE"]

    meeting = f"M{uid()}"
    await publish(
        js, "intake.CENTER.meeting", {"meeting_id": meeting, "on": "2022-06-20", "agenda": [pid]}
    )
    await publish(
        js,
        "intake.CENTER.decision",
        {
            "project_id": pid,
            "meeting_id": meeting,
            "decision": "approved",
            "minutes_ref": "纪要〔2022〕9号",
            "responsible_leader": "L02",
            "sponsor_leader": "L05",
            "hq": {"commander": "L05", "members": ["TS08", "DEVZONE"]},
        },
    )
    await idle(js)
    credits = await events(js, "SCORE", "score.credited", pid, 2)
    assert credits[-1]["credited_to"] == ["TS08", "DEVZONE", "L05"]
    (reversed_,) = await events(js, "SCORE", "score.reversed", pid, 1)
    assert Decimal(reversed_["points"]) == Decimal("3000000.00")

    status, board = await asyncio.to_thread(_scoreboard, system.http_urls["scoring"])
    assert status == 200
    assert any(s["subject"] == "L05" for s in board["subjects"])


def _scoreboard(base: str) -> tuple[int, dict]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{base}/v1/scoreboard?year=2022&quarter=Q2", timeout=10) as resp:
        return resp.status, json.loads(resp.read())
