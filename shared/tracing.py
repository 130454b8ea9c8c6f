"""W3C trace context (`traceparent`) carried from hop to hop in NATS message headers.

A unit's request (HTTP `traceparent` header, or a NATS message's) starts or continues a
trace; every event a service emits because of a message carries that message's trace id
with a new span id of its own, through the outbox: intake → review → scoring → notify.

With OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, each service
also exports a span over OTLP/HTTP per message it settles (`consuming` … `settled`) and per
request to intake's /v1/ API (`HTTPSpans`): its parent is the traceparent the message or
request carries, and its span id is the one on what the service emitted, so a backend
(an OTel collector, Jaeger) shows one trace across the hops. service.name is the service's
(OTEL_SERVICE_NAME overrides it); the other OTEL_* exporter/batch variables apply. Attributes
are bounded: subject, outcome, HTTP method, route and status; never a body. Unset, the
OpenTelemetry SDK is not even imported. docs/operations.md, tracing.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

from . import subjects

HEADER = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# source key (a message's Nats-Msg-Id / Idempotency-Key) -> the traceparent its effects carry
_by_source: ContextVar[dict[str, str] | None] = ContextVar("trace_by_source", default=None)
_current: ContextVar[str | None] = ContextVar("trace_current", default=None)
# id(message) -> its open span, for the batch being settled (only when exporting)
_open: ContextVar[dict[int, Any] | None] = ContextVar("trace_open", default=None)
_providers: dict[str, Any] = {}  # service -> its TracerProvider, made on first use


def valid(value: str | None) -> bool:
    match = _FORMAT.match(value or "")
    return bool(match) and set(match.group(1)) != {"0"} and set(match.group(2)) != {"0"}


def child(parent: str | None) -> str:
    """The next hop's traceparent: the parent's trace id (a new one without a valid parent)
    and a new span id."""
    match = _FORMAT.match(parent or "") if valid(parent) else None
    trace_id = match.group(1) if match else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def start(parent: str | None) -> str:
    """Make `child(parent)` the current trace for what this task emits next."""
    value = child(parent)
    _current.set(value)
    return value


def current() -> str | None:
    return _current.get()


def consuming(messages: Iterable[object], service: str | None = None) -> None:
    """Before a batch is worked on: remember each message's trace by its keys, so each row
    the batch writes to the outbox carries the trace of the message that caused it.
    When exporting, each message's span starts here; `settled` ends it."""
    table: dict[str, str] = {}
    traces = set()
    spans: dict[int, Any] = {}
    tracer = _tracer(service) if service else None
    for msg in messages:
        headers: Mapping[str, str] = getattr(msg, "headers", None) or {}
        if tracer is None:
            value = child(headers.get(HEADER))
        else:
            # By event type: span names stay a few dozen values (not one per project key).
            subject = subjects.event_type(str(getattr(msg, "subject", "")))
            span = _start(
                tracer,
                f"process {subject}",
                headers.get(HEADER),
                "CONSUMER",
                {"messaging.system": "nats", "messaging.destination.name": subject},
            )
            spans[id(msg)] = span
            value = _traceparent(span)
        traces.add(value)
        for key in ("Nats-Msg-Id", "Idempotency-Key"):
            if headers.get(key):
                table[headers[key]] = value
    _by_source.set(table)
    _open.set(spans)
    # One message (or one trace): everything it causes is in it, whatever the rows' sources.
    _current.set(next(iter(traces)) if len(traces) == 1 else None)


def follow(key: str | None) -> None:
    """Make the trace of the message with this key the current one."""
    value = (_by_source.get() or {}).get(key or "")
    if value:
        _current.set(value)


def headers_for(source: str | None = None) -> dict[str, str]:
    """The trace header an emitted event carries: its cause's, else the current one."""
    table = _by_source.get() or {}
    value = table.get(source or "") or _current.get()
    return {HEADER: value} if value else {}


def settled(msg: object, outcome: str) -> None:
    """The message is settled (ok, retry, dead_letter): its span, if exporting, ends."""
    span = (_open.get() or {}).pop(id(msg), None)
    if span is None:
        return
    span.set_attribute("outcome", outcome)
    if outcome != "ok":
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))
    span.end()


class HTTPSpans:
    """ASGI middleware: a request to the /v1/ API continues the caller's trace; what the
    handler emits carries it (`current()`), and the request's span is exported."""

    def __init__(self, app: Callable[..., Awaitable[None]], service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or []).get(HEADER.encode(), b"")
        parent = raw.decode("latin-1")
        tracer = _tracer(self.service)
        method = scope.get("method", "")
        span = None
        if tracer is None:
            value = child(parent)
        else:
            span = _start(tracer, method, parent, "SERVER", {"http.request.method": method})
            value = _traceparent(span)
        token = _current.set(value)
        status = 500  # unless a response starts

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _current.reset(token)
            if span is not None:
                route = getattr(scope.get("route"), "path", None)  # the template, bounded
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR))
                span.end()


def exporting() -> bool:
    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return bool(endpoint) and env.get("OTEL_SDK_DISABLED", "").lower() != "true"


def shutdown() -> None:
    """Export what is still batched and stop; services call it as they stop (blocking)."""
    while _providers:
        _, provider = _providers.popitem()
        provider.shutdown()


def _tracer(service: str) -> Any:
    """The service's tracer when exporting, else None (and the SDK is never imported)."""
    provider = _providers.get(service)
    if provider is None:
        if not exporting():
            return None
        from opentelemetry.exporter.otlp.proto.http import trace_exporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = os.environ.get("OTEL_SERVICE_NAME") or service
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        # The exporter reads the endpoint, headers, timeout, TLS from the OTEL_* variables.
        provider.add_span_processor(BatchSpanProcessor(trace_exporter.OTLPSpanExporter()))
        _providers[service] = provider
    return provider.get_tracer("investflow")


def _start(
    tracer: Any, name: str, parent: str | None, kind: str, attributes: dict[str, Any]
) -> Any:
    from opentelemetry import trace

    context = None
    match = _FORMAT.match(parent or "") if valid(parent) else None
    if match:
        remote = trace.SpanContext(
            trace_id=int(match.group(1), 16),
            span_id=int(match.group(2), 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(match.group(3), 16)),
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    return tracer.start_span(
        name, context=context, kind=getattr(trace.SpanKind, kind), attributes=attributes
    )


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
