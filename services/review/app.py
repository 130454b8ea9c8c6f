"""Review's wiring: PROJECT's partitions (shared/consumers.py), publishers for `review.*`.

Screening (初步筛选), committee materials (评审会材料), the committee's decision (集体决策)
and recognition for the assessment (认定): each message is parsed into its contract model,
`handlers.HANDLERS[event type]` decides inside one transaction with the events to emit
(cases.py); they are published, then the message is acked.
"""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from sqlalchemy import Engine

from shared import outbox, subjects, tracing
from shared.consumers import Reads, ServiceConsumers, document, start_consumers
from shared.contract import Decided, MaterialsStatus, Recognition, Refused, Screened
from shared.contract.events import parse_event
from shared.db import create_tables, make_engine, unit_of_work
from shared.http_ops import start_ops_server
from shared.messaging import configure_logging, make_broker
from shared.rules import RulesetRegistry, default_registry, published
from shared.settings import Settings

from . import handlers, store

SERVICE = "review"
log = logging.getLogger("investflow.review")

settings = Settings.from_env()
broker = make_broker(
    settings, SERVICE, "Review: screening, joint review, recognition (联审联批·认定)"
)
app = FastStream(broker)
_engine: Engine | None = None


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(settings.database_url_for(SERVICE))
        create_tables(_engine, store.TABLES)
    return _engine


def rules() -> RulesetRegistry:
    """The rulesets in force: each loaded only if it validates and passes its rule tests."""
    return default_registry()


for _subject, _model, _what in (
    (
        subjects.REVIEW_SCREENED,
        Screened,
        "accepted with its track, or terminated with the rules that say why (告知终止洽谈)",
    ),
    (
        subjects.REVIEW_MATERIALS,
        MaterialsStatus,
        "committee materials complete or missing, and the agenda deadline",
    ),
    (
        subjects.REVIEW_DECIDED,
        Decided,
        "the committee's decision, sponsor leader (包保县级领导) and project HQ (指挥部)",
    ),
    (
        subjects.REVIEW_RECOGNITION,
        Recognition,
        "whether the project counts for the assessment (认定), and what blocks it",
    ),
    (
        subjects.REVIEW_REFUSED,
        Refused,
        "a committee decision not taken (unknown meeting, not on its agenda, decided already, "
        "materials late, an approval missing what it must name), with every reason",
    ),
):
    broker.publisher(
        subjects.keyed_template(_subject, "project"),
        schema=_model,
        title=f"{_subject}:Publish",
        description=_what,
    )


async def handle_run(msgs: list[Msg]) -> None:
    """Apply `msgs` in order in one transaction, then publish the events they cause."""
    events = []
    for msg in msgs:
        event_type = subjects.event_type(msg.subject)
        # At the edge: refused at once if not the contract; a type it does not name is skipped.
        event = parse_event(event_type, msg.data)
        if event is not None:
            events.append((event_type, event))
    in_force = rules()

    def transaction() -> list[store.Outbox]:
        with unit_of_work(engine()) as session:
            return [row for t, e in events for row in handlers.handle(session, t, e, in_force)]

    rows = await asyncio.to_thread(transaction)
    await outbox.publish(broker, engine(), store.Outbox, rows)


READS = (Reads("PROJECT", "canonical project events from intake"),)
# The AsyncAPI document and the permissions only: consumed by `consumers`, not by FastStream.
documented = NatsBroker(settings.nats_url)
document(documented, SERVICE, READS)
consumers: ServiceConsumers | None = None
_stop_following = None


@app.on_startup
async def _startup() -> None:
    global _stop_following
    await asyncio.to_thread(engine)
    await asyncio.to_thread(rules)
    # Published versions load before the first message is decided, and live after that.
    _stop_following = await published.start_following(settings.nats_url, rules(), SERVICE)


@app.on_shutdown
async def _shutdown() -> None:
    if consumers is not None:
        await consumers.close()  # the batches in hand are finished, the leases given back
    if _stop_ops is not None:
        await _stop_ops()
    if _stop_following is not None:
        await _stop_following()
    await outbox.flush_marks()
    await asyncio.to_thread(tracing.shutdown)


_stop_ops = None


@app.after_startup
async def _ready() -> None:
    global _stop_ops, consumers
    consumers = await start_consumers(settings, broker, SERVICE, READS, handle_run)
    _stop_ops = await start_ops_server(  # /health, /metrics
        SERVICE, broker, engine, store.Outbox, consumers.infos
    )
    print(f"investflow: {SERVICE} ready", flush=True)


def main() -> None:
    configure_logging(SERVICE)
    asyncio.run(app.run())
