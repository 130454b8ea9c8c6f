"""Builders and readers the end-to-end tests share."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from nats.js import JetStreamContext
from sqlalchemy import func
from sqlmodel import Session, select

from investflow.runtime import wait_until_idle
from shared import subjects
from shared.contract import make_credit_code
from shared.db import make_engine


def uid() -> str:
    return uuid.uuid4().hex[:10]


def credit_code() -> str:
    """A fresh valid 统一社会信用代码 (GB 32100 check digit)."""
    body = "91" + "320100" + uuid.uuid4().hex[:9].upper().replace("I", "1").replace("O", "0")
    body = "".join(ch if ch not in "SVZ" else "8" for ch in body)
    return make_credit_code(body)


def lead(unit: str = "TS01", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "lead_id": f"L{uid()}",
        "title": f"年产5万吨新材料项目 {uid()}",
        "attracting_unit": unit,
        "landing_area": "DEVZONE",
        "kind": "industrial",
        "industry": "new_materials",
        "planned_investment": "150000000",
        "land": "new_land",
        "investor": {
            "name": f"江苏某某新材料有限公司{uid()}",
            "origin": "outside_province",
            "credit_code": credit_code(),
        },
        # Assessed (环保、安全、能耗): recognition needs it (review rule environment_not_assessed).
        "environment": {"emissions_ok": True, "safety_ok": True, "energy_ok": True},
        "reported_on": "2022-03-01",
    }
    data.update(overrides)
    return data


async def publish(js: JetStreamContext, subject: str, data: Any, key: str | None = None) -> Any:
    """`subject` may be an event type (`review.recognition`): it goes out keyed by the body's
    project_id, as the services publish it."""
    body = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
    return await js.publish(keyed(subject, body), body, headers={"Nats-Msg-Id": key or uid()})


def keyed(subject: str, body: bytes) -> str:
    """An event type's subject as published, keyed by the body's project (else unchanged)."""
    parts = subject.split(".")
    if parts[0] not in subjects.KEYED_ROOTS or len(parts) != 2:
        return subject
    try:
        pid = json.loads(body).get("project_id")
    except (ValueError, AttributeError):
        pid = None
    return subjects.keyed(subject, pid if isinstance(pid, str) else None)


async def read_subject(
    js: JetStreamContext, stream: str, subject: str, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Every message stored on `subject` (wildcards allowed), decoded, in stream order; an
    event type (`review.decided`) reads every key and partition of it."""
    subject = subjects.stored_pattern(subject)
    info = await js.stream_info(stream, subjects_filter=subject)
    expected = sum((info.state.subjects or {}).values())
    out: list[dict[str, Any]] = []
    if expected == 0:
        return out
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    try:
        while len(out) < expected:
            msg = await sub.next_msg(timeout=timeout)
            out.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return out


async def idle(js: JetStreamContext) -> None:
    await wait_until_idle(js, timeout=60)


def count_rows(database_url: str, table: Any, *where: Any) -> int:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return int(session.exec(select(func.count()).select_from(table).where(*where)).one())
    finally:
        engine.dispose()


async def http_post(url: str, body: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | ({"Idempotency-Key": key} if key else {})

    def call() -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    return await asyncio.to_thread(call)
