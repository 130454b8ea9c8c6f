"""W3C trace context (`traceparent`) carried from hop to hop in NATS message headers.

A unit's request (HTTP `traceparent` header, or a NATS message's) starts or continues a
trace; every event a service emits because of a message carries that message's trace id
with a new span id of its own, through the outbox: intake → review → scoring → notify.
A trace backend can join the hops by trace id. Exporting spans over OTLP needs the
OpenTelemetry exporter packages, which are not installed yet (docs/operations.md, tracing).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

HEADER = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# source key (a message's Nats-Msg-Id / Idempotency-Key) -> the traceparent its effects carry
_by_source: ContextVar[dict[str, str] | None] = ContextVar("trace_by_source", default=None)
_current: ContextVar[str | None] = ContextVar("trace_current", default=None)


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


def consuming(messages: Iterable[object]) -> None:
    """Before a batch is worked on: remember each message's trace by its keys, so each row
    the batch writes to the outbox carries the trace of the message that caused it."""
    table: dict[str, str] = {}
    traces = set()
    for msg in messages:
        headers: Mapping[str, str] = getattr(msg, "headers", None) or {}
        value = child(headers.get(HEADER))
        traces.add(value)
        for key in ("Nats-Msg-Id", "Idempotency-Key"):
            if headers.get(key):
                table[headers[key]] = value
    _by_source.set(table)
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
