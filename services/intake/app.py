"""Intake's wiring: the inbox consumers, the HTTP routes, and the publishers.

Each unit's inbox (and the one-stream layout's leftovers) is a partition of
shared/partitions.py: replicas share them through leases, each inbox is consumed by one
replica at a time in stream order, and a retry or a poison message holds up only its unit.

A message is read top to bottom: `parse` (validate.py) checks it without state, `record`
(record.py) checks and stores it in one transaction with the events it causes, and only
then are those events published and the message acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse
from faststream.nats import JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy import Engine, Row
from sqlalchemy.exc import IntegrityError

from shared import metrics, outbox, subjects, tracing
from shared.contract import (
    CANONICAL_MODELS,
    CENTER_ONLY_KINDS,
    INBOUND_MODELS,
    DuplicateClaim,
    FieldError,
    InboundKind,
    Rejected,
)
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import Directory, load_directory
from shared.http_ops import add_ops_routes, serve
from shared.messaging import Retry, dead_letter, delivery_count, make_broker, transient
from shared.openapi import error_response, make_exact
from shared.partitions import PartitionConsumer, StreamPartitions
from shared.settings import Settings, connect_nats
from shared.streams import inbox_partitions, unit_stream_name

from . import store, tokens
from .record import Recorded, check, key_reused, record
from .validate import MAX_KEY_LENGTH, Parsed, check_key, parse

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
        subjects.keyed_template(subjects.canonical(_kind), "project"),
        schema=_model,
        title=f"{subjects.canonical(_kind)}:Publish",
        description=f"canonical {_kind.value} event, emitted once per accepted message",
    )
broker.publisher(
    subjects.keyed_template(subjects.PROJECT_DUPLICATE, "project"),
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


def idempotency_key(msg: Msg) -> tuple[str, list[FieldError]]:
    """The sender's key (`Nats-Msg-Id`, or `Idempotency-Key`), checked, never cut."""
    headers = msg.headers or {}
    for header in ("Nats-Msg-Id", "Idempotency-Key"):
        key = headers.get(header)
        if key:
            return key, check_key(key, header)
    # Without a key, identical content is one event (a re-send), which is the safe reading.
    return "sha256:" + hashlib.sha256(msg.subject.encode() + b"\n" + msg.data).hexdigest(), []


def _rejection_id(unit: str, kind: str, key: str, body: bytes) -> str:
    # Stable per (unit, kind, key, content): a re-sent message gets its rejection once, and
    # each other body sent under a used key gets its own.
    head = f"{unit}\n{kind}\n{key}\n".encode()
    return "rejected:" + hashlib.sha256(head + body).hexdigest()


async def publish_rejection(
    unit: str,
    kind: str,
    subject: str,
    key: str | None,
    errors: list[FieldError],
    body: bytes = b"",
) -> None:
    event = Rejected(
        unit=unit,
        kind=kind,
        subject=subject,
        idempotency_key=key if key and not check_key(key, "key") else None,
        errors=errors,
        received_at=dt.datetime.now(dt.UTC),
    )
    headers = {"Nats-Msg-Id": _rejection_id(unit, kind, key, body)} if key else {}
    tracing.follow(key)
    headers |= tracing.headers_for()
    # Sanitise: a bad subject token must not turn into a wildcard or extra tokens.
    safe = [t if t.isidentifier() and t.isascii() else "_" for t in (unit, kind)]
    await broker.publish(
        event.model_dump_json().encode(), subjects.rejected(*safe), headers=headers, stream="INTAKE"
    )
    MESSAGES.labels(kind=kind_label(kind), outcome="rejected").inc()


def kind_label(kind: str) -> str:
    """Metric label: the contract's kinds by name, anything else as one value."""
    return kind if kind in InboundKind.__members__ else "unknown"


async def process(msgs: list[Msg]) -> None:
    """Check and store `msgs` in one transaction, in order, then publish what they cause.

    A rejected message stores nothing, so it can share the transaction with the rest.
    """
    items = []
    for msg in msgs:
        _, unit, kind = msg.subject.split(".", 2)
        key, key_errors = idempotency_key(msg)
        parsed = key_errors or parse(unit, kind, msg.data, directory, settings.max_payload_bytes)
        items.append((unit, kind, key, msg.subject, parsed, msg.data))

    def transaction() -> list[Recorded | list[FieldError]]:
        now = dt.datetime.now(dt.UTC)
        with unit_of_work(engine()) as session:
            return [
                parsed if isinstance(parsed, list) else record(session, parsed, key, now)
                for _, _, key, _, parsed, _ in items
            ]

    try:
        results = await asyncio.to_thread(transaction)
    except IntegrityError:
        # Units' inboxes are consumed side by side: two reports of one project can race for
        # its claim row. Once more, and the loser finds the winner's row (a duplicate claim).
        results = await asyncio.to_thread(transaction)
    # Every event the batch caused goes out in one go, in order, acks awaited together;
    # each carries the trace of the message that caused it, whatever else the batch held.
    rows = []
    for (_, _, key, _, _, _), result in zip(items, results, strict=True):
        if not isinstance(result, list):
            tracing.follow(key)
            rows += [(row, tracing.headers_for()) for row in result.outbox]
    await outbox.publish_traced(broker, engine(), store.Outbox, rows)
    for (unit, kind, key, subject, _, body), result in zip(items, results, strict=True):
        if isinstance(result, list):
            await _unless_in_flight(unit, getattr(result, "unknown", []))
            await publish_rejection(unit, kind, subject, key, result, body)
            continue
        MESSAGES.labels(kind=kind, outcome=result.outcome).inc()


_js: JetStreamContext | None = None  # intake's own connection, for asking about inboxes


async def _unless_in_flight(sender: str, project_ids: list[str]) -> None:
    """Raise Retry when a project this message names may still be in its unit's inbox.

    Units' inboxes are consumed side by side, so a landing area's document or the Center's
    agenda can arrive before the lead another unit sent a moment earlier. A project id names
    its unit (`<unit>-<lead_id>`); while that unit's inbox holds anything, try again later;
    once it is empty, the project really is unknown and the sender is told.
    """
    global _js
    owners = {pid.split("-", 1)[0] for pid in project_ids} - {sender}
    owners &= set(directory.units)
    if not owners:
        return
    if _js is None:
        _js = (await connect_nats(settings, name="investflow-intake-inboxes")).jetstream()
    for owner in sorted(owners):
        info = await _js.consumer_info(unit_stream_name(owner), f"{SERVICE}-{owner}")
        if (info.num_pending or 0) + (info.num_ack_pending or 0) > 0:
            raise Retry(f"a project of {owner} may still be in its inbox")

    def stored_since() -> bool:  # the lead may have been stored after this message's check
        with unit_of_work(engine()) as session:
            return any(store.get_project(session, pid) for pid in project_ids)

    if await asyncio.to_thread(stored_since):
        raise Retry("a project it names was stored meanwhile")


async def process_one(msg: Msg) -> None:
    """One message; one that can never be stored is dead-lettered and its sender told why."""
    try:
        await process([msg])
    except Exception as exc:
        if transient(exc):
            raise
        _, unit, kind = msg.subject.split(".", 2)
        key, _ = idempotency_key(msg)
        problem = f"could not be stored ({type(exc).__name__}); kept for the Center / 无法保存，已转交中心"
        await publish_rejection(
            unit, kind, msg.subject, key, [FieldError(field="$", problem=problem)], msg.data
        )
        raise


INBOXES = StreamPartitions(inbox_partitions(directory.units))

# The AsyncAPI document only: the inboxes are consumed by `inboxes` below, not by FastStream.
# One title for every inbox: the document shows one channel per kind (investflow/asyncapi.py
# expands it from the contract models).
documented = NatsBroker(settings.nats_url)
for _name, _stream, _filter in INBOXES.entries:
    documented.subscriber(
        _filter,
        stream=JStream(_stream, declare=False),
        durable=f"{SERVICE}-{_name}",
        pull_sub=PullSub(),
        title="intake.{unit}.{kind}:Consume",
        description="Inbound events from units' systems; see docs/asyncapi.yaml for each kind",
    )


async def _handle_batch(msgs: list[Msg]) -> None:
    """A batch in one transaction; the partition consumer settles it."""
    tracing.consuming(msgs, SERVICE)
    await process(msgs)


async def _handle_one(msg: Msg) -> None:
    tracing.consuming([msg], SERVICE)
    await process_one(msg)


def _settled(msg: Msg, outcome: str, seconds: float) -> None:
    metrics.observe_settled(SERVICE, msg.subject, outcome, seconds)
    tracing.settled(msg, outcome)


async def _dead_letter(msg: Msg, exc: BaseException) -> None:
    await dead_letter(broker, SERVICE, msg, exc, delivery_count(msg))


inboxes: PartitionConsumer | None = None


async def consumer_infos() -> list[Any]:
    """The inbox consumers as the server sees them, for the /metrics gauges."""
    if inboxes is None:
        return []
    return [
        await inboxes.js.consumer_info(inboxes.stream_of(p), inboxes.durable(p))
        for p in range(INBOXES.partitions)
    ]


# ---- HTTP: the same contract as POST /v1/units/{unit}/{kind} -------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global _js, inboxes
    await asyncio.to_thread(engine)
    await broker.start()
    if _js is None:
        nc = await connect_nats(
            settings, name="investflow-intake-inboxes", max_reconnect_attempts=-1
        )
        _js = nc.jetstream()
    inboxes = PartitionConsumer(
        _js,
        service=SERVICE,
        partitioning=INBOXES,
        handler=_handle_batch,
        handle_one=_handle_one,
        settled=_settled,
        dead_letter=_dead_letter,
        ack_wait_s=settings.ack_wait_s,
        batch=settings.batch_size,
        max_deliver=settings.max_deliver,
        replaces=SERVICE,  # the one durable per inbox of earlier releases
    )
    # Before ready: every inbox's backlog shows on its durable from the start.
    await inboxes.ensure_all()
    running = asyncio.create_task(inboxes.run(), name="intake-inboxes")
    print(f"investflow: {SERVICE} ready", flush=True)
    try:
        yield
    finally:
        running.cancel()  # the batches in hand are finished, the leases given back
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await broker.stop()
        await outbox.flush_marks()
        await asyncio.to_thread(tracing.shutdown)


http = FastAPI(
    title="investflow intake",
    description="Units report leads and progress events (信息统一报送). Same payloads as the NATS subjects "
    "`intake.<unit>.<kind>`; `Idempotency-Key` makes a re-sent request change nothing. Every error is "
    "`{errors: [{field, problem}]}`, each problem in English / 中文.",
    version="1",
    lifespan=lifespan,
    docs_url=None,  # Swagger UI's assets come from a CDN; shared/openapi.py serves a local page
    redoc_url=None,
)


# Per-unit bearer tokens, on when INTAKE_HTTP_AUTH=1 (production); /health, /metrics, /docs stay open.
unit_token = tokens.UnitToken(engine, enabled=tokens.auth_enabled())
reader = tokens.TokenUnit(engine, enabled=tokens.auth_enabled())
http.add_exception_handler(tokens.AuthError, tokens.auth_error_response)
# Both dependencies follow the one switch; the spec asks for tokens only while it is on.
make_exact(http, list(INBOUND_MODELS.values()), auth=lambda: unit_token.enabled)
http.add_middleware(tracing.HTTPSpans, service=SERVICE)  # the caller's trace goes on; its span


class Accepted(BaseModel):
    """Accepted for processing: stored by the consumer, exactly as a NATS message would be."""

    project_id: str | None = Field(description="the project the event is about")
    subject: str = Field(description="the NATS subject it was published on")
    duplicate: bool = Field(description="true: a re-send of what is stored; nothing changed")


POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "accepted; a re-send gets the first result"},
    401: error_response("no, unknown or revoked bearer token (when INTAKE_HTTP_AUTH=1)"),
    403: error_response("the token belongs to another unit"),
    409: error_response("the Idempotency-Key was used before with different content"),
    422: error_response("bad input: every field and its problem, English / 中文; nothing stored"),
}


def _errors_response(errors: list[FieldError], status: int = 422) -> JSONResponse:
    return JSONResponse({"errors": [e.model_dump() for e in errors]}, status_code=status)


def _kind_route(kind: InboundKind) -> None:
    """One route per kind, so the spec gives each its body schema (FastAPI cannot vary a
    body by a path parameter's value); the body is still parsed by hand, strictly."""
    model = INBOUND_MODELS[kind]
    who = "the Center (unit CENTER) only" if kind in CENTER_ONLY_KINDS else "any unit, as itself"
    # The directory's units (the Center alone for its kinds): what the server accepts. Only
    # in the spec: `parse` still checks it, with the project's own message for the rest.
    senders = [Directory.CENTER] if kind in CENTER_ONLY_KINDS else sorted(directory.units)

    async def post_kind(
        request: Request,
        unit: str = Path(
            description="the reporting unit's code (deploy/units.yaml)",
            json_schema_extra={"enum": senders},
        ),
        idempotency_key: str = Header(
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            description="the sender's key for this event: a re-send with it changes nothing",
        ),
    ) -> JSONResponse:
        return await post_event(unit, kind.value, request, idempotency_key)

    http.post(
        f"/v1/units/{{unit}}/{kind.value}",
        status_code=202,
        summary=f"report a {kind.value} event ({model.__name__})",
        description=f"Sent by {who}. Same payload as the NATS subject `intake.<unit>.{kind.value}`.",
        operation_id=f"post_{kind.value}",
        responses=POST_RESPONSES,
        dependencies=[Depends(unit_token)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            }
        },
    )(post_kind)


for _kind in InboundKind:
    _kind_route(_kind)


@http.post(
    "/v1/units/{unit}/{kind}",
    status_code=422,
    include_in_schema=False,  # every kind has its route above; this one tells the rest why not
    dependencies=[Depends(unit_token)],
)
async def post_event(
    unit: str,
    kind: str,
    request: Request,
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    key_errors = check_key(idempotency_key, "Idempotency-Key")
    if key_errors:
        MESSAGES.labels(kind=kind_label(kind), outcome="rejected_http").inc()
        return _errors_response(key_errors)
    assert idempotency_key is not None
    raw = await _body(request, settings.max_payload_bytes)
    parsed = parse(unit, kind, raw, directory, settings.max_payload_bytes)
    if isinstance(parsed, list):
        MESSAGES.labels(kind=kind_label(kind), outcome="rejected_http").inc()
        return _errors_response(parsed)

    def stateful_check(p: Parsed) -> tuple[Row[Any] | None, list[FieldError]]:
        with unit_of_work(engine()) as session:
            errors = check(session, p)
            # Looked up after the checks: if the consumer stored this key meanwhile (a
            # re-send racing its first copy), it is that re-send, not a conflict.
            seen = store.inbound_by_key(session, unit, idempotency_key)
            return (seen, []) if seen is not None else (None, errors)

    seen, errors = await asyncio.to_thread(stateful_check, parsed)
    if seen is not None:
        if seen.kind != parsed.kind.value or seen.payload != parsed.payload.model_dump_json():
            MESSAGES.labels(kind=kind, outcome="key_reused_http").inc()
            return _errors_response([key_reused(idempotency_key, seen, "Idempotency-Key")], 409)
        # A re-send of something already stored: the first result, and nothing changes.
        return _accepted(seen.project_id, subjects.inbound(unit, kind), duplicate=True)
    if errors:
        MESSAGES.labels(kind=kind, outcome="rejected_http").inc()
        return _errors_response(errors)
    # The stream is the one write path: the consumer stores it, exactly as for NATS publishers.
    # The key travels as Idempotency-Key, not Nats-Msg-Id: intake's (unit, key) table decides
    # what is a re-send, so a reused key with other content gets its rejection, not a silent drop.
    await broker.publish(
        raw,
        subjects.inbound(unit, kind),
        # The caller's trace (W3C traceparent), or a new one, goes on with the message.
        headers={
            "Idempotency-Key": idempotency_key,
            # (HTTPSpans made it the current one: the request's span, when exporting)
            tracing.HEADER: tracing.current() or tracing.child(request.headers.get(tracing.HEADER)),
        },
        stream=unit_stream_name(unit),
    )
    return _accepted(parsed.project_id, subjects.inbound(unit, kind), duplicate=False)


def _accepted(project_id: str | None, subject: str, duplicate: bool) -> JSONResponse:
    body = Accepted(project_id=project_id, subject=subject, duplicate=duplicate)
    return JSONResponse(body.model_dump(), status_code=202)


async def _body(request: Request, limit: int) -> bytes:
    """At most `limit` + 1 bytes: enough to say it is too large without holding all of it."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)


@http.get(
    "/v1/projects/{project_id}",
    response_model=store.Project,
    responses={
        401: error_response("no, unknown or revoked bearer token (when INTAKE_HTTP_AUTH=1)"),
        404: error_response("unknown project, or not one the caller's unit reports on"),
    },
)
async def get_project(project_id: str, caller: str | None = Depends(reader)) -> JSONResponse:
    def load() -> store.Project | None:
        with unit_of_work(engine()) as session:
            return store.get_project(session, project_id)

    project = await asyncio.to_thread(load)
    visible = project is not None and (
        caller is None
        or caller in (Directory.CENTER, project.attracting_unit, project.landing_area)
    )
    if not visible:
        return JSONResponse(
            {
                "errors": [
                    {
                        "field": "project_id",
                        "problem": "unknown project, or not one of your unit's / 项目不存在或无权查看",
                    }
                ]
            },
            status_code=404,
        )
    return JSONResponse(project.model_dump(mode="json"))


add_ops_routes(http, broker, engine, SERVICE, store.Outbox, consumers=consumer_infos)


def main() -> None:
    serve(http, SERVICE, 8080)
