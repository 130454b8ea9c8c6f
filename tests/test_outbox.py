"""The outbox: rows published in order, marked published afterwards, many per statement."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlmodel import select

from services.intake.store import TABLES, Outbox
from shared import outbox
from shared.db import create_tables, make_engine, unit_of_work


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def publish(self, body: bytes, subject: str, **kw: Any) -> None:
        self.sent.append((subject, kw["headers"]["Nats-Msg-Id"]))


async def test_rows_are_published_in_order_then_marked_together(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    create_tables(engine, TABLES)
    rows = [
        Outbox(msg_id=f"m{i}", source=str(i // 2), subject="project.lead", body="{}")
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
    broker = Recorder()
    for i in range(0, 40, 2):
        await outbox.publish(broker, engine, Outbox, rows[i : i + 2])  # type: ignore[arg-type]
    assert [mid for _, mid in broker.sent] == [f"m{i}" for i in range(40)]
    await outbox.flush_marks()
    with unit_of_work(engine) as session:
        assert all(r.published_at is not None for r in session.exec(select(Outbox)).all())
        assert outbox.pending_for(session, Outbox, "3") == []
    assert len(updates) == 1, "twenty publishes should be marked by one statement"


async def test_marks_happen_without_being_asked(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    create_tables(engine, TABLES)
    row = Outbox(msg_id="x", source="1", subject="project.lead", body="{}")
    with unit_of_work(engine) as session:
        session.add(row)
    await outbox.publish(Recorder(), engine, Outbox, [row])  # type: ignore[arg-type]
    with unit_of_work(engine) as session:
        assert len(outbox.pending_for(session, Outbox, "1")) == 1
    await asyncio.sleep(outbox._Marks.DELAY_S + 0.5)
    with unit_of_work(engine) as session:
        assert outbox.pending_for(session, Outbox, "1") == []
