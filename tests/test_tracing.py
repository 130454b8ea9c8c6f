"""Trace context goes from hop to hop: a unit's traceparent reaches every event it causes.

intake → project.* → review.* and score.*, each hop with the unit's trace id and a span id
of its own, through each service's outbox and over NATS headers (shared/tracing.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import subjects, tracing
from tests.helpers import idle, lead, uid

pytestmark = pytest.mark.timeout(120)


def test_a_child_keeps_the_trace_and_takes_a_new_span() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    hop = tracing.child(parent)
    assert tracing.valid(hop) and tracing.trace_id(hop) == tracing.trace_id(parent)
    assert hop.split("-")[2] != parent.split("-")[2] and hop.endswith("-01")
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"):
        fresh = tracing.child(bad)
        assert tracing.valid(fresh) and "0" * 32 not in fresh


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from investflow.services import SERVICES
    from tests.conftest import system_on

    wanted = tuple(s for s in SERVICES if s.name in ("intake", "review", "scoring"))
    async with system_on("sqlite", tmp_path_factory.mktemp("trace"), services=wanted) as system:
        yield system


def _post(url: str, body: dict[str, Any], traceparent: str) -> int:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": uid(),
            "traceparent": traceparent,
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


async def _last(js: Any, stream: str, subject: str, wanted: str) -> dict[str, str]:
    """The headers of the last message on `subject` that carries trace `wanted`."""
    deadline = time.monotonic() + 20
    while True:
        try:
            msg = await js.get_last_msg(stream, subjects.stored_pattern(subject))
            headers = dict(msg.headers or {})
            if tracing.trace_id(headers.get("traceparent", "00-x-y-01")) == wanted:
                return headers
        except Exception:
            pass
        assert time.monotonic() < deadline, f"{subject}: no message with trace {wanted}"
        await asyncio.sleep(0.2)


async def test_a_units_trace_reaches_every_event_it_causes(running: Any) -> None:
    first = lead("TS01")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = f"00-{trace}-00f067aa0ba902b7-01"
    url = f"{running.http_url}/v1/units/TS01/lead"
    assert await asyncio.to_thread(_post, url, first, sent) == 202
    await idle(running.js)
    hops = [
        await _last(running.js, "PROJECT", "project.lead", trace),
        await _last(running.js, "REVIEW", "review.screened", trace),
    ]
    spans = {h["traceparent"].split("-")[2] for h in hops}
    assert len(spans) == 2 and "00f067aa0ba902b7" not in spans  # each hop its own span
    funds_trace = "a" * 31 + "b"
    funds = {
        "project_id": f"TS01-{first['lead_id']}",
        "funds_id": f"F{uid()}",
        "amount": "1000",
        "currency": "CNY",
        "arrived_on": "2022-05-01",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "B1"},
    }
    url = f"{running.http_url}/v1/units/TS01/funds"
    assert (
        await asyncio.to_thread(_post, url, funds, f"00-{funds_trace}-00f067aa0ba902b7-01") == 202
    )
    await idle(running.js)
    await _last(running.js, "PROJECT", "project.funds", funds_trace)
    await _last(running.js, "SCORE", "score.>", funds_trace)
