"""Intake's wiring: the JetStream subscription, the HTTP routes, and the publishers.

A message is read top to bottom: `parse` (validate.py) checks it without state, `record`
(record.py) checks and stores it in one transaction with the events it causes, and only
then are those events published and the message acknowledged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from faststream.nats.annotations import NatsMessage
from nats.aio.msg import Msg
from prometheus_client import Counter
from sqlalchemy import Engine

from shared import outbox, subjects
from shared.contract import CANONICAL_MODELS, DuplicateClaim, FieldError, Rejected
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import load_directory
from shared.http_ops import add_ops_routes, serve
from shared.messaging import (
    consume_in_order,
    durable_subscriber,
    make_broker,
)
from shared.settings import Settings

from . import store, tokens
from .record import Recorded, check, record
from .validate import Parsed, parse

SERVICE = "intake"
log = logging.getLogger("investflow.intake")

settings = Settings.from_env()
directory = load_directory(settings.units_file)
broker = make_broker(settings, SERVICE, "Intake: units report leads and progress (信息统一报送)")
_engine: Engine | None = None

MESSAGES = Counter(
    "investflow_intake_messages_total", "Inbound messages by kind and outcome", ["kind", "outcome"]
)


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(settings.database_url_for(SERVICE))
        create_tables(_engine, store.TABLES)
    return _engine


# Publishers are declared so the AsyncAPI document lists what intake emits.
for _kind, _model in CANONICAL_MODELS.items():
    broker.publisher(
        subjects.canonical(_kind),
        schema=_model,
        title=f"{subjects.canonical(_kind)}:Publish",
        description=f"canonical {_kind.value} event, emitted once per accepted message",
    )
broker.publisher(
    subjects.PROJECT_DUPLICATE,
    schema=DuplicateClaim,
    title=f"{subjects.PROJECT_DUPLICATE}:Publish",
    description="a lead for a project another report already claims (一个项目一个认领)",
)
broker.publisher(
    "intake.rejected.{unit}.{kind}",
    schema=Rejected,
    title="intake.rejected:Publish",
    description="bad input, naming each field and its problem; nothing was stored",
)


def idempotency_key(msg: Msg) -> str:
    headers = msg.headers or {}
    key = headers.get("Nats-Msg-Id") or headers.get("Idempotency-Key")
    if key:
        return key[:200]
    # Without a key, identical content is one event (a re-send), which is the safe reading.
    return "sha256:" + hashlib.sha256(msg.subject.encode() + b"\n" + msg.data).hexdigest()


async def publish_rejection(
    unit: str, kind: str, subject: str, key: str | None, errors: list[FieldError]
) -> None:
    event = Rejected(
        unit=unit,
        kind=kind,
        subject=subject,
        idempotency_key=key,
        errors=errors,
        received_at=dt.datetime.now(dt.UTC),
    )
    headers = {"Nats-Msg-Id": f"rejected:{unit}:{kind}:{key}"} if key else None
    # Sanitise: a bad subject token must not turn into a wildcard or extra tokens.
    safe = [t if t.isidentifier() else "_" for t in (unit, kind)]
    await broker.publish(
        event.model_dump_json().encode(), subjects.rejected(*safe), headers=headers, stream="INTAKE"
    )
    MESSAGES.labels(kind=kind if kind.isidentifier() else "_", outcome="rejected").inc()


async def process(msgs: list[Msg]) -> None:
    """Check and store `msgs` in one transaction, in order, then publish what they cause.

    A rejected message stores nothing, so it can share the transaction with the rest.
    """
    items = []
    for msg in msgs:
        _, unit, kind = msg.subject.split(".", 2)
        key = idempotency_key(msg)
        parsed = parse(unit, kind, msg.data, directory, settings.max_payload_bytes)
        items.append((unit, kind, key, msg.subject, parsed))

    def transaction() -> list[Recorded | list[FieldError]]:
        now = dt.datetime.now(dt.UTC)
        with unit_of_work(engine()) as session:
            return [
                parsed if isinstance(parsed, list) else record(session, parsed, key, now)
                for _, _, key, _, parsed in items
            ]

    results = await asyncio.to_thread(transaction)
    for (unit, kind, key, subject, _), result in zip(items, results, strict=True):
        if isinstance(result, list):
            await publish_rejection(unit, kind, subject, key, result)
            continue
        await outbox.publish(broker, engine(), store.Outbox, result.outbox)
        MESSAGES.labels(kind=kind, outcome=result.outcome).inc()


inbound = durable_subscriber(
    broker,
    subjects.INBOUND_FILTER,
    stream="INTAKE",
    durable=SERVICE,
    settings=settings,
    title="intake.{unit}.{kind}:Consume",
    description="Inbound events from units' systems; see docs/asyncapi.yaml for each kind's payload",
)


@inbound
async def on_inbound(message: NatsMessage) -> None:
    async def one(msg: Msg) -> None:
        await process([msg])

    await consume_in_order(
        message.raw_message, inbound, broker, SERVICE, settings, one, work_run=process
    )


# ---- HTTP: the same contract as POST /v1/units/{unit}/{kind} -------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await asyncio.to_thread(engine)
    await broker.start()
    print(f"investflow: {SERVICE} ready", flush=True)
    try:
        yield
    finally:
        await broker.stop()
        await outbox.flush_marks()


http = FastAPI(
    title="investflow intake",
    description="Units report leads and progress events (信息统一报送). Same payloads as the NATS subjects "
    "`intake.<unit>.<kind>`; `Idempotency-Key` makes a re-sent request change nothing.",
    version="1",
    lifespan=lifespan,
)


# Per-unit bearer tokens, on when INTAKE_HTTP_AUTH=1 (production); /health, /metrics, /docs stay open.
unit_token = tokens.UnitToken(engine, enabled=tokens.auth_enabled())
http.add_exception_handler(tokens.AuthError, tokens.auth_error_response)


def _errors_response(errors: list[FieldError], status: int = 422) -> JSONResponse:
    return JSONResponse({"errors": [e.model_dump() for e in errors]}, status_code=status)


@http.post(
    "/v1/units/{unit}/{kind}",
    status_code=202,
    responses={
        401: {"description": "no, unknown or revoked bearer token (when INTAKE_HTTP_AUTH=1)"},
        403: {"description": "the token belongs to another unit"},
        422: {"description": "errors: [{field, problem}]"},
    },
    dependencies=[Depends(unit_token)],
)
async def post_event(
    unit: str,
    kind: str,
    request: Request,
    idempotency_key: str | None = Header(default=None, max_length=200),
) -> JSONResponse:
    if not idempotency_key:
        return _errors_response(
            [FieldError(field="Idempotency-Key", problem="header required / 须提供幂等键")]
        )
    raw = await request.body()
    parsed = parse(unit, kind, raw, directory, settings.max_payload_bytes)
    if isinstance(parsed, list):
        MESSAGES.labels(kind=kind if kind.isidentifier() else "_", outcome="rejected_http").inc()
        return _errors_response(parsed)

    def stateful_check(p: Parsed) -> list[FieldError]:
        with unit_of_work(engine()) as session:
            if store.find_inbound(session, unit, idempotency_key) is not None:
                return []  # a re-send of something already stored: accepted, changes nothing
            return check(session, p)

    errors = await asyncio.to_thread(stateful_check, parsed)
    if errors:
        MESSAGES.labels(kind=kind, outcome="rejected_http").inc()
        return _errors_response(errors)
    # The stream is the one write path: the consumer stores it, exactly as for NATS publishers.
    ack = await broker.publish(
        raw, subjects.inbound(unit, kind), headers={"Nats-Msg-Id": idempotency_key}, stream="INTAKE"
    )
    return JSONResponse(
        {
            "project_id": parsed.project_id,
            "subject": subjects.inbound(unit, kind),
            "duplicate": bool(getattr(ack, "duplicate", False)),
        },
        status_code=202,
    )


@http.get("/v1/projects/{project_id}")
async def get_project(project_id: str) -> JSONResponse:
    def load() -> store.Project | None:
        with unit_of_work(engine()) as session:
            return store.get_project(session, project_id)

    project = await asyncio.to_thread(load)
    if project is None:
        return JSONResponse(
            {"errors": [{"field": "project_id", "problem": "unknown project / 项目不存在"}]},
            status_code=404,
        )
    return JSONResponse(project.model_dump(mode="json"))


add_ops_routes(http, broker, engine, SERVICE, store.Outbox)


def main() -> None:
    serve(http, SERVICE, 8080)
