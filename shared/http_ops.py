"""What every HTTP-serving service exposes for operators, and how it is served."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from faststream.nats import NatsBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from .messaging import configure_logging


def add_ops_routes(http: FastAPI, broker: NatsBroker, engine: Callable[[], Engine]) -> None:
    """`/health` (NATS connected and the database answering, else 503) and `/metrics`."""

    @http.get("/health")
    async def health() -> JSONResponse:
        nats_ok = broker.connection is not None and broker.connection.is_connected  # type: ignore[union-attr]

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

    @http.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve(http: FastAPI, service: str, default_port: int) -> None:
    """Run `http` on `<SERVICE>_HTTP_HOST`:`<SERVICE>_HTTP_PORT` (the runtime sets the port)."""
    import uvicorn

    configure_logging(service)
    prefix = service.upper()
    port = int(os.environ.get(f"{prefix}_HTTP_PORT", str(default_port)))
    host = os.environ.get(f"{prefix}_HTTP_HOST", "127.0.0.1")
    uvicorn.run(http, host=host, port=port, log_level="warning")
