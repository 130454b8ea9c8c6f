"""The Prometheus metrics every service exports on /metrics, with bounded label values.

Every label value comes from a fixed set: a subject is reduced to its template
(`intake.TS01.lead` -> `intake.*.lead`, anything unknown -> `other`), an HTTP path to its
route template (`/v1/units/{unit}/{kind}`, unmatched -> `unmatched`), an outcome to one of
OUTCOMES. A unit code, project id or bad kind never becomes a label, so a misbehaving
sender cannot grow the time series without bound.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .contract.enums import InboundKind

OUTCOMES = ("ok", "retry", "dead_letter")
_KINDS = frozenset(k.value for k in InboundKind)
# The second token of the output subjects (shared/subjects.py spells them).
_EVENTS = {
    "project": _KINDS | {"duplicate"},
    "review": frozenset({"screened", "materials", "decided", "recognition"}),
    "score": frozenset({"credited", "held", "reversed"}),
    "notify": frozenset({"sent", "failed"}),
}
_SERVICES = frozenset({"intake", "review", "scoring", "notify", "board"})
_STREAMS = frozenset({"INTAKE", "PROJECT", "REVIEW", "SCORE", "NOTIFY", "DLQ", "core"})


# Every value subject_label can return: what the tests hold the exported labels to.
SUBJECT_LABELS = frozenset(
    {"other", "intake.*.*", "intake.rejected.*.*"}
    | {f"intake.*.{k}" for k in _KINDS}
    | {f"{head}.{e}" for head, events in _EVENTS.items() for e in events | {"other"}}
    | {f"dlq.{s}.{t}" for s in _SERVICES | {"other"} for t in _STREAMS | {"other"}}
)


def subject_label(subject: str) -> str:
    """The subject's template: one of a few dozen values whatever the sender puts in it."""
    parts = subject.split(".")
    head = parts[0]
    if head == "intake":
        if len(parts) == 3:
            return f"intake.*.{parts[2] if parts[2] in _KINDS else '*'}"
        if len(parts) == 4 and parts[1] == "rejected":
            return "intake.rejected.*.*"
        return "other"
    if head in _EVENTS and len(parts) == 2:
        return subject if parts[1] in _EVENTS[head] else f"{head}.other"
    if head == "dlq" and len(parts) == 3:
        service = parts[1] if parts[1] in _SERVICES else "other"
        stream = parts[2] if parts[2] in _STREAMS else "other"
        return f"dlq.{service}.{stream}"
    return "other"


MESSAGES = Counter(
    "investflow_messages",
    "JetStream messages settled by a service, by subject template and outcome "
    "(ok: acked; retry: nak'd to try again; dead_letter: sent to the DLQ stream)",
    ["service", "subject", "outcome"],
)
PROCESSING = Histogram(
    "investflow_message_processing_seconds",
    "Time to process one message (a run of messages settled together counts once per message)",
    ["service", "subject"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEAD_LETTERS = Counter(
    "investflow_dead_letters",
    "Messages this service gave up on after max_deliver attempts (now on dlq.<service>.<stream>)",
    ["service", "subject"],
)
HTTP_REQUESTS = Counter(
    "investflow_http_requests",
    "HTTP requests by route template, method and status code",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "investflow_http_request_seconds",
    "HTTP request duration by route template",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_PENDING = Gauge(
    "investflow_consumer_pending_messages",
    "Messages in the stream not yet delivered to this service's durable consumer",
    ["service", "stream", "durable"],
)
CONSUMER_ACK_PENDING = Gauge(
    "investflow_consumer_ack_pending_messages",
    "Messages delivered to the durable consumer and not yet acknowledged",
    ["service", "stream", "durable"],
)
CONSUMER_REDELIVERED = Gauge(
    "investflow_consumer_redelivered_messages",
    "Messages the server has delivered more than once and are not yet acknowledged",
    ["service", "stream", "durable"],
)
OUTBOX_BACKLOG = Gauge(
    "investflow_outbox_backlog",
    "Outbox rows committed but not yet marked published (events waiting to go out)",
    ["service"],
)
UP = Gauge("investflow_service_up", "1 while the service's NATS connection is up", ["service"])

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def observe_settled(service: str, subject: str, outcome: str, seconds: float, n: int = 1) -> None:
    """Count `n` messages of `subject` settled with `outcome`, each taking seconds / n."""
    label = subject_label(subject)
    MESSAGES.labels(service, label, outcome).inc(n)
    for _ in range(n):
        PROCESSING.labels(service, label).observe(seconds / max(1, n))
    if outcome == "dead_letter":
        DEAD_LETTERS.labels(service, label).inc()
