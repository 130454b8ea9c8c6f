"""Input the assessment must refuse (issue 13, item 13), through the running system: a
currency that is not ISO 4217, and funds or milestones dated in the future. And the
scoreboard over HTTP lists every assessed subject, zero rows included, with the rates."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.request

import pytest

from tests.helpers import idle, lead, publish, read_subject, uid

SYSTEM_BACKEND = "sqlite"  # `system` tests here: this backend (both under INVESTFLOW_SLOW)

pytestmark = pytest.mark.timeout(240)


async def rejections(js, key: str) -> list[dict]:
    return [
        e
        for e in await read_subject(js, "INTAKE", "intake.rejected.>")
        if e.get("idempotency_key") == key
    ]


def funds(pid: str, **overrides: str) -> dict:
    return {
        "project_id": pid,
        "funds_id": f"F{uid()}",
        "amount": "1000000",
        "currency": "CNY",
        "arrived_on": "2022-05-10",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "BR-1"},
    } | overrides


async def test_currencies_must_be_iso_4217_and_dates_not_in_the_future(system) -> None:
    js = system.js
    data = lead("TS02", planned_investment="50000000")
    pid = f"TS02-{data['lead_id']}"
    await publish(js, "intake.TS02.lead", data)
    await idle(js)
    tomorrow = dt.date.today() + dt.timedelta(days=1)  # within the day's grace
    later = dt.date.today() + dt.timedelta(days=3)
    cases = {
        "rmb": ("intake.TS02.funds", funds(pid, currency="RMB")),
        "abc": ("intake.TS02.funds", funds(pid, currency="ABC")),
        "future": ("intake.TS02.funds", funds(pid, arrived_on=later.isoformat())),
        "grace": ("intake.TS02.funds", funds(pid, arrived_on=tomorrow.isoformat())),
        "started": (
            "intake.TS02.milestone",
            {"project_id": pid, "milestone": "started", "on": later.isoformat()},
        ),
        "rates": ("intake.CENTER.rates", {"on": "2022-05-10", "rates": {"ABC": "2.5"}}),
    }
    keys = {name: f"{name}-{uid()}" for name in cases}
    for name, (subject, body) in cases.items():
        await publish(js, subject, body, key=keys[name])
    await idle(js)

    def errors(name: str) -> list[tuple[str, str]]:
        return [(e["field"], e["problem"]) for r in found[name] for e in r["errors"]]

    found = {name: await rejections(js, key) for name, key in keys.items()}
    assert errors("rmb") == [("currency", "'RMB' is not an ISO 4217 code: use CNY / 请使用CNY")]
    assert errors("abc")[0][0] == "currency" and "ISO 4217" in errors("abc")[0][1]
    assert errors("future")[0][0] == "arrived_on" and "未发生" in errors("future")[0][1]
    assert errors("started")[0][0] == "on" and "in the future" in errors("started")[0][1]
    assert errors("rates")[0][0].startswith("rates") and "ISO 4217" in errors("rates")[0][1]
    assert found["grace"] == []
    # Nothing refused reached scoring: only the record within the grace is there.
    stored = [
        e for e in await read_subject(js, "PROJECT", "project.funds") if e["project_id"] == pid
    ]
    assert [e["data"]["arrived_on"] for e in stored] == [tomorrow.isoformat()]


async def test_the_scoreboard_lists_every_assessed_subject_with_rates(system) -> None:
    js = system.js
    data = lead("TS08", planned_investment="50000000", landing_area="BIOPARK")
    pid = f"TS08-{data['lead_id']}"
    await publish(js, "intake.TS08.lead", data)
    await publish(
        js,
        "intake.TS08.milestone",
        {"project_id": pid, "milestone": "signed", "on": "2022-04-01", "amount": "40000000"},
    )
    await publish(
        js, "intake.TS08.milestone", {"project_id": pid, "milestone": "started", "on": "2022-05-01"}
    )
    await publish(js, "intake.TS08.funds", funds(pid, amount="4000000"))
    await idle(js)
    url = f"{system.http_urls['scoring']}/v1/scoreboard?year=2022&format=json"
    for _ in range(20):  # the scoreboard reads what scoring has committed
        board = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(url).read()))
        if pid in board["rates"]["by_project"]:
            break
        await asyncio.sleep(0.5)
    subjects = {s["subject"]: s for s in board["subjects"]}
    assert {"DRC", "NRB", "L01", "L06", "TS08", "CHEMPARK"} <= set(subjects)
    assert "CENTER" not in subjects
    # TS08's project is held: its landing proofs are not filed.
    assert (
        subjects["TS08"]["held_records"] >= 1
        and "landing_proofs" in subjects["TS08"]["held_reasons"]
    )
    project = board["rates"]["by_project"][pid]
    assert (project["performance_rate"], project["landing_rate"]) == ("1.0000", "1.0000")
    assert project["funds_rate"] == "0.1000"
    assert board["rates"]["county"]["signed"] >= 1
    table = await asyncio.to_thread(
        lambda: urllib.request.urlopen(url.replace("json", "table")).read().decode()
    )
    assert "履约率" in table and " NRB " in table
