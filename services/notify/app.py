"""Notify's wiring: durable consumers on `project.>`, `review.>`, `score.>`; publishers for `notify.*`.

A run of messages is applied in handlers.py: each event type's facts (`facts.FACTS`) and
alerts (`triggers.EVENT_TRIGGERS`), then `plan.plan` stores the notifications — all in one
transaction — then the messages are acked and the dispatcher (dispatch.py) delivers from the
outbox. The scheduler (scheduler.py) adds the time triggers and the weekly report on its clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from sqlalchemy import Engine

from shared import outbox, subjects, tracing
from shared.consumers import Reads, ServiceConsumers, document, start_consumers
from shared.contract import NotifyOutcome
from shared.contract.events import check_event
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import load_directory
from shared.http_ops import start_ops_server
from shared.messaging import configure_logging, log_failure, make_broker
from shared.rules import RulesetRegistry, default_registry, published
from shared.settings import REPO_ROOT, Settings

from . import contacts, store
from .channels import default_channels
from .dispatch import Dispatcher, RetryPolicy, utcnow
from .handlers import consume_run
from .params import load_params, rule_titles
from .render import Renderer
from .scheduler import BusinessClock, Scheduler, WallClock

SERVICE = "notify"
log = logging.getLogger("investflow.notify")

settings = Settings.from_env()
directory = load_directory(settings.units_file)
renderer = Renderer(directory)
broker = make_broker(
    settings, SERVICE, "Notify: alerts sponsors and units, weekly progress reports (包保·定期公布)"
)
app = FastStream(broker)
_engine: Engine | None = None
_dispatcher: Dispatcher | None = None
_tasks: list[asyncio.Task[None]] = []
_stops: list[Callable[[], Awaitable[None]]] = []


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(settings.database_url_for(SERVICE))
        create_tables(_engine, store.TABLES)
    return _engine


def rules() -> RulesetRegistry:
    """The rulesets in force (notify's thresholds, and the review and scoring versions whose
    titles and parameters messages name): rulesets/, then what is published (followed)."""
    return default_registry()


def fixed_params():  # type: ignore[no-untyped-def]
    """NOTIFY_TRIGGERS names a notify ruleset file to use whatever is published (a test or a
    drill); otherwise each day is judged with the version in force on it."""
    return load_params() if os.environ.get("NOTIFY_TRIGGERS") else None


def titles(ruleset_id: str, version: str | None) -> dict[str, dict[str, str]]:
    found = {
        rule.id: {"zh": rule.title.zh, "en": rule.title.en}
        for ruleset in rules().versions(ruleset_id)
        if not version or ruleset.version == version
        for rule in ruleset.rules
    }
    return found or rule_titles(settings.rulesets_dir, ruleset_id, version)


for _subject, _what in (
    (subjects.NOTIFY_SENT, "a notification delivered to its recipient on one channel"),
    (subjects.NOTIFY_FAILED, "a notification given up after its retries (or with no contact)"),
):
    broker.publisher(
        subjects.keyed_template(_subject, "project"),
        schema=NotifyOutcome,
        title=f"{_subject}:Publish",
        description=_what,
    )


async def publish(outcomes: list[tuple[str, str, str]]) -> None:
    """[(subject, body, Nats-Msg-Id)] in order, their acks awaited together."""
    trace = tracing.headers_for()  # the trace of what caused them
    await outbox.publish_acked(
        broker,
        [(subject, body, {"Nats-Msg-Id": msg_id, **trace}) for subject, body, msg_id in outcomes],
    )


def dispatcher() -> Dispatcher:
    global _dispatcher
    if _dispatcher is None:
        dry = os.environ.get("NOTIFY_DRY_RUN", "") in ("1", "true", "yes")
        channels = default_channels(
            lambda note: (
                note.html or renderer.email_html(note.subject, note.body, note.language, note.cause)
            ),
            settings.data_dir / "notify-dry-run.jsonl" if dry else None,
        )
        _dispatcher = Dispatcher(engine(), channels, publish=publish, policy=RetryPolicy.from_env())
    return _dispatcher


def message_key(msg: Msg) -> str:
    kind = subjects.event_type(msg.subject)  # as before keys: a message's key stays its own
    key = (msg.headers or {}).get("Nats-Msg-Id")
    if key:
        return f"{kind}|{key}"[:300]
    return f"{kind}|sha256:{hashlib.sha256(msg.data).hexdigest()}"


async def handle_run(msgs: list[Msg]) -> None:
    """Messages delivered one after another, applied in one transaction (see handlers.py)."""
    kinds = [subjects.event_type(msg.subject) for msg in msgs]
    for kind, msg in zip(kinds, msgs, strict=True):
        check_event(kind, msg.data)  # at the edge: refused at once if not the contract
    events = [
        (kind, json.loads(msg.data), message_key(msg))
        for kind, msg in zip(kinds, msgs, strict=True)
    ]

    def transaction() -> int:
        return consume_run(engine(), events, renderer, titles, utcnow())

    if await asyncio.to_thread(transaction):
        dispatcher().wake.set()


READS = (
    Reads("PROJECT", "leads, milestones, visits, funds, decisions, duplicates"),
    Reads("REVIEW", "screening, committee materials, decisions"),
    Reads("SCORE", "points credited, for alerts and the scoreboard"),
)
# The AsyncAPI document and the permissions only: consumed by `consumers`, not by FastStream.
documented = NatsBroker(settings.nats_url)
document(documented, SERVICE, READS)
consumers: ServiceConsumers | None = None


def seed_contacts() -> None:
    """An empty directory of contacts is filled from NOTIFY_CONTACTS (default deploy/contacts.yaml);
    afterwards `investflow contacts load` is how it changes."""
    path = os.environ.get("NOTIFY_CONTACTS", str(REPO_ROOT / "deploy" / "contacts.yaml"))
    if not path or not Path(path).exists():
        return
    with unit_of_work(engine()) as session:
        if contacts.has_contacts(session):
            return
        n = contacts.store_contacts(
            session, contacts.read_contacts(Path(path), directory), directory
        )
    log.info("notify: loaded %d contacts from %s", n, path)


def scheduler() -> Scheduler:
    mode = os.environ.get("NOTIFY_CLOCK", "wall")
    clock = BusinessClock(engine()) if mode == "business" else WallClock()
    return Scheduler(
        engine(), renderer, directory, fixed_params(), settings.rulesets_dir, clock, rules=rules()
    )


async def run_scheduler(every_s: float) -> None:
    sched = scheduler()
    while True:
        try:
            if await asyncio.to_thread(sched.tick):
                dispatcher().wake.set()
        except Exception as exc:
            log_failure(log, "notify: scheduler tick failed; trying again next tick", exc)
        await asyncio.sleep(every_s)


@app.on_startup
async def _startup() -> None:
    await asyncio.to_thread(engine)
    await asyncio.to_thread(fixed_params)  # a bad NOTIFY_TRIGGERS file stops the start
    await asyncio.to_thread(rules)
    # Published notify versions load before the scheduler's first tick, and live after that.
    _stops.append(await published.start_following(settings.nats_url, rules(), SERVICE))
    with contextlib.suppress(Exception):  # two replicas seeding at once: one wins
        await asyncio.to_thread(seed_contacts)


@app.after_startup
async def _ready() -> None:
    tick_s = float(os.environ.get("NOTIFY_TICK_S", "60"))
    poll_s = float(os.environ.get("NOTIFY_POLL_S", "1"))
    _tasks.append(asyncio.create_task(dispatcher().run(poll_s)))
    _tasks.append(asyncio.create_task(run_scheduler(tick_s)))
    global consumers
    consumers = await start_consumers(settings, broker, SERVICE, READS, handle_run)
    _stops.append(await start_ops_server(SERVICE, broker, engine, None, consumers.infos))
    print(f"investflow: {SERVICE} ready", flush=True)


@app.on_shutdown
async def _shutdown() -> None:
    for stop in _stops:
        await stop()
    if consumers is not None:
        await consumers.close()  # the batches in hand are finished, the leases given back
    for task in _tasks:
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)
    await asyncio.to_thread(tracing.shutdown)


def main() -> None:
    configure_logging(SERVICE)
    asyncio.run(app.run())
