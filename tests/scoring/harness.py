"""Scoring's write path on a real database, without NATS: apply events as the consumer does."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from services.scoring import store
from services.scoring.inputs import inbox_key, subject_of
from services.scoring.record import Applied, Event, apply
from shared import subjects
from shared.db import create_tables, make_engine, unit_of_work
from shared.rules import Rules, default_registry


class Scoring:
    def __init__(self, database_url: str, rules: Rules | None = None) -> None:
        self.engine: Engine = make_engine(database_url)
        create_tables(self.engine, store.TABLES)
        self.rules = rules or default_registry()
        self.seq = 0

    def close(self) -> None:
        self.engine.dispose()

    def send(self, event: Event, *, key: str | None = None, seq: int | None = None) -> Applied:
        """Apply as the consumer would; an event without an id gets a fresh Nats-Msg-Id."""
        subject = subject_of(event)
        self.seq += 1
        with unit_of_work(self.engine) as session:
            return apply(
                session,
                event,
                key or inbox_key(subject, event, {"Nats-Msg-Id": uuid.uuid4().hex}),
                subject,
                self.seq if seq is None else seq,
                self.rules,
                dt.datetime.now(dt.UTC),
            )

    def rows(self, table: Any, *where: Any) -> list[Any]:
        with Session(self.engine) as session:
            return list(session.exec(select(table).where(*where)).all())

    def entries(self, project_id: str) -> list[store.Entry]:
        return sorted(
            self.rows(store.Entry, store.Entry.project_id == project_id),
            key=lambda e: (e.funds_id, e.seq),
        )

    def record(self, project_id: str, funds_id: str = "F1") -> store.FundsRecord:
        (row,) = self.rows(
            store.FundsRecord,
            store.FundsRecord.project_id == project_id,
            store.FundsRecord.funds_id == funds_id,
        )
        return row

    def emitted(self, subject: str, project_id: str) -> list[dict[str, Any]]:
        rows = [r for r in self.rows(store.Outbox) if subjects.event_type(r.subject) == subject]
        bodies = [json.loads(r.body) for r in sorted(rows, key=lambda r: r.msg_id)]
        return [b for b in bodies if b["project_id"] == project_id]
