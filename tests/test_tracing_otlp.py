"""Spans over OTLP/HTTP: with OTEL_EXPORTER_OTLP_ENDPOINT set, each hop exports its span.

A real OTLP/HTTP receiver (POST /v1/traces, protobuf) on a loopback port collects what the
real services export while a unit reports a lead and its funds; the spans must form one
trace, intake → review → scoring → notify, each hop's parent a span its upstream exported.
"""

from __future__ import annotations

import asyncio
import contextvars
import gzip
import json
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from shared import tracing
from tests.helpers import idle, lead, uid

pytestmark = pytest.mark.timeout(120)

TRACE = "5cf92f3577b34da6a3ce929d0e0e4737"
CALLER_SPANS = ("00f067aa0ba902b7", "00f067aa0ba902b8")  # the unit's own spans, not exported


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Collector:
    """What an OTel collector's OTLP/HTTP traces receiver would get."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()

    def take(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for rs in request.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attributes = {
                        a.key: a.value.string_value or a.value.int_value for a in s.attributes
                    }
                    found.append(
                        Span(
                            resource.get("service.name", ""),
                            s.name,
                            s.kind,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            attributes,
                        )
                    )
        with self.lock:
            self.payloads.append(body)
            self.spans.extend(found)

    def in_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    got = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            got.take(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, collector: tuple[Collector, str]
) -> AsyncIterator[Any]:
    from investflow.services import SERVICES
    from tests.conftest import system_on

    wanted = tuple(s for s in SERVICES if s.name in ("intake", "review", "scoring", "notify"))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector[1], "OTEL_BSP_SCHEDULE_DELAY": "100"}
    async with system_on(
        "sqlite", tmp_path_factory.mktemp("otlp"), services=wanted, extra_env=env
    ) as system:
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


# (upstream service, service): who may cause whom; review and scoring both consume project.*
HOPS = {
    ("intake", "intake"),  # the HTTP request, then its message on the unit's inbox
    ("intake", "review"),
    ("intake", "scoring"),
    ("intake", "notify"),
    ("review", "scoring"),
    ("review", "notify"),
    ("scoring", "notify"),
}
SERVER, CONSUMER = 2, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


async def test_a_reports_hops_form_one_exported_trace(
    running: Any, collector: tuple[Collector, str]
) -> None:
    got = collector[0]
    first = lead("TS01")
    base = f"{running.http_url}/v1/units/TS01"
    sent = f"00-{TRACE}-{CALLER_SPANS[0]}-01"
    assert await asyncio.to_thread(_post, f"{base}/lead", first, sent) == 202
    await idle(running.js)
    funds = {
        "project_id": f"TS01-{first['lead_id']}",
        "funds_id": f"F{uid()}",
        "amount": "1000",
        "currency": "CNY",
        "arrived_on": "2022-05-01",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "B1"},
    }
    sent = f"00-{TRACE}-{CALLER_SPANS[1]}-01"
    assert await asyncio.to_thread(_post, f"{base}/funds", funds, sent) == 202
    await idle(running.js)

    def edges(spans: list[Span]) -> set[tuple[str, str]]:
        by_id = {s.span_id: s for s in spans}
        return {(by_id[s.parent_id].service, s.service) for s in spans if s.parent_id in by_id}

    needed = {
        ("intake", "review"),
        ("review", "notify"),
        ("intake", "scoring"),
        ("scoring", "notify"),
    }
    deadline = asyncio.get_running_loop().time() + 15
    while not needed <= edges(got.in_trace(TRACE)):
        assert asyncio.get_running_loop().time() < deadline, (
            f"hops exported: {sorted(edges(got.in_trace(TRACE)))}"
        )
        await asyncio.sleep(0.2)

    spans = got.in_trace(TRACE)
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)  # each span exported once
    assert {s.service for s in spans} == {"intake", "review", "scoring", "notify"}
    roots = [s for s in spans if s.parent_id not in by_id]
    # The only spans whose parent is not exported: intake's requests, children of the unit's.
    assert sorted(s.parent_id for s in roots) == sorted(CALLER_SPANS)
    for root in roots:
        assert (root.service, root.kind) == ("intake", SERVER)
        assert root.attributes["http.request.method"] == "POST"
        assert root.attributes["http.route"] in ("/v1/units/{unit}/lead", "/v1/units/{unit}/funds")
        assert root.attributes["http.response.status_code"] == 202
    for s in spans:
        if s in roots:
            continue
        assert (by_id[s.parent_id].service, s.service) in HOPS, s
        assert s.kind == CONSUMER
        assert s.attributes["messaging.system"] == "nats"
        assert s.name == f"process {s.attributes['messaging.destination.name']}"
        assert s.attributes["outcome"] in ("ok", "retry")  # retry: a race, tried again
    subjects = {s.attributes.get("messaging.destination.name") for s in spans}
    assert {"intake.TS01.lead", "project.lead", "review.screened", "project.funds"} <= subjects
    # Never the message body: nothing the unit wrote reaches the trace backend.
    for secret in (first["title"], first["investor"]["name"], funds["funds_id"]):
        assert not any(secret.encode() in p for p in got.payloads)


def test_an_exporter_only_with_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, collector: tuple[Collector, str]
) -> None:
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    made: list[object] = []
    real = trace_exporter.OTLPSpanExporter

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", Counting)
    msg = SimpleNamespace(
        subject="project.lead",
        headers={"Nats-Msg-Id": "m1", "traceparent": f"00-{TRACE}-{CALLER_SPANS[0]}-01"},
    )
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    def unset() -> None:
        tracing.consuming([msg], "review")
        tracing.settled(msg, "ok")
        hop = tracing.headers_for("m1")["traceparent"]
        assert tracing.trace_id(hop) == TRACE and CALLER_SPANS[0] not in hop

    hops = []

    def set_() -> None:
        for _ in range(2):
            tracing.consuming([msg], "review")
            hops.append(tracing.headers_for("m1")["traceparent"])
            tracing.settled(msg, "dead_letter")

    # In a context of their own: the trace they make current stays out of later tests.
    contextvars.copy_context().run(unset)
    assert made == []
    # Set: one exporter per service, and each hop's span id is an exported span's.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector[1])
    monkeypatch.setenv("OTEL_SERVICE_NAME", "review-eu")
    try:
        contextvars.copy_context().run(set_)
        assert len(made) == 1
    finally:
        tracing.shutdown()  # flushes
    spans = {s.span_id: s for s in collector[0].in_trace(TRACE) if s.service == "review-eu"}
    assert sorted(spans) == sorted(h.split("-")[2] for h in hops)
    for s in spans.values():
        assert s.parent_id == CALLER_SPANS[0] and s.attributes["outcome"] == "dead_letter"
