"""What every service exposes for operators (/health, /metrics), and how it is served.

intake and scoring add the routes to their own API; review and notify, which have no API,
serve them from a small app beside their consumers (`start_ops_server`). Every service's
port is `<SERVICE>_HTTP_PORT` (0: a free one); the address is printed when it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from faststream.nats import NatsBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import Engine, func, select, text
from starlette.routing import Match

from . import metrics
from .messaging import configure_logging
from .openapi import make_exact

log = logging.getLogger("investflow")

# Default ports when <SERVICE>_HTTP_PORT is not set (compose sets them; `investflow up` too).
DEFAULT_PORTS = {"intake": 8080, "scoring": 8082, "review": 8083, "notify": 8084}


def _nats_connected(broker: NatsBroker) -> bool:
    try:
        conn: Any = broker.connection
    except Exception:  # FastStream raises until the broker has connected once
        return False
    return conn is not None and bool(conn.is_connected)


Infos = Callable[[], Awaitable[list[Any]]]


async def refresh_gauges(
    service: str,
    broker: NatsBroker,
    engine: Callable[[], Engine],
    outbox: Any | None,
    consumers: Infos | None = None,
) -> None:
    """The scrape-time gauges: this service's consumers as the server sees them, its outbox.
    `consumers`: the infos of its durables (shared/partitions.py)."""
    connected = _nats_connected(broker)
    metrics.UP.labels(service).set(1 if connected else 0)
    infos: list[Any] = []
    if consumers is not None and connected:
        # NATS away: the gauges keep their last value, UP says why.
        with contextlib.suppress(Exception):
            infos += await asyncio.wait_for(consumers(), 5.0)
    for info in infos:
        labels = (service, info.stream_name, info.config.durable_name or info.name)
        metrics.CONSUMER_PENDING.labels(*labels).set(int(info.num_pending or 0))
        metrics.CONSUMER_ACK_PENDING.labels(*labels).set(int(info.num_ack_pending or 0))
        metrics.CONSUMER_REDELIVERED.labels(*labels).set(int(info.num_redelivered or 0))
    if outbox is not None:

        def count() -> int:
            query = select(func.count()).select_from(outbox).where(outbox.published_at.is_(None))
            with engine().connect() as conn:
                return int(conn.execute(query).scalar_one())

        with contextlib.suppress(Exception):
            metrics.OUTBOX_BACKLOG.labels(service).set(await asyncio.to_thread(count))


def _route_label(http: FastAPI, request: Request) -> str:
    """The matched route's template, never the raw path (bounded label values)."""
    for route in http.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    nats: bool
    db: bool


def add_ops_routes(
    http: FastAPI,
    broker: NatsBroker,
    engine: Callable[[], Engine],
    service: str | None = None,
    outbox: Any | None = None,
    consumers: Infos | None = None,
) -> None:
    """`/health` (NATS connected and the database answering, else 503), `/metrics`, and the
    request counters on every route. `outbox`: the service's outbox table, for its backlog."""
    name = service or http.title.removeprefix("investflow ").strip() or "service"

    @http.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.monotonic()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_label(http, request)
            method = metrics.method_label(request.method)
            metrics.HTTP_REQUESTS.labels(name, method, route, metrics.status_label(status)).inc()
            metrics.HTTP_LATENCY.labels(name, method, route).observe(time.monotonic() - started)

    @http.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "NATS or the database away"}},
    )
    async def health() -> JSONResponse:
        nats_ok = _nats_connected(broker)

        def ping() -> None:
            with engine().connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.to_thread(ping)
            db_ok = True
        except Exception:
            db_ok = False
        ok = nats_ok and db_ok
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "nats": nats_ok, "db": db_ok},
            status_code=200 if ok else 503,
        )

    @http.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition format 0.0.4",
            }
        },
    )
    async def prometheus_metrics() -> Response:
        await refresh_gauges(name, broker, engine, outbox, consumers)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def http_port(service: str) -> int:
    return int(os.environ.get(f"{service.upper()}_HTTP_PORT", str(DEFAULT_PORTS.get(service, 0))))


def bind(service: str) -> socket.socket:
    """The service's listening socket on <SERVICE>_HTTP_HOST:<SERVICE>_HTTP_PORT (0: any free).

    Bound here rather than by uvicorn so a port of 0 is known before anyone asks: scaled
    replicas on one host (host networking) each take a free port, and the healthcheck reads
    it from INVESTFLOW_HTTP_PORT_FILE.
    """
    host = os.environ.get(f"{service.upper()}_HTTP_HOST", "127.0.0.1")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, http_port(service)))
    except OSError as exc:
        sock.close()
        print(
            f"investflow: {service} cannot listen on {host}:{http_port(service)}: {exc}; set "
            f"{service.upper()}_HTTP_PORT / 端口被占用",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from exc
    sock.listen(128)
    port = sock.getsockname()[1]
    port_file = os.environ.get("INVESTFLOW_HTTP_PORT_FILE")
    if port_file:
        with open(port_file, "w", encoding="ascii") as f:
            f.write(f"{port}\n")
    # The address, for operators and the compose check (never the supervisor's READY mark).
    print(f"investflow: {service} HTTP on http://{host}:{port}", flush=True)
    return sock


class _EmbeddedServer:
    """uvicorn inside another framework's event loop: the host framework owns the signals."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # FastStream handles SIGTERM
                yield

        self.server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.task: asyncio.Task[None] | None = None

    def start(self, sock: socket.socket) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 5)


async def start_ops_server(
    service: str,
    broker: NatsBroker,
    engine: Callable[[], Engine],
    outbox: Any | None = None,
    consumers: Infos | None = None,
) -> Callable[[], Awaitable[None]]:
    """Serve /health and /metrics for a service without an API; returns the stop function."""
    app = FastAPI(title=f"investflow {service}", docs_url=None, redoc_url=None)
    add_ops_routes(app, broker, engine, service, outbox, consumers)
    make_exact(app)
    server = _EmbeddedServer(app)
    server.start(bind(service))
    return server.stop


def serve(http: FastAPI, service: str, default_port: int) -> None:
    """Run `http` on `<SERVICE>_HTTP_HOST`:`<SERVICE>_HTTP_PORT` (the runtime sets the port)."""
    import uvicorn

    configure_logging(service)
    DEFAULT_PORTS.setdefault(service, default_port)
    sock = bind(service)
    config = uvicorn.Config(http, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
