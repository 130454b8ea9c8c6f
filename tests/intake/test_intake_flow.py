"""Intake end to end: real nats-server, the intake process, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.intake.store import InboundEvent, Project
from tests.helpers import count_rows, http_post, idle, lead, publish, read_subject, uid

pytestmark = pytest.mark.timeout(180)


async def test_valid_lead_over_nats_is_stored_and_emitted(system) -> None:
    data = lead("TS01")
    await publish(system.js, "intake.TS01.lead", data)
    await idle(system.js)

    project_id = f"TS01-{data['lead_id']}"
    assert count_rows(system.database_url, Project, Project.project_id == project_id) == 1
    events = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.lead")
        if e["project_id"] == project_id
    ]
    assert len(events) == 1
    assert events[0]["unit"] == "TS01"
    assert events[0]["data"]["title"] == data["title"]
    assert events[0]["data"]["planned_investment"] == "150000000"


async def test_valid_lead_over_http_is_stored_and_emitted(system) -> None:
    data = lead("TS02")
    status, body = await http_post(
        f"{system.http_url}/v1/units/TS02/lead", json.dumps(data).encode(), uid()
    )
    assert status == 202, body
    project_id = f"TS02-{data['lead_id']}"
    assert body["project_id"] == project_id
    await idle(system.js)

    assert count_rows(system.database_url, Project, Project.project_id == project_id) == 1
    events = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.lead")
        if e["project_id"] == project_id
    ]
    assert len(events) == 1


async def test_follow_up_events_reach_their_project(system) -> None:
    data = lead("TS03")
    project_id = f"TS03-{data['lead_id']}"
    await publish(system.js, "intake.TS03.lead", data)
    await publish(
        system.js,
        "intake.TS03.document",
        {"project_id": project_id, "type": "feasibility_report", "ref": "FR-1"},
    )
    await publish(
        system.js,
        "intake.TS03.funds",
        {
            "project_id": project_id,
            "funds_id": "F1",
            "amount": "2500000.50",
            "currency": "USD",
            "arrived_on": "2022-04-02",
            "form": "cash",
            "voucher": {"kind": "bank_receipt", "ref": "BR-9"},
        },
    )
    await idle(system.js)
    docs = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.document")
        if e["project_id"] == project_id
    ]
    funds = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.funds")
        if e["project_id"] == project_id
    ]
    assert [d["data"]["type"] for d in docs] == ["feasibility_report"]
    assert funds[0]["data"]["amount"] == "2500000.50" and funds[0]["data"]["currency"] == "USD"
    assert count_rows(system.database_url, InboundEvent, InboundEvent.project_id == project_id) == 3


async def test_same_message_three_times_inside_and_after_the_window_is_one(system) -> None:
    data = lead("TS04")
    project_id = f"TS04-{data['lead_id']}"
    key = uid()
    first = await publish(system.js, "intake.TS04.lead", data, key)
    second = await publish(system.js, "intake.TS04.lead", data, key)
    assert not first.duplicate and second.duplicate  # JetStream's window caught the second
    await asyncio.sleep(2.5)  # the test stream's duplicate window is 2 s
    third = await publish(system.js, "intake.TS04.lead", data, key)
    assert not third.duplicate  # past the window: only intake's own table can catch it
    await idle(system.js)

    assert count_rows(system.database_url, InboundEvent, InboundEvent.idempotency_key == key) == 1
    assert count_rows(system.database_url, Project, Project.project_id == project_id) == 1
    events = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.lead")
        if e["project_id"] == project_id
    ]
    assert len(events) == 1


async def test_a_message_without_a_key_is_stored_once_by_its_content(system) -> None:
    """No Nats-Msg-Id: identical content is one event (a re-send), which is the safe reading."""
    data = lead("TS06")
    project_id = f"TS06-{data['lead_id']}"
    body = json.dumps(data).encode()
    for _ in range(2):
        await system.js.publish("intake.TS06.lead", body)  # no headers at all
    await idle(system.js)

    assert count_rows(system.database_url, Project, Project.project_id == project_id) == 1
    rows = count_rows(system.database_url, InboundEvent, InboundEvent.project_id == project_id)
    assert rows == 1
    events = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.lead")
        if e["project_id"] == project_id
    ]
    assert len(events) == 1 and events[0]["idempotency_key"].startswith("sha256:")


async def test_same_http_request_three_times_is_one(system) -> None:
    data = lead("TS05")
    project_id = f"TS05-{data['lead_id']}"
    key = uid()
    body = json.dumps(data).encode()
    for _ in range(2):
        status, _resp = await http_post(f"{system.http_url}/v1/units/TS05/lead", body, key)
        assert status == 202
    await idle(system.js)
    await asyncio.sleep(2.5)
    status, _resp = await http_post(f"{system.http_url}/v1/units/TS05/lead", body, key)
    assert status == 202
    await idle(system.js)

    assert count_rows(system.database_url, InboundEvent, InboundEvent.idempotency_key == key) == 1
    events = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.lead")
        if e["project_id"] == project_id
    ]
    assert len(events) == 1


@pytest.mark.parametrize(
    "same",
    ["credit_code_and_landing_area", "title_and_investor_name"],
)
async def test_second_unit_reporting_the_same_project_is_held_as_duplicate(
    system, same: str
) -> None:
    first = lead("TS06", landing_area="CHEMPARK")
    if same == "credit_code_and_landing_area":
        second = lead(
            "TS07",
            landing_area="CHEMPARK",
            investor=dict(first["investor"], name="另一个名称有限公司"),
        )
    else:
        second = lead(
            "TS07",
            title=first["title"],
            landing_area="BIOPARK",
            investor=dict(first["investor"], credit_code=None, origin="foreign", country="DE"),
        )
    await publish(system.js, "intake.TS06.lead", first)
    await idle(system.js)
    await publish(system.js, "intake.TS07.lead", second)
    await idle(system.js)

    first_id, second_id = f"TS06-{first['lead_id']}", f"TS07-{second['lead_id']}"
    dupes = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.duplicate")
        if e["project_id"] == second_id
    ]
    assert len(dupes) == 1
    assert dupes[0]["duplicate_of"] == first_id
    assert dupes[0]["units"] == ["TS07", "TS06"]
    leads = {e["project_id"] for e in await read_subject(system.js, "PROJECT", "project.lead")}
    assert first_id in leads and second_id not in leads
    assert (
        count_rows(
            system.database_url,
            Project,
            Project.project_id == second_id,
            Project.status == "duplicate",
        )
        == 1
    )
