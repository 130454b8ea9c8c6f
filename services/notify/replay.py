"""Notify's facts from a JSON Lines file of inbound messages (the sample year), without NATS.

Each line goes through intake's own checks and recording (`services.intake.validate.parse`,
`services.intake.record.record`, on a throwaway in-memory database), exactly as the running
intake would accept, de-duplicate or reject it; the canonical `project.*` events it would
emit are applied to notify's facts. What review and scoring would add (screening outcomes,
credits) is not in such a file: those parts of a report stay empty unless their events are
applied too. Used by `investflow report weekly --samples FILE` and the report tests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import create_engine

from shared import subjects
from shared.db import create_tables, unit_of_work
from shared.directory import Directory

from . import facts, store


def memory_engine() -> Engine:
    return create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )


def canonical_events(
    lines: Iterable[dict[str, Any]], directory: Directory
) -> Iterable[tuple[str, dict[str, Any]]]:
    """(subject, event) of every canonical event intake would emit for `lines`, in order."""
    from services.intake import store as intake_store
    from services.intake.record import Recorded, record
    from services.intake.validate import parse

    engine = memory_engine()
    create_tables(engine, intake_store.TABLES)
    received = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    for item in lines:
        parts = item["subject"].split(".")
        if len(parts) != 3 or parts[0] != "intake":
            continue
        raw = (
            item["raw"].encode()
            if "raw" in item
            else json.dumps(item["data"], ensure_ascii=False).encode()
        )
        parsed = parse(parts[1], parts[2], raw, directory, 1 << 20)
        if isinstance(parsed, list):
            continue
        with unit_of_work(engine) as session:
            result = record(session, parsed, item["msg_id"], received)
        if not isinstance(result, Recorded) or result.outcome == "resent":
            continue
        for row in result.outbox:
            yield subjects.event_type(row.subject), json.loads(row.body)


def read_lines(path: Path) -> Iterable[dict[str, Any]]:
    """The file's JSON objects; a line that is not one raises ValueError naming the line."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON / 不是 JSON: {exc.msg}") from None
            if not isinstance(item, dict) or "subject" not in item:
                raise ValueError(f"{path}:{number}: no subject / 缺少 subject")
            yield item


def apply_events(engine: Engine, events: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Apply events to notify's facts (tables created if need be); returns how many."""
    create_tables(engine, store.TABLES)
    n = 0
    with unit_of_work(engine) as session:
        for subject, event in events:
            facts.apply(session, subject, event)
            session.flush()
            n += 1
    return n


def facts_from_file(path: Path, directory: Directory, engine: Engine | None = None) -> Engine:
    engine = engine or memory_engine()
    apply_events(engine, canonical_events(read_lines(path), directory))
    return engine
