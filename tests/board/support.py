"""Sending a unit's reports and reading the board the way a browser or a script would."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from nats.js import JetStreamContext

from tests.helpers import lead, publish, uid


async def report(js: JetStreamContext, unit: str, kind: str, data: dict[str, Any]) -> None:
    await publish(js, f"intake.{unit}.{kind}", data, key=f"{unit}/{kind}/{uid()}")


async def new_lead(js: JetStreamContext, unit: str, **overrides: Any) -> str:
    data = lead(unit, **overrides)
    await report(js, unit, "lead", data)
    return f"{unit}-{data['lead_id']}"


def get(base: str, path: str, token: str | None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}


async def get_json(base: str, path: str, token: str | None) -> tuple[int, Any]:
    status, body, _ = await asyncio.to_thread(get, base, path, token)
    return status, json.loads(body) if body else None


async def eventually(check: Any, timeout: float = 90.0, describe: Any = None) -> Any:
    """Poll `check()` (async, returns a truthy value when done) until it holds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"not reached within {timeout}s; last: {describe() if describe else last!r}"
    )
