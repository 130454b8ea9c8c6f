"""A run of events stored in one batch leaves the board's rows as the same events stored one
batch each: ingest keeps a batch's points, timeline and notification rows itself (one query
or one executemany per batch), so a later event must see what an earlier one added."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, select

from services.board import ingest
from services.board import readmodel as rm
from services.board.store import TABLES, BoardEvent, BoardNotification, BoardPoints
from shared.db import create_tables, make_engine

T = rm.Thresholds.load()
PID = "TS01-LB1"


def _events() -> list[tuple[str, str, dict[str, Any]]]:
    lead = {
        "project_id": PID,
        "unit": "TS01",
        "data": {
            "title": "p",
            "attracting_unit": "TS01",
            "landing_area": "DEVZONE",
            "kind": "industrial",
            "planned_investment": "200000000",
            "reported_on": "2022-02-01",
        },
    }
    funds = {
        "project_id": PID,
        "data": {
            "project_id": PID,
            "funds_id": "F1",
            "amount": "1000000",
            "currency": "CNY",
            "arrived_on": "2022-03-15",
        },
    }
    credit = {
        "project_id": PID,
        "funds_id": "F1",
        "amount_rmb": "1000000",
        "points": "100",
        "multiplier": "1",
        "credited_to": ["TS01", "DEVZONE"],
        "year": 2022,
        "quarter": 1,
    }
    sent = {
        "project_id": PID,
        "cause": "credited",
        "recipient": "L01",
        "channel": "email",
        "attempts": 1,
    }
    return [
        ("PROJECT", "project.lead", lead),
        ("PROJECT", "project.funds", funds),
        ("SCORE", "score.credited", credit),
        ("SCORE", "score.reversed", {"project_id": PID, "funds_id": "F1", "reason": "withdrawn"}),
        ("SCORE", "score.credited", {**credit, "credited_to": ["TS01"], "quarter": 2}),
        ("NOTIFY", "notify.sent", sent),
    ]


def _stored(database_url: str, batches: list[list[ingest.Item]]) -> dict[str, list[Any]]:
    engine = make_engine(database_url)
    create_tables(engine, TABLES)
    try:
        for batch in batches:
            with Session(engine) as session:
                ingest.ingest(session, batch, T)
                session.commit()
        with Session(engine) as session:
            points = session.exec(
                select(BoardPoints).where(BoardPoints.project_id == PID).order_by(BoardPoints.id)  # type: ignore[arg-type]
            ).all()
            events = session.exec(
                select(BoardEvent).where(BoardEvent.project_id == PID).order_by(BoardEvent.id)  # type: ignore[arg-type]
            ).all()
            sent = session.exec(
                select(BoardNotification).where(BoardNotification.project_id == PID)
            ).all()
            return {
                "points": [(p.subject, p.points_fen, p.quarter, p.active) for p in points],
                "events": [(e.stream, e.seq, e.subject, e.day, e.body) for e in events],
                "notifications": [(n.ok, n.cause, n.recipient, n.channel) for n in sent],
            }
    finally:
        with engine.begin() as conn:
            for table in reversed(TABLES):
                conn.execute(table.__table__.delete())  # type: ignore[attr-defined]
        engine.dispose()


def test_one_batch_stores_what_one_event_per_batch_stores(database_url: str) -> None:
    seq: dict[str, int] = {}
    items = []
    for stream, subject, event in _events():
        seq[stream] = seq.get(stream, 0) + 1
        items.append(ingest.Item(stream, seq[stream], subject, event, json.dumps(event)))
    apart = _stored(database_url, [[i] for i in items])
    together = _stored(database_url, [items])
    # The reversal takes back both credits of the first score.credited; the second is active.
    assert apart["points"] == [
        ("TS01", 10000, 1, False),
        ("DEVZONE", 10000, 1, False),
        ("TS01", 10000, 2, True),
    ]
    assert together == apart
    assert len(apart["events"]) == 6 and len(apart["notifications"]) == 1
