"""Scoring's wiring: two durable subscriptions, the publishers, and the HTTP scoreboard.

A message is read top to bottom: `parse` turns it into a contract model (or dead-letters it
with the reason), `record.apply` stores the fact and settles the funds records it moves, in
one transaction with the events to emit (`ledger.settle` decides, `decide.score` scores);
then those events are published with their deterministic Nats-Msg-Id, marked published, and
only then is the message acknowledged.

Replicas share the durable consumers. Two of them may race on the same funds record; the
ledger's unique key lets one win, and the other's retried transaction finds the credit made.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy import Engine, or_
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import col, select

from shared import outbox, subjects, tracing
from shared.consumers import Reads, ServiceConsumers, document, start_consumers
from shared.contract import (
    AssessmentRates,
    Credited,
    Held,
    Reversed,
)
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import load_directory
from shared.http_ops import add_ops_routes, serve
from shared.messaging import dead_letter, delivery_count, make_broker, stream_seq
from shared.openapi import error_response, make_exact
from shared.rules import RulesetRegistry, published
from shared.rules.ruletest import gate_on_rule_tests
from shared.settings import Settings

from . import assessment_rates, scoreboard, store
from .inputs import BadInput, inbox_key, parse
from .record import Applied, apply, resettle_waiting_for_rules

SERVICE = "scoring"
log = logging.getLogger("investflow.scoring")

settings = Settings.from_env()
broker = make_broker(
    settings, SERVICE, "Scoring: funds in place × multipliers, credited per subject (考核办法·计分)"
)
_engine: Engine | None = None
_rules: RulesetRegistry | None = None

MESSAGES = Counter(
    "investflow_scoring_messages_total",
    "Inbound messages by subject and outcome",
    ["subject", "outcome"],
)
EMITTED = Counter("investflow_scoring_events_total", "score.* events emitted", ["subject"])


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(settings.database_url_for(SERVICE))
        create_tables(_engine, store.TABLES)
    return _engine


def rules() -> RulesetRegistry:
    """The rulesets in force, each loaded only if it validates and passes its rule tests."""
    global _rules
    if _rules is None:
        directory = settings.rulesets_dir
        _rules = RulesetRegistry.from_paths(
            [directory], gate=gate_on_rule_tests(directory / "tests")
        )
    return _rules


broker.publisher(
    subjects.keyed_template(subjects.SCORE_CREDITED, "project"),
    schema=Credited,
    title=f"{subjects.SCORE_CREDITED}:Publish",
    description="a funds record credited, once: points, multiplier, matched rules and the subjects credited",
)
broker.publisher(
    subjects.keyed_template(subjects.SCORE_HELD, "project"),
    schema=Held,
    title=f"{subjects.SCORE_HELD}:Publish",
    description="a funds record held (not recognised yet, no exchange rate for its day, ...), with the reason; "
    "emitted again only when the reason changes",
)
broker.publisher(
    subjects.keyed_template(subjects.SCORE_RATES, "year"),
    schema=AssessmentRates,
    title=f"{subjects.SCORE_RATES}:Publish",
    description="履约率、落地率、资金到位率 of an assessment year per project, attracting unit and "
    "county (the scoreboard's figures), with their definitions and the scoring ruleset version; "
    "emitted when a figure changes (projects: the changed ones), at most once a second",
)
broker.publisher(
    subjects.keyed_template(subjects.SCORE_REVERSED, "project"),
    schema=Reversed,
    title=f"{subjects.SCORE_REVERSED}:Publish",
    description="a credit taken back (recognition withdrawn, or credited again to a new sponsor leader)",
)


# --- one message -----------------------------------------------------------------------------


T = TypeVar("T")


def retrying(work: Callable[[], T], attempts: int = 6) -> T:
    """Run a transaction, again on a lost race (unique key, lock, deadlock): it then sees the winner."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts:
                raise
            log.info("scoring: transaction retried (%s)", type(exc.orig).__name__)
            time.sleep(0.02 * attempt)
    raise AssertionError("unreachable")


async def process_run(msgs: list[Msg]) -> None:
    """Apply `msgs` in order in one transaction, then publish the events they cause."""
    items = []
    for msg in msgs:
        subject = subjects.event_type(msg.subject)
        try:
            event = parse(subject, msg.data)
        except BadInput as exc:
            # Retrying cannot fix it: straight to the dead-letter stream, with the reason.
            log.error("scoring: dead-lettered bad input: %s", exc)
            await dead_letter(broker, SERVICE, msg, exc, delivery_count(msg))
            MESSAGES.labels(subject=subject, outcome="bad_input").inc()
            continue
        if event is None:
            MESSAGES.labels(subject=subject, outcome="skipped").inc()
            continue
        items.append((subject, event, inbox_key(subject, event, msg.headers, msg.data), msg))
    if not items:
        return
    rules_in_force = rules()

    def transaction() -> list[Applied]:
        now = dt.datetime.now(dt.UTC)
        with unit_of_work(engine()) as session:
            return [
                apply(session, event, key, subject, stream_seq(msg), rules_in_force, now)
                for subject, event, key, msg in items
            ]

    # A lost race (another replica, same project) retries the whole run: it then sees the winner.
    applied = await asyncio.to_thread(retrying, transaction)
    # The run's rows in order in one call: their acks are awaited together, not per message.
    rows = [row for result in applied for row in result.outbox]
    await outbox.publish(broker, engine(), store.Outbox, rows)  # type: ignore[arg-type]
    for (subject, *_), result in zip(items, applied, strict=True):
        for row in result.outbox:
            EMITTED.labels(subject=row.subject).inc()
        MESSAGES.labels(subject=subject, outcome=result.outcome).inc()
    _rates_stale.set()


# --- score.rates: the assessment's rates, when they change --------------------------------------

RATES_INTERVAL_S = float(os.environ.get("SCORING_RATES_INTERVAL", "1"))
_rates_stale = asyncio.Event()  # set after every run of messages; the publisher clears it


async def _publish_pending_rates() -> None:
    """score.rates rows committed but not published (a crash in between): out first, in
    order. A copy that did get out is dropped by its Nats-Msg-Id, or by the board's revision."""

    def pending() -> list[store.Outbox]:
        with unit_of_work(engine()) as session:
            rows = session.exec(
                select(store.Outbox).where(
                    or_(
                        store.Outbox.subject == subjects.SCORE_RATES,  # rows from before keys
                        col(store.Outbox.subject).startswith(f"{subjects.SCORE_RATES}."),
                    ),
                    store.Outbox.published_at.is_(None),  # type: ignore[union-attr]
                )
            ).all()
        order = lambda r: [int(x) for x in r.msg_id.rsplit(":", 3)[1:]]  # noqa: E731
        return sorted(rows, key=order)

    await outbox.publish(broker, engine(), store.Outbox, await asyncio.to_thread(pending))  # type: ignore[arg-type]


async def publish_rates() -> list[store.Outbox]:
    def transaction() -> list[store.Outbox]:
        with unit_of_work(engine()) as session:
            return assessment_rates.settle(session, rules())

    rows = await asyncio.to_thread(retrying, transaction)
    await outbox.publish(broker, engine(), store.Outbox, rows)  # type: ignore[arg-type]
    for row in rows:
        EMITTED.labels(subject=row.subject).inc()
    return rows


async def rates_publisher() -> None:
    """Recompute the rates when facts changed, at most once per RATES_INTERVAL_S: reading a
    year's facts per message would cost more than the messages (assessment_rates.py)."""
    await _publish_pending_rates()
    _rates_stale.set()  # a restart: whatever changed while it was down
    took = 0.0
    while True:
        await _rates_stale.wait()
        # One computation for a busy moment's changes; at least twice as long as the last
        # one took, so a province-size year spends at most a third of the time on it.
        await asyncio.sleep(max(RATES_INTERVAL_S, 2 * took))
        _rates_stale.clear()
        started = time.monotonic()
        try:
            await publish_rates()
        except Exception:  # the next tick tries again; the facts are stored, nothing is lost
            log.exception("scoring: publishing the rates failed")
            _rates_stale.set()
        took = time.monotonic() - started


READS = (
    Reads(
        "PROJECT",
        "Project facts: lead, decision (sponsor leader), milestone (signed), funds, rates; "
        "other kinds are skipped",
    ),
    Reads(
        "REVIEW",
        "Recognition for the assessment (认定): credits held funds, or reverses credits when "
        "withdrawn",
        only=subjects.REVIEW_RECOGNITION,
    ),
)
# The AsyncAPI document and the permissions only: consumed by `consumers`, not by FastStream.
documented = NatsBroker(settings.nats_url)
document(documented, SERVICE, READS)
consumers: ServiceConsumers | None = None


async def on_rules_loaded(msg: Msg) -> None:
    """A replica loaded a published version: records held for want of a ruleset may go now."""
    try:
        status = json.loads(msg.data)
        if not status.get("loaded"):
            return
        source = f"rules.loaded:{status['key']}@{status['revision']}:{uuid.uuid4().hex[:8]}"

        def transaction() -> Applied:
            with unit_of_work(engine()) as session:
                return resettle_waiting_for_rules(session, source, rules(), dt.datetime.now(dt.UTC))

        applied = await asyncio.to_thread(retrying, transaction)
        await outbox.publish(broker, engine(), store.Outbox, applied.outbox)  # type: ignore[arg-type]
        _rates_stale.set()  # another ruleset version: other definitions, other credits
    except Exception:  # the next publication, or the next event of each project, tries again
        log.exception("scoring: settling records held for a ruleset failed")


# ---- HTTP: the scoreboard ----------------------------------------------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await asyncio.to_thread(engine)
    await asyncio.to_thread(rules)
    # Published versions are loaded before the first message is scored, and live after that.
    stop_following = await published.start_following(settings.nats_url, rules(), SERVICE)
    await broker.start()
    assert broker.connection is not None
    await broker.connection.subscribe(  # type: ignore[union-attr]
        published.loaded_subject(SERVICE), cb=on_rules_loaded
    )
    global consumers
    consumers = await start_consumers(settings, broker, SERVICE, READS, process_run)
    rates_task = asyncio.create_task(rates_publisher())
    print(f"investflow: {SERVICE} ready", flush=True)
    try:
        yield
    finally:
        await consumers.close()  # the batches in hand finish, the leases go back
        rates_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rates_task
        await broker.stop()
        await stop_following()
        await outbox.flush_marks()
        await asyncio.to_thread(tracing.shutdown)


http = FastAPI(
    title="investflow scoring",
    description="The assessment scoreboard (招商引资考核计分): points per assessed subject, "
    "RMB counted, projects counted, rank; quarterly signing targets, plan vs actual.",
    version="1",
    lifespan=lifespan,
    docs_url=None,  # Swagger UI's assets come from a CDN; shared/openapi.py serves a local page
    redoc_url=None,
)
make_exact(http)


class FundsRecord(BaseModel):
    funds_id: str
    amount: str = Field(description="a decimal string, in the record's currency")
    currency: str
    arrived_on: dt.date
    state: str
    hold_reason: str | None
    points: str | None
    multiplier: Any
    credited_to: list[Any]
    explanation: dict[str, Any] | None


class ProjectFunds(BaseModel):
    project_id: str
    funds: list[FundsRecord]


SCOREBOARD_200: dict[str, Any] = {
    "description": "the scoreboard: JSON, CSV or a text table, as `format` asks",
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "text/csv": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
    },
}

_directory: Any = None


def directory() -> Any:
    global _directory
    if _directory is None:
        try:
            _directory = load_directory(settings.units_file)
        except Exception:
            _directory = False
    return _directory or None


# Exactly what the spec says: parse_quarter alone would also take " q1 " (it strips).
QUARTER_PATTERN = r"^([Qq]?[1-4])?$"


@http.get(
    "/v1/scoreboard",
    response_class=Response,
    responses={200: SCOREBOARD_200, 422: error_response("bad year, quarter or format")},
)
async def get_scoreboard(
    year: int = Query(..., ge=1990, le=2100),
    quarter: str | None = Query(
        default=None,
        description="Q1..Q4 (or 1..4); default: the whole year",
        # In the spec only: the check below answers with its own words.
        json_schema_extra={"pattern": QUARTER_PATTERN},
    ),
    format: str = Query(default="json", pattern="^(json|csv|table)$"),
) -> Response:
    try:
        if quarter is not None and not re.fullmatch(QUARTER_PATTERN, quarter):
            raise ValueError(f"quarter {quarter!r}: expected Q1, Q2, Q3 or Q4")
        q = scoreboard.parse_quarter(quarter)
    except ValueError as exc:
        return JSONResponse(
            {"errors": [{"field": "quarter", "problem": f"{exc} / 季度须为 Q1–Q4"}]},
            status_code=422,
        )
    board = await asyncio.to_thread(
        scoreboard.build, engine(), year, q, directory=directory(), rules=rules()
    )
    if format == "json":
        return JSONResponse(board.to_json())
    media = "text/csv; charset=utf-8" if format == "csv" else "text/plain; charset=utf-8"
    return PlainTextResponse(scoreboard.render(board, format), media_type=media)


@http.get(
    "/v1/projects/{project_id}/funds",
    response_model=ProjectFunds,
    responses={404: error_response("no funds records for this project")},
)
async def get_funds(project_id: str) -> JSONResponse:
    """Where each funds record of a project stands: held (why) or credited (points)."""

    def load() -> list[dict[str, Any]]:
        with unit_of_work(engine()) as session:
            out = []
            for record in store.funds_of(session, project_id):
                credit = store.active_credit(session, record)
                out.append(
                    {
                        "funds_id": record.funds_id,
                        "amount": str(store.from_fen(record.amount_fen)),
                        "currency": record.currency,
                        "arrived_on": record.arrived_on.isoformat(),
                        "state": record.state,
                        "hold_reason": record.hold_reason,
                        "points": str(store.from_fen(credit.points_fen)) if credit else None,
                        "multiplier": credit.multiplier if credit else None,
                        "credited_to": json.loads(credit.credited_to) if credit else [],
                        "explanation": json.loads(credit.explanation) if credit else None,
                    }
                )
            return out

    records = await asyncio.to_thread(load)
    if not records:
        return JSONResponse(
            {
                "errors": [
                    {
                        "field": "project_id",
                        "problem": "no funds records for this project / 无到位资金记录",
                    }
                ]
            },
            status_code=404,
        )
    return JSONResponse({"project_id": project_id, "funds": records})


add_ops_routes(http, broker, engine, SERVICE, store.Outbox, lambda: _consumer_infos())


async def _consumer_infos() -> list[Any]:
    return await consumers.infos() if consumers is not None else []


def main() -> None:
    serve(http, SERVICE, 8082)
