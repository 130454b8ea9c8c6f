"""The transactional outbox every service uses to emit events exactly once.

A handler writes the facts a message causes and the events they announce in one
transaction; only after commit are the events published, each with a deterministic
`Nats-Msg-Id`, and marked published; only then is the message acked. A crash anywhere
in between leaves either nothing (the message is redelivered and redone) or unpublished
rows (the redelivery publishes them; JetStream drops a copy that did get out).
"""

from __future__ import annotations

import asyncio
import datetime as dt

from faststream.nats import NatsBroker
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, select

from .db import unit_of_work


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


async def publish(
    broker: NatsBroker, engine: Engine, table: type[OutboxRow], rows: list[OutboxRow]
) -> None:
    """Publish `rows` in order, then mark them published in one short transaction."""
    if not rows:
        return
    for row in rows:
        await broker.publish(
            row.body.encode(),
            row.subject,
            headers={"Nats-Msg-Id": row.msg_id},
            stream=stream_of(row.subject),
        )
    ids = [row.msg_id for row in rows]
    now = dt.datetime.now(dt.UTC)

    def mark() -> None:
        with unit_of_work(engine) as session:
            for msg_id in ids:
                stored = session.get(table, msg_id)
                if stored is not None and stored.published_at is None:
                    stored.published_at = now
                    session.add(stored)

    await asyncio.to_thread(mark)
