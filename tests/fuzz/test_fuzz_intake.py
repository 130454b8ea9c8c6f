"""Fuzzing intake: ≥ 1,000 generated bad payloads over NATS and over HTTP (SQLite; 250 on
PostgreSQL unless INVESTFLOW_SLOW).

Every one must be rejected naming the field it broke; nothing may be stored, nothing
emitted, and the service must never crash (no restart).
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from services.intake.store import InboundEvent
from services.intake.validate import Parsed, parse
from shared.directory import load_directory
from shared.settings import Settings
from tests.fuzz.strategies import FIELDS, Bad, bad_message, valid
from tests.helpers import count_rows, http_post, idle, lead, publish, read_subject, uid

DIRECTORY = load_directory(Settings.from_env().units_file)
N = 1000
SLOW = bool(os.environ.get("INVESTFLOW_SLOW"))


def size(system) -> int:  # type: ignore[no-untyped-def]
    """N on SQLite; a quarter on PostgreSQL unless INVESTFLOW_SLOW: refusals store nothing, so
    the second backend adds time, not cases (the full size on both runs in `make test-slow`)."""
    return N if SLOW or system.database_url.startswith("sqlite") else N // 4


PID, MID = "TS01-FUZZBASE", "M-FUZZ"


def names(errors: list, field: str) -> bool:
    return any(
        e.field == field or e.field.startswith(field + ".") or e.field.startswith(field + "[")
        for e in errors
    )


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_valid_base_payloads_parse(kind: str) -> None:
    unit, data = valid(kind, PID, MID)
    assert isinstance(parse(unit, kind, json.dumps(data).encode(), DIRECTORY, 65536), Parsed)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_message(PID, MID))
def test_every_bad_payload_is_rejected_naming_its_field(bad: Bad) -> None:
    result = parse(bad.unit, bad.kind, bad.body, DIRECTORY, 65536)
    assert isinstance(result, list), f"{bad.how} on {bad.field} accepted: {bad.body[:200]!r}"
    assert names(result, bad.field), f"{bad.how}: expected {bad.field!r}, got {result}"


def draw_batch(n: int) -> list[Bad]:
    """n bad messages, each a fresh draw of the strategy (generation only, no shrinking)."""
    batch: list[Bad] = []

    @settings(
        max_examples=n * 2,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_message(PID, MID))
    def draw(item: Bad) -> None:
        if len(batch) < n:
            batch.append(item)

    draw()
    assert len(batch) == n
    return batch


@pytest.fixture(scope="module")
async def base_project(system) -> str:
    """The project the follow-up payloads refer to, and the meeting decisions refer to."""
    data = lead("TS01", lead_id="FUZZBASE")
    await publish(system.js, "intake.TS01.lead", data)
    await publish(
        system.js, "intake.CENTER.meeting", {"meeting_id": MID, "on": "2022-03-20", "agenda": [PID]}
    )
    await idle(system.js)
    return PID


@pytest.mark.timeout(300)
async def test_fuzz_over_nats_rejects_all_stores_nothing_and_never_crashes(
    system, base_project: str
) -> None:
    batch = draw_batch(size(system))
    rows_before = count_rows(system.database_url, InboundEvent)
    events_before = len(await read_subject(system.js, "PROJECT", "project.>"))
    keys = []
    for bad in batch:
        keys.append(f"fuzz-{uid()}")
        await publish(system.js, f"intake.{bad.unit}.{bad.kind}", bad.body, keys[-1])
    await idle(system.js)

    rejections = {
        r["idempotency_key"]: r
        for r in await read_subject(system.js, "INTAKE", "intake.rejected.>")
    }
    missing = [
        (bad.how, bad.field) for bad, key in zip(batch, keys, strict=True) if key not in rejections
    ]
    assert not missing, f"{len(missing)} not rejected, e.g. {missing[:5]}"
    for bad, key in zip(batch, keys, strict=True):
        errors = rejections[key]["errors"]
        assert any(
            e["field"] == bad.field or e["field"].startswith((bad.field + ".", bad.field + "["))
            for e in errors
        ), (bad, errors)
    assert count_rows(system.database_url, InboundEvent) == rows_before
    assert len(await read_subject(system.js, "PROJECT", "project.>")) == events_before
    assert system.supervisor.children["intake"].restarts == 0


@pytest.mark.timeout(300)
async def test_fuzz_over_http_gets_422_naming_the_field(system, base_project: str) -> None:
    batch = draw_batch(size(system))
    rows_before = count_rows(system.database_url, InboundEvent)
    sem = asyncio.Semaphore(8)

    async def one(bad: Bad) -> tuple[Bad, int, dict]:
        async with sem:
            status, body = await http_post(
                f"{system.http_url}/v1/units/{bad.unit}/{bad.kind}", bad.body, f"fuzz-{uid()}"
            )
            return bad, status, body

    for bad, status, body in await asyncio.gather(*(one(b) for b in batch)):
        assert status == 422, (bad, status, body)
        assert any(
            e["field"] == bad.field or e["field"].startswith((bad.field + ".", bad.field + "["))
            for e in body["errors"]
        ), (bad, body)
    await idle(system.js)
    assert count_rows(system.database_url, InboundEvent) == rows_before
    assert system.supervisor.children["intake"].restarts == 0


# ---- keys: over-long or odd, reused with another body, shared across units ---------------------


def draw_keys(n: int, http: bool = False) -> list[str]:
    """n keys intake must refuse: longer than 200 characters, or with a NUL or control
    character (over HTTP: what a client can put in a header line)."""
    from hypothesis import strategies as st

    # No surrogates (they have no UTF-8 form, nats-py cannot send them).
    text = (
        st.characters(min_codepoint=0x20, max_codepoint=0x7E)
        if http
        else st.characters(blacklist_categories=("Cs",))
    )
    odd = ["\x01", "\x1b", "\x7f"] + ([] if http else ["\x00", "\u2028"])
    out: list[str] = []
    bad_key = st.one_of(
        st.text(alphabet=text, min_size=201, max_size=400),
        st.builds(
            lambda a, c, b: a + c + b,
            st.text(alphabet=text, max_size=20),
            st.sampled_from(odd),
            st.text(alphabet=text, max_size=20),
        ),
    ).filter(lambda k: "\r" not in k and "\n" not in k)  # a header is one line

    @settings(max_examples=n * 3, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(bad_key)
    def draw(key: str) -> None:
        key = key.strip()  # nats-py strips header values: what arrives must still be bad
        if len(out) < n and (len(key) > 200 or not key.isprintable()):
            out.append(key)

    draw()
    assert len(out) == n
    return out


@pytest.mark.timeout(600)
async def test_fuzz_keys_over_nats_and_http_store_nothing_and_units_keep_their_own(
    system, base_project: str
) -> None:
    """≥ 1,000 odd keys each way, 250 other bodies under a used key each way, keys shared across
    units: the odd and reused are refused and store nothing; the shared give one event each."""
    rows_before = count_rows(system.database_url, InboundEvent)
    events_before = len(await read_subject(system.js, "PROJECT", "project.>"))
    n = size(system)
    keys = draw_keys(n)
    body = json.dumps(lead("TS02", landing_area="TS02")).encode()
    for key in keys:
        await system.js.publish("intake.TS02.lead", body, headers={"Idempotency-Key": key})
    sem = asyncio.Semaphore(8)

    async def post(unit: str, data: bytes, key: str) -> int:
        async with sem:
            status, _ = await http_post(f"{system.http_url}/v1/units/{unit}/lead", data, key)
            return status

    statuses = await asyncio.gather(*(post("TS02", body, k) for k in draw_keys(n, http=True)))
    # 422 from intake; 400 where the HTTP server itself refuses a control character.
    assert set(statuses) <= {400, 422} and 422 in statuses, set(statuses)

    # One key used, then reused with n // 4 other bodies over NATS and HTTP.
    used = f"used-{uid()}"
    first = lead("TS03", landing_area="TS03")
    await publish(system.js, "intake.TS03.lead", first, used)
    await idle(system.js)
    others = [json.dumps(lead("TS03", landing_area="TS03")).encode() for _ in range(n // 4)]
    for other in others:
        # Idempotency-Key: the server folds a burst of one Nats-Msg-Id within 100 ms (and
        # says so, duplicate=True); under this header every copy reaches intake's table.
        await system.js.publish("intake.TS03.lead", other, headers={"Idempotency-Key": used})
    statuses = await asyncio.gather(*(post("TS03", o, used) for o in others))
    assert set(statuses) == {409}, set(statuses)
    await idle(system.js)
    assert count_rows(system.database_url, InboundEvent) == rows_before + 1
    assert len(await read_subject(system.js, "PROJECT", "project.>")) == events_before + 1
    reused = [
        r for r in await read_subject(system.js, "INTAKE", "intake.rejected.TS03.lead")
        if r["idempotency_key"] == used
    ]  # fmt: skip
    assert len(reused) == len(others) and all(
        "different content" in r["errors"][0]["problem"] for r in reused
    )

    # The same key from every unit that reports leads: one event each.
    shared = f"shared-{uid()}"
    units = [u for u in DIRECTORY.units if DIRECTORY.is_landing_area(u)]
    for unit in units:
        await publish(system.js, f"intake.{unit}.lead", lead(unit, landing_area=unit), shared)
    await idle(system.js)
    stored = count_rows(system.database_url, InboundEvent, InboundEvent.idempotency_key == shared)
    assert stored == len(units)
    assert system.supervisor.children["intake"].restarts == 0
