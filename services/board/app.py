"""The board's wiring (挂图作战看板): durable subscriptions on project.*, review.*, score.*,
notify.*, a core subscription on rules.loaded.*, and the HTTP pages and JSON API.

A message is parsed (`ingest.parse`; bad JSON is dead-lettered with the reason), stored with
what it implies in the board's own tables in one transaction per run (`ingest.ingest`),
and only then acknowledged. The pages read those tables only (`queries`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import subjects, tracing
from shared.consumers import Reads, ServiceConsumers, document, start_consumers
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import Directory, load_directory
from shared.http_ops import add_ops_routes, serve
from shared.messaging import dead_letter, delivery_count, make_broker, stream_seq
from shared.settings import Settings

from . import access, ingest, queries, store
from .readmodel import Thresholds

SERVICE = "board"
log = logging.getLogger("investflow.board")

settings = Settings.from_env()
broker = make_broker(
    settings, SERVICE, "Board: the Center's battle map and every unit's view (挂图作战)"
)
_engine: Engine | None = None
_write_lock = asyncio.Lock()  # one writer: streams arrive concurrently, rows are shared
# ... and a thread-side one: a threshold change rebuilds the counts ingest moves by deltas
# (ingest.relight_all), from whichever thread noticed it; never at the same time as a run.
_tables_lock = threading.Lock()

MESSAGES = Counter(
    "investflow_board_messages_total",
    "Consumed messages by stream and outcome",
    ["stream", "outcome"],
)
PAGE_SECONDS = Histogram(
    "investflow_board_page_seconds",
    "Server time per page",
    ["page"],
    buckets=(0.01, 0.05, 0.1, 0.3, 1, 3),
)


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(settings.database_url_for(SERVICE))
        create_tables(_engine, store.TABLES)
    return _engine


T = TypeVar("T")


def retrying(work: Callable[[], T], attempts: int = 6) -> T:
    """A transaction again after a lost race or a lock: it then sees the other's row."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (IntegrityError, OperationalError):
            if attempt == attempts:
                raise
            time.sleep(0.02 * attempt)
    raise AssertionError("unreachable")


async def store_run(msgs: list[Msg]) -> None:
    items = []
    for msg in msgs:
        stream = msg.subject.split(".", 1)[0].upper()
        try:
            kind = subjects.event_type(msg.subject)
            items.append(ingest.parse(stream, stream_seq(msg) or 0, kind, msg.data))
        except ingest.BadEvent as exc:
            # Retrying cannot fix it: straight to the dead-letter stream, with the reason.
            log.error("board: dead-lettered bad event on %s: %s", msg.subject, exc)
            await dead_letter(broker, SERVICE, msg, exc, delivery_count(msg))
            MESSAGES.labels(stream=stream, outcome="bad_input").inc()
    if not items:
        return

    thresholds = await asyncio.to_thread(lambda: context.thresholds)

    def transaction() -> int:
        with _tables_lock, unit_of_work(engine()) as session:
            return ingest.ingest(session, items, thresholds)

    async with _write_lock:
        new = await asyncio.to_thread(retrying, transaction)
    MESSAGES.labels(stream=items[0].stream, outcome="stored").inc(new)
    MESSAGES.labels(stream=items[0].stream, outcome="redelivered").inc(len(items) - new)


READS = (
    Reads(
        "PROJECT", "Project facts: leads, documents, milestones, funds, visits, decisions, meetings"
    ),
    Reads("REVIEW", "Screening, materials, decisions and recognition, each with its explanation"),
    Reads(
        "SCORE",
        "Credits, holds and reversals: the ranking (红黑榜) and funds in place; score.rates: "
        "履约率、落地率、资金到位率",
    ),
    Reads("NOTIFY", "Notifications sent and failed, per project"),
)
# The AsyncAPI document and the permissions only: consumed by `consumers`, not by FastStream.
documented = NatsBroker(settings.nats_url)
document(documented, SERVICE, READS)
consumers: ServiceConsumers | None = None


async def on_rules_loaded(msg: Msg) -> None:
    """`rules.loaded.<service>`: a service loaded (or refused) a published ruleset version."""
    try:
        status = json.loads(msg.data)
        service = msg.subject.rsplit(".", 1)[-1]

        def transaction() -> None:
            with unit_of_work(engine()) as session:
                ingest.record_ruleset(session, service, status)

        async with _write_lock:
            await asyncio.to_thread(retrying, transaction)
    except Exception:  # an announcement is informative; a bad one must not stop the board
        log.exception("board: could not record %s", msg.subject)


# ---- what the pages need besides the tables --------------------------------------------------


class Context:
    """Directory, thresholds and signing targets: data files, read once, re-read on change."""

    def __init__(self) -> None:
        self._directory: Directory | None = None
        self._thresholds: Thresholds | None = None
        self._params: Any = None
        self._stamp: tuple[float, ...] | None = None

    def _files(self) -> list[Path]:
        # Notify's thresholds are the notify ruleset in rulesets/ (or $NOTIFY_TRIGGERS).
        override = (
            [Path(os.environ["NOTIFY_TRIGGERS"])] if os.environ.get("NOTIFY_TRIGGERS") else []
        )
        return [settings.units_file, *override, *sorted(settings.rulesets_dir.glob("*.yaml"))]

    def _fresh(self) -> None:
        stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in self._files())
        if stamp != self._stamp:
            from services.notify.params import _rulesets, load_params

            self._directory = load_directory(settings.units_file)
            previous, self._thresholds = self._thresholds, Thresholds.load()
            if previous != self._thresholds:
                self._relight(self._thresholds)
            self._params = load_params()

            _rulesets.cache_clear()
            self._stamp = stamp

    @staticmethod
    def _relight(t: Thresholds) -> None:
        """Thresholds changed (or first load): every light's first yellow and red day again,
        and the overview's counts if they were kept with other thresholds."""
        with _tables_lock, unit_of_work(engine()) as session:
            n = ingest.relight_all(session, t)
        if n:
            log.warning("board: thresholds changed; %d lights recomputed", n)

    @property
    def directory(self) -> Directory:
        self._fresh()
        assert self._directory is not None
        return self._directory

    @property
    def thresholds(self) -> Thresholds:
        self._fresh()
        assert self._thresholds is not None
        return self._thresholds

    def signing(self, day: dt.date) -> queries.Signing:
        from services.notify.params import signing_targets

        self._fresh()
        params = self._params
        return queries.Signing(
            targets=signing_targets(settings.rulesets_dir, day) or {},
            min_amount=params.signing_behind.min_amount,
            check_after=params.signing_behind.check_after,
            expected_share=params.signing_behind.expected_share,
        )

    def subjects(self) -> list[str]:
        d = self.directory
        return [c for c in d.units if c != d.CENTER] + list(d.leaders)


context = Context()


def clock_now(session: Any) -> dt.date:
    """BOARD_CLOCK=business: the latest business date seen (demo, replays); else today."""
    if os.environ.get("BOARD_CLOCK", "wall") == "business":
        return queries.business_clock(session) or dt.date.today()
    return dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()


# ---- HTTP ----------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await asyncio.to_thread(engine)
    await asyncio.to_thread(lambda: context.thresholds)  # loads them, relights if they changed
    await broker.start()
    assert broker.connection is not None
    if os.environ.get("BOARD_RULES_LOADED", "1") != "0":
        # Off in compose until the board's NATS user may subscribe rules.loaded.* (deploy_cli).
        await broker.connection.subscribe("rules.loaded.*", cb=on_rules_loaded)  # type: ignore[union-attr]
    global consumers
    consumers = await start_consumers(settings, broker, SERVICE, READS, store_run)
    print(f"investflow: {SERVICE} ready", flush=True)
    try:
        yield
    finally:
        await consumers.close()  # the batches in hand are finished, the leases given back
        await broker.stop()
        await asyncio.to_thread(tracing.shutdown)


http = FastAPI(
    title="investflow board",
    description="挂图作战: stages, lights (红黄绿灯), projects, ranking (红黑榜), weekly publication.",
    version="1",
    lifespan=lifespan,
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

AUTH = access.auth_enabled()
verifier = access.Verifier.from_env()
OPEN_PATHS = ("/health", "/login")
COOKIE = "board_token"


def _refuse(request: Request, status: int, problem: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse(
            {"errors": [{"field": "Authorization", "problem": problem}]},
            status_code=status,
            headers={"WWW-Authenticate": 'Bearer realm="investflow board"'}
            if status == 401
            else None,
        )
    from .views import login_page

    return login_page(request, problem, status)


@http.middleware("http")
async def authenticate(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Every path but /health and /login needs a valid token (header or cookie) when AUTH is on."""
    started = time.perf_counter()
    if not AUTH:
        request.state.viewer = access.OPEN
    elif request.url.path in OPEN_PATHS:
        request.state.viewer = None
    else:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = token or request.cookies.get(COOKIE)
        if not token:
            return _refuse(request, 401, "board token required / 须提供看板令牌")
        try:
            request.state.viewer = verifier.verify(token)
        except access.TokenError as exc:
            return _refuse(request, 401, str(exc))
        if request.state.viewer.role == "metrics" and request.url.path != "/metrics":
            return _refuse(
                request, 403, "a metrics token reads /metrics only / 监控令牌只能读取 /metrics"
            )
    response = await call_next(request)
    route = request.scope.get("route")
    PAGE_SECONDS.labels(page=getattr(route, "path", "other")).observe(time.perf_counter() - started)
    return response


from . import views  # noqa: E402  (the routes need the objects above)

views.register(http)
add_ops_routes(http, broker, engine, consumers=lambda: _consumer_infos())


async def _consumer_infos() -> list[Any]:
    return await consumers.infos() if consumers is not None else []


def main() -> None:
    serve(http, SERVICE, 8090)
