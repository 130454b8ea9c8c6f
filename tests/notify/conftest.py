"""Real receivers for notify's tests: an SMTP server (aiosmtpd) and an HTTP server, on free ports."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from investflow.nats_server import free_port


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpts, m in self.messages if address in rcpts]


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            box.messages.append((list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
            return "250 OK"

    controller = Controller(Handler(), hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class HttpSink:
    """Receives POSTs; `script[path]` is a list of statuses to answer in turn (then 200)."""

    url: str
    received: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    robot_error: dict[str, dict[str, Any]] = field(default_factory=dict)

    def posts(self, path_prefix: str) -> list[dict[str, Any]]:
        return [body for path, body, _ in self.received if path.startswith(path_prefix)]


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    port = free_port()
    sink = HttpSink(f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                path = self.path.split("?")[0]
                statuses = sink.script.get(path, [])
                status = statuses.pop(0) if statuses else 200
                if status == 200:
                    sink.received.append((self.path, body, dict(self.headers)))
            answer = sink.robot_error.get(path, {"errcode": 0, "errmsg": "ok"})
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


def contacts_yaml(path: Path, smtp_to: str, sink: HttpSink, extra: str = "") -> Path:
    """A contacts file: L01..L06, CENTER and some units by email, one each of the robots."""
    lines = ["contacts:"]
    for code in ("CENTER", "L01", "L02", "L03", "L04", "L05", "L06", "TS02", "TS03", "TS05"):
        lines.append(f"  - {{code: {code}, email: {code.lower()}@{smtp_to}}}")
    lines += [
        f"  - {{code: TS01, email: ts01@{smtp_to}, webhook: {{url: '{sink.url}/hook/TS01'}}}}",
        f"  - {{code: DEVZONE, language: en, dingtalk: {{url: '{sink.url}/dingtalk?access_token=t0k', secret: s3cret}}}}",
        f"  - {{code: CHEMPARK, wecom: {{url: '{sink.url}/wecom?key=k3y'}}}}",
    ]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.at = start or dt.datetime(2022, 3, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += dt.timedelta(**kw)
