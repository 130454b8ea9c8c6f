"""The outbox: rows published in order, marked published afterwards, many per statement.

A real nats-server and a real FastStream broker: what a row becomes is read back from the
stream, and a row is marked published only once the server acked it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker
from sqlalchemy import event
from sqlmodel import select

from investflow.nats_server import NatsServer, free_port
from services.intake.store import TABLES, Outbox
from shared import outbox
from shared.db import create_tables, make_engine, unit_of_work
from shared.messaging import make_broker
from shared.settings import Settings
from shared.streams import ensure_streams

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    with NatsServer(free_port(), tmp_path / "js") as nats_server:
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream(), 60)
        await nc.close()
        yield nats_server.url


@pytest.fixture
async def broker(server: str) -> AsyncIterator[NatsBroker]:
    b = make_broker(dataclasses.replace(Settings.from_env(), nats_url=server), "outbox-test")
    await b.start()
    yield b
    await b.stop()


async def stored(url: str, stream: str) -> list[tuple[str, str | None]]:
    """(Nats-Msg-Id, traceparent) of every message in `stream`, in stream order."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    out = []
    last = (await js.stream_info(stream)).state.last_seq
    for seq in range(1, last + 1):
        msg = await js.get_msg(stream, seq)
        headers = msg.headers or {}
        out.append((headers["Nats-Msg-Id"], headers.get("traceparent")))
    await nc.close()
    return out


async def test_rows_are_published_in_order_then_marked_together(
    tmp_path: Path, server: str, broker: NatsBroker
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    create_tables(engine, TABLES)
    rows = [
        Outbox(msg_id=f"m{i}", source=str(i // 2), subject="project.lead.0000abcd", body="{}")
        for i in range(40)
    ]
    with unit_of_work(engine) as session:
        session.add_all(rows)
    updates: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda *a: updates.append(a[2]) if a[2].lstrip().upper().startswith("UPDATE") else None,
    )
    for i in range(0, 40, 2):
        await outbox.publish(broker, engine, Outbox, rows[i : i + 2])
    assert [mid for mid, _ in await stored(server, "PROJECT")] == [f"m{i}" for i in range(40)]
    await outbox.flush_marks()
    with unit_of_work(engine) as session:
        assert all(r.published_at is not None for r in session.exec(select(Outbox)).all())
        assert outbox.pending_for(session, Outbox, "3") == []
    assert len(updates) == 1, "twenty publishes should be marked by one statement"


async def test_a_batch_keeps_its_order_and_each_rows_trace(
    tmp_path: Path, server: str, broker: NatsBroker
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    create_tables(engine, TABLES)
    rows = [outbox.Row(f"b{i}", str(i), "project.funds.0000abcd", "{}") for i in range(600)]
    trace = [{"traceparent": f"00-{i + 1:032x}-{i + 1:016x}-01"} for i in range(600)]
    # More rows than are ever in flight at once: they go out in chunks, still in order.
    await outbox.publish_traced(broker, engine, Outbox, list(zip(rows, trace, strict=True)))
    assert await stored(server, "PROJECT") == [
        (r.msg_id, t["traceparent"]) for r, t in zip(rows, trace, strict=True)
    ]
    # Published again (a redelivered message): JetStream drops every copy by its id.
    await outbox.publish_traced(broker, engine, Outbox, list(zip(rows, trace, strict=True)))
    assert len(await stored(server, "PROJECT")) == 600


async def test_a_row_the_server_refuses_stays_unmarked_and_raises(
    tmp_path: Path, server: str, broker: NatsBroker
) -> None:
    """Marked only once acked: the refused row is published again on the redelivery of the
    message that caused it; the rows the server did ack are marked."""
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    create_tables(engine, TABLES)
    rows = [
        Outbox(msg_id="ok1", source="1", subject="project.lead.0000abcd", body="{}"),
        Outbox(msg_id="lost", source="2", subject="nowhere.lead", body="{}"),  # no such stream
        Outbox(msg_id="ok2", source="3", subject="project.lead.0000abcd", body="{}"),
    ]
    with unit_of_work(engine) as session:
        session.add_all(rows)
    with pytest.raises(nats.errors.Error):
        await outbox.publish(broker, engine, Outbox, rows)
    await outbox.flush_marks()
    with unit_of_work(engine) as session:
        unmarked = session.exec(select(Outbox.msg_id).where(Outbox.published_at.is_(None))).all()  # type: ignore[union-attr]
    assert list(unmarked) == ["lost"]


async def test_marks_happen_without_being_asked(tmp_path: Path, broker: NatsBroker) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    create_tables(engine, TABLES)
    row = Outbox(msg_id="x", source="1", subject="project.lead.0000abcd", body="{}")
    with unit_of_work(engine) as session:
        session.add(row)
    await outbox.publish(broker, engine, Outbox, [row])
    with unit_of_work(engine) as session:
        assert len(outbox.pending_for(session, Outbox, "1")) == 1
    await asyncio.sleep(outbox._Marks.DELAY_S + 0.5)
    with unit_of_work(engine) as session:
        assert outbox.pending_for(session, Outbox, "1") == []
