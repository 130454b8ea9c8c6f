"""The transactional outbox every service uses to emit events exactly once.

A handler writes the facts a message causes and the events they announce in one
transaction; only after commit are the events published, each with a deterministic
`Nats-Msg-Id`; only then is the message acked; rows are marked published soon after. A crash anywhere
in between leaves either nothing (the message is redelivered and redone) or unpublished
rows (the redelivery publishes them; JetStream drops a copy that did get out).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from faststream.nats import NatsBroker
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


async def publish(
    broker: NatsBroker, engine: Engine, table: type[OutboxRow], rows: list[OutboxRow]
) -> None:
    """Publish `rows` in order; they are marked published a moment later, many at a time.

    The mark only spares a redelivery of the same message from publishing them again, and
    JetStream drops such a copy by its Nats-Msg-Id anyway; so a mark lost to a crash costs
    nothing, and one UPDATE per busy moment costs far less than a transaction per message.
    """
    if not rows:
        return
    for row in rows:
        await broker.publish(
            row.body.encode(),
            row.subject,
            headers={"Nats-Msg-Id": row.msg_id, **tracing.headers_for(row.source)},
            stream=stream_of(row.subject),
        )
    _marks.add(engine, table, [row.msg_id for row in rows])


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
