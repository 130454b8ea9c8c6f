"""The transactional outbox every service uses to emit events exactly once.

A handler writes the facts a message causes and the events they announce in one
transaction; only after commit are the events published, each with a deterministic
`Nats-Msg-Id`; only then is the message acked; rows are marked published soon after. A crash anywhere
in between leaves either nothing (the message is redelivered and redone) or unpublished
rows (the redelivery publishes them; JetStream drops a copy that did get out).
Rows go out many at a time with their acks awaited together (`publish_traced`), not one
round trip each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from sqlalchemy import Engine, update
from sqlmodel import Field, Session, SQLModel, select

from . import tracing

log = logging.getLogger("investflow.outbox")


class OutboxRow(SQLModel):
    """Columns of a service's outbox table; each service subclasses it with `table=True`."""

    msg_id: str = Field(primary_key=True, max_length=300)
    source: str = Field(index=True, max_length=300)  # what caused it: an inbound row, an event id
    subject: str = Field(max_length=100)
    body: str
    published_at: dt.datetime | None = Field(default=None, index=True)


def stream_of(subject: str) -> str:
    return subject.split(".", 1)[0].upper()


def pending_for(session: Session, table: type[OutboxRow], source: str) -> list[OutboxRow]:
    query = select(table).where(table.source == source, table.published_at.is_(None))  # type: ignore[union-attr]
    return list(session.exec(query).all())


class Pending(Protocol):
    """What publishing needs of a row: an OutboxRow, or a plain record of its columns."""

    msg_id: str
    source: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as written with a Core INSERT: no ORM instance needed to publish it."""

    msg_id: str
    source: str
    subject: str
    body: str


# Unacked publishes per connection at most; a batch is published in chunks of this many,
# each chunk's acks awaited before the next (so memory and the server's backlog stay bounded).
MAX_IN_FLIGHT = 256
# How long a chunk may wait for its acks (one publish waited 0.5 s in FastStream's default).
ACK_TIMEOUT_S = 5.0


async def publish(
    broker: NatsBroker, engine: Engine, table: type[OutboxRow], rows: Sequence[Pending]
) -> None:
    """Publish `rows` in order; they are marked published a moment later, many at a time.

    Each row carries the trace of its source (`tracing.headers_for`); `publish_traced` takes
    the headers ready made, for a caller that follows another trace per row.
    """
    await publish_traced(
        broker, engine, table, [(row, tracing.headers_for(row.source)) for row in rows]
    )


async def publish_traced(
    broker: NatsBroker,
    engine: Engine,
    table: type[OutboxRow],
    rows: Sequence[tuple[Pending, dict[str, str]]],
) -> None:
    """Publish `rows` in order, each with its trace headers, the acks awaited per chunk.

    The rows of a chunk go out back to back on one connection, so the server stores them in
    this order, and a chunk raises the first error any of them met once all have answered:
    a row is marked published only once its own ack came, and the message that caused a
    row not acked is redelivered and publishes it again (its Nats-Msg-Id drops any copy).

    The mark only spares a redelivery of the same message from publishing them again, and
    JetStream drops such a copy by its Nats-Msg-Id anyway; so a mark lost to a crash costs
    nothing, and one UPDATE per busy moment costs far less than a transaction per message.
    """
    if not rows:
        return
    js = _jetstream(broker)
    for i in range(0, len(rows), MAX_IN_FLIGHT):
        chunk = rows[i : i + MAX_IN_FLIGHT]
        answers = await _acked(
            js,
            [(row.subject, row.body, {"Nats-Msg-Id": row.msg_id, **trace}) for row, trace in chunk],
        )
        acked = [
            row.msg_id for (row, _), a in zip(chunk, answers, strict=True) if isinstance(a, PubAck)
        ]
        if acked:
            _marks.add(engine, table, acked)
        failed = next((a for a in answers if isinstance(a, BaseException)), None)
        if failed is not None:
            raise failed


async def publish_acked(
    broker: NatsBroker, messages: Sequence[tuple[str, str, dict[str, str]]]
) -> None:
    """Publish (subject, body, headers) in order, their acks awaited per chunk, not one round
    trip each; raises the first error any of them met once all have answered."""
    js = _jetstream(broker)
    for i in range(0, len(messages), MAX_IN_FLIGHT):
        answers = await _acked(js, messages[i : i + MAX_IN_FLIGHT])
        failed = next((a for a in answers if isinstance(a, BaseException)), None)
        if failed is not None:
            raise failed


async def _acked(
    js: JetStreamContext, chunk: Sequence[tuple[str, str, dict[str, str]]]
) -> list[PubAck | BaseException]:
    """One chunk out back to back on one connection (so stored in this order), then its acks."""
    acks: list[asyncio.Future[PubAck]] = []
    try:
        for subject, body, headers in chunk:
            acks.append(
                await js.publish_async(
                    subject,
                    body.encode(),
                    wait_stall=ACK_TIMEOUT_S,
                    stream=stream_of(subject),
                    headers=headers,
                )
            )
        return list(
            await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), ACK_TIMEOUT_S)
        )
    except BaseException:
        for ack in acks:  # a timeout cancelled them; anything else leaves them to end
            ack.cancel()
        raise


# broker id -> (its connection, a JetStream context on it): publish_async answers through one
# reply subscription per context, made on first use; a restarted broker has a new connection.
_contexts: dict[int, tuple[Client, JetStreamContext]] = {}


def _jetstream(broker: NatsBroker) -> JetStreamContext:
    connection = broker.connection
    known = _contexts.get(id(broker))
    if known is None or known[0] is not connection:
        known = (connection, connection.jetstream(publish_async_max_pending=MAX_IN_FLIGHT))
        _contexts[id(broker)] = known
    return known[1]


async def flush_marks() -> None:
    """Mark everything published so far; services call it on shutdown."""
    await _marks.flush()


class _Marks:
    DELAY_S = 0.25
    CHUNK = 500  # bound parameters per statement, well under SQLite's limit

    def __init__(self) -> None:
        self.pending: dict[tuple[int, str], tuple[Engine, type[OutboxRow], list[str]]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, engine: Engine, table: type[OutboxRow], ids: list[str]) -> None:
        key = (id(engine), str(table.__tablename__))
        self.pending.setdefault(key, (engine, table, []))[2].extend(ids)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._soon())

    async def _soon(self) -> None:
        await asyncio.sleep(self.DELAY_S)
        await self.flush()

    async def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, {}
            for engine, table, ids in batch.values():
                try:
                    await asyncio.to_thread(self._mark, engine, table, ids)
                except Exception as exc:  # unmarked rows are only republished, and dropped
                    log.warning("outbox: marking %d rows published failed: %s", len(ids), exc)

    def _mark(self, engine: Engine, table: type[OutboxRow], ids: list[str]) -> None:
        t = table.__table__  # type: ignore[attr-defined]
        now = dt.datetime.now(dt.UTC)
        with engine.begin() as conn:
            for i in range(0, len(ids), self.CHUNK):
                chunk = ids[i : i + self.CHUNK]
                conn.execute(
                    update(t)
                    .where(t.c.msg_id.in_(chunk), t.c.published_at.is_(None))
                    .values(published_at=now)
                )


_marks = _Marks()
