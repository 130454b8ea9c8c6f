"""Units cannot lose, forge or stall each other's events (issue 11): keys are the sender's own,
never cut, never reused for other content; poison is refused up front and stalls nobody;
only what intake consumes is accepted; every unit's inbox has its own quota."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from investflow.nats_server import NatsServer, free_port
from services.intake.store import InboundEvent, Project
from shared.streams import ensure_streams
from tests.helpers import count_rows, http_post, idle, lead, publish, read_subject, uid

pytestmark = pytest.mark.timeout(240)


async def rejections(system, key: str) -> list[dict]:
    return [
        r
        for r in await read_subject(system.js, "INTAKE", "intake.rejected.>")
        if r["idempotency_key"] == key
    ]


async def project_exists(system, project_id: str) -> bool:
    return count_rows(system.database_url, Project, Project.project_id == project_id) == 1


# ---- 1. keys are scoped to the unit that sent them ----------------------------------------------


async def test_two_units_using_the_same_key_give_two_events_over_nats_and_http(system) -> None:
    key = f"LEAD-{uid()}"
    a, b = lead("TS01"), lead("TS02", landing_area="TS02")
    first = await publish(system.js, "intake.TS01.lead", a, key)
    second = await publish(system.js, "intake.TS02.lead", b, key)
    assert not first.duplicate and not second.duplicate
    http_key = f"H-{uid()}"
    c, d = lead("TS03", landing_area="TS03"), lead("TS04", landing_area="TS04")
    for unit, body in (("TS03", c), ("TS04", d)):
        status, resp = await http_post(
            f"{system.http_url}/v1/units/{unit}/lead", json.dumps(body).encode(), http_key
        )
        assert status == 202 and resp["duplicate"] is False, resp
    await idle(system.js)
    for unit, body in (("TS01", a), ("TS02", b), ("TS03", c), ("TS04", d)):
        assert await project_exists(system, f"{unit}-{body['lead_id']}"), unit


# ---- 2. a key is never cut ----------------------------------------------------------------------


async def test_an_over_long_key_is_rejected_never_truncated(system) -> None:
    prefix = "K" * 200
    one, two = lead("TS01"), lead("TS01")
    await publish(system.js, "intake.TS01.lead", one, prefix + "-one")
    await publish(system.js, "intake.TS01.lead", two, prefix + "-two")
    await idle(system.js)
    for body in (one, two):
        assert not await project_exists(system, f"TS01-{body['lead_id']}")
    found = [
        r
        for r in await read_subject(system.js, "INTAKE", "intake.rejected.TS01.lead")
        if any(e["field"] == "Nats-Msg-Id" and "at most 200" in e["problem"] for e in r["errors"])
    ]
    assert len(found) >= 2

    status, resp = await http_post(
        f"{system.http_url}/v1/units/TS01/lead", json.dumps(lead("TS01")).encode(), prefix + "x"
    )
    assert status == 422 and "detail" not in resp, resp
    assert resp["errors"][0]["field"] == "Idempotency-Key"
    assert "at most 200" in resp["errors"][0]["problem"]


# ---- 3. same key, other content --------------------------------------------------------------------


async def test_a_reused_key_with_other_content_is_refused_and_the_first_stands(system) -> None:
    key = f"REUSE-{uid()}"
    first = lead("TS05", landing_area="TS05")
    await publish(system.js, "intake.TS05.lead", first, key)
    await idle(system.js)
    other = lead("TS05", landing_area="TS05")
    await asyncio.sleep(0.2)  # past the server's 100 ms window: intake's table decides
    await publish(system.js, "intake.TS05.lead", other, key)
    await idle(system.js)
    assert not await project_exists(system, f"TS05-{other['lead_id']}")
    [rejection] = await rejections(system, key)
    assert "different content" in rejection["errors"][0]["problem"]
    assert "幂等键已用于不同内容" in rejection["errors"][0]["problem"]

    url = f"{system.http_url}/v1/units/TS05/lead"
    status, resp = await http_post(url, json.dumps(other).encode(), key)
    assert status == 409, resp
    problem = resp["errors"][0]["problem"]
    assert key in problem and f"TS05-{first['lead_id']}" in problem
    # An identical re-send still returns the first result, and nothing changes.
    rows = count_rows(system.database_url, InboundEvent)
    status, resp = await http_post(url, json.dumps(first).encode(), key)
    assert status == 202 and resp == {
        "project_id": f"TS05-{first['lead_id']}",
        "subject": "intake.TS05.lead",
        "duplicate": True,
    }
    await publish(system.js, "intake.TS05.lead", first, key)
    await idle(system.js)
    assert count_rows(system.database_url, InboundEvent) == rows
    assert len(await rejections(system, key)) == 1


# ---- 6. poison is refused up front and holds up nobody -------------------------------------------


def _deep(levels: int) -> bytes:
    return b'{"title": ' + b"[" * levels + b"]" * levels + b"}"


async def test_nul_and_deep_nesting_are_refused_naming_the_field(system) -> None:
    nul_title = lead("TS06", landing_area="TS06", title="招商\u0000项目")
    cases = {
        "nul": (json.dumps(nul_title).encode(), "title", "NUL"),
        "deep": (_deep(10_000), "$", "nested too deep"),
    }
    for name, (body, field, words) in cases.items():
        key = f"{name}-{uid()}"
        await publish(system.js, "intake.TS06.lead", body, key)
        status, resp = await http_post(f"{system.http_url}/v1/units/TS06/lead", body, uid())
        assert status == 422, (name, status, resp)
        assert any(e["field"] == field and words in e["problem"] for e in resp["errors"]), resp
        await idle(system.js)
        [rejection] = await rejections(system, key)
        assert any(e["field"] == field and words in e["problem"] for e in rejection["errors"])
    # A NUL in the key itself: refused, named.
    nul_key = lead("TS06", landing_area="TS06")
    await system.js.publish(
        "intake.TS06.lead", json.dumps(nul_key).encode(), headers={"Idempotency-Key": "a\u0000b"}
    )
    await idle(system.js)
    assert not await project_exists(system, f"TS06-{nul_key['lead_id']}")
    assert not await project_exists(system, f"TS06-{nul_title['lead_id']}")
    letters = await read_subject(system.js, "DLQ", "dlq.intake.>")
    assert letters == [], "refused input is rejected, not dead-lettered"


async def test_while_one_unit_sends_poison_another_units_lead_is_stored_within_2_s(
    system,
) -> None:
    poison = [_deep(10_000)] * 20 + [b"\x00" * 50_000] * 20
    for body in poison:
        await publish(system.js, "intake.TS07.lead", body)
    good = lead("TS08", landing_area="TS08")
    start = time.monotonic()
    await publish(system.js, "intake.TS08.lead", good)
    pid = f"TS08-{good['lead_id']}"
    while not await project_exists(system, pid):
        assert time.monotonic() - start < 2.0, "a valid lead waited behind another unit's poison"
        await asyncio.sleep(0.05)
    await idle(system.js)


async def test_a_message_that_can_never_succeed_is_dead_lettered_at_once(system) -> None:
    """No eight tries behind a KeyError: the canonical event that does not parse goes to the
    dead-letter stream on its first delivery."""
    poison = {"event_id": f"poison-{uid()}", "project_id": "TS01-X", "data": {"not": "a lead"}}
    before = len(await read_subject(system.js, "DLQ", "dlq.>"))
    start = time.monotonic()
    await publish(system.js, "project.lead", poison, poison["event_id"])
    await idle(system.js)
    letters = (await read_subject(system.js, "DLQ", "dlq.>"))[before:]
    assert {d["service"] for d in letters} >= {"review"}
    assert all(d["deliveries"] == 1 for d in letters), letters
    assert time.monotonic() - start < 20


# ---- 7. only what intake consumes ----------------------------------------------------------------


@pytest.mark.parametrize("subject", ["intake.TS06.lead.v2", "intake.TS06", "intake.NOPE.lead"])
async def test_subjects_intake_does_not_consume_are_refused_by_the_server(
    system, subject: str
) -> None:
    # No stream captures it: the publisher hears so at once, and nothing is kept anywhere.
    with pytest.raises((nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError)):
        await system.js.publish(subject, json.dumps(lead("TS06")).encode(), timeout=2)


async def test_an_unknown_kind_is_rejected(system) -> None:
    key = uid()
    await publish(system.js, "intake.TS06.gossip", lead("TS06"), key)
    await idle(system.js)
    [rejection] = await rejections(system, key)
    assert "unknown kind" in rejection["errors"][0]["problem"]


# ---- 13. metric labels stay bounded ------------------------------------------------------------


async def test_an_unknown_kind_counts_under_one_label(system) -> None:
    await http_post(f"{system.http_url}/v1/units/TS01/{urllib.parse.quote('漢字')}", b"{}", uid())
    with urllib.request.urlopen(f"{system.http_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "漢字" not in text
    assert 'kind="unknown"' in text


# ---- 8. every unit's inbox has its own quota -------------------------------------------------------


async def test_a_full_inbox_refuses_its_unit_and_nobody_else_and_drops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVESTFLOW_UNIT_BACKLOG_BYTES", str(256 * 1024))
    server = NatsServer(free_port(), tmp_path / "js")
    server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js, 60, units=["TS01", "TS02"])
        # Larger than a message may be: the server refuses it to the publisher.
        with pytest.raises(nats.js.errors.APIError, match=r"(?i)message size"):
            await js.publish("intake.TS01.lead", b"x" * (1024 * 1024 - 1024))
        accepted, refused = 0, None
        for i in range(20):
            try:
                await js.publish(
                    "intake.TS01.lead", b"y" * 30_000, headers={"Nats-Msg-Id": f"k{i}"}
                )
                accepted += 1
            except nats.js.errors.APIError as exc:
                refused = exc
                break
        assert refused is not None and "maximum bytes" in str(refused).lower(), refused
        info = await js.stream_info("INTAKE_TS01")
        assert info.state.messages == accepted and info.state.first_seq == 1  # nothing dropped
        ack = await js.publish("intake.TS02.lead", b"{}")
        assert ack.stream == "INTAKE_TS02"
        await nc.close()
    finally:
        server.stop()


# ---- the committee decides (issue 13, item 1; the intake side of item 3) -------------------------


async def test_only_the_center_decides_and_only_for_projects_on_the_agenda(system) -> None:
    own, other = lead("TS01"), lead("TS02", landing_area="TS02")
    for unit, body in (("TS01", own), ("TS02", other)):
        await publish(system.js, f"intake.{unit}.lead", body)
    pid, other_pid = f"TS01-{own['lead_id']}", f"TS02-{other['lead_id']}"
    meeting = f"M-{uid()}"
    await publish(
        system.js,
        "intake.CENTER.meeting",
        {"meeting_id": meeting, "on": "2022-05-10", "agenda": [pid]},
    )
    await idle(system.js)
    decision = {"project_id": pid, "meeting_id": meeting, "decision": "approved",
                "minutes_ref": "MIN-1", "sponsor_leader": "L01"}  # fmt: skip
    # The attracting unit approving its own project and naming its sponsor: refused, named.
    key = uid()
    await publish(system.js, "intake.TS01.decision", decision, key)
    status, resp = await http_post(
        f"{system.http_url}/v1/units/TS01/decision", json.dumps(decision).encode(), uid()
    )
    assert status == 422 and "TS01" in resp["errors"][0]["problem"], resp
    # The Center, for a project that was not on that meeting's agenda: refused.
    off_agenda = uid()
    await publish(
        system.js, "intake.CENTER.decision", decision | {"project_id": other_pid}, off_agenda
    )
    await idle(system.js)
    [by_unit] = await rejections(system, key)
    assert by_unit["errors"][0]["field"] == "$subject"
    assert "Center only, not from TS01" in by_unit["errors"][0]["problem"]
    [not_listed] = await rejections(system, off_agenda)
    assert any(
        e["field"] == "project_id" and "not on the agenda" in e["problem"]
        for e in not_listed["errors"]
    )
    decided = [
        e for e in await read_subject(system.js, "PROJECT", "project.decision")
        if e["project_id"] in (pid, other_pid)
    ]  # fmt: skip
    assert decided == []
    # The Center, for a project on the agenda: accepted.
    await publish(system.js, "intake.CENTER.decision", decision)
    await idle(system.js)
    decided = [
        e
        for e in await read_subject(system.js, "PROJECT", "project.decision")
        if e["project_id"] == pid
    ]
    assert len(decided) == 1
