"""Intake's unit of work against real SQLite and PostgreSQL, without NATS."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.intake import store
from services.intake.record import Recorded, record
from services.intake.validate import Parsed, parse
from shared import subjects
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import load_directory
from shared.settings import Settings
from tests.helpers import lead

DIRECTORY = load_directory(Settings.from_env().units_file)
NOW = dt.datetime(2022, 3, 1, 9, 0, tzinfo=dt.UTC)


def parsed(unit: str, kind: str, data: dict) -> Parsed:
    result = parse(unit, kind, json.dumps(data).encode(), DIRECTORY, 65536)
    assert isinstance(result, Parsed), result
    return result


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    create_tables(engine, store.TABLES)
    yield engine
    engine.dispose()


def test_one_row_per_unit_and_key_and_resend_reports_pending_outbox(engine) -> None:
    p = parsed("TS01", "lead", lead("TS01"))
    with unit_of_work(engine) as s:
        first = record(s, p, "k1", NOW)
    assert isinstance(first, Recorded) and first.outcome == "stored" and len(first.outbox) == 1
    with unit_of_work(engine) as s:
        again = record(s, p, "k1", NOW)
    # Not yet marked published: a redelivery must publish it again (same Nats-Msg-Id).
    assert isinstance(again, Recorded) and again.outcome == "resent"
    assert [o.msg_id for o in again.outbox] == [o.msg_id for o in first.outbox]
    with unit_of_work(engine) as s:
        for row in s.exec(select(store.Outbox)).all():
            row.published_at = NOW
            s.add(row)
    with unit_of_work(engine) as s:
        third = record(s, p, "k1", NOW)
    assert isinstance(third, Recorded) and third.outbox == []
    with Session(engine) as s:
        assert len(s.exec(select(store.InboundEvent)).all()) == 1


def test_same_lead_under_a_new_key_is_refused_by_field(engine) -> None:
    p = parsed("TS01", "lead", lead("TS01"))
    with unit_of_work(engine) as s:
        record(s, p, "k1", NOW)
    with unit_of_work(engine) as s:
        errors = record(s, p, "k2", NOW)
    assert isinstance(errors, list) and errors[0].field == "lead_id"


def test_failed_transaction_leaves_nothing_half_stored(engine) -> None:
    p = parsed("TS01", "lead", lead("TS01"))
    with pytest.raises(RuntimeError), unit_of_work(engine) as s:
        record(s, p, "k1", NOW)
        raise RuntimeError("crash after the rows, before commit")
    with Session(engine) as s:
        for table in store.TABLES:
            assert s.exec(select(table)).all() == []


def test_unique_key_holds_under_a_race(engine) -> None:
    """Two replicas inserting the same (unit, key): the database, not luck, refuses the second."""
    row = dict(unit="TS01", kind="visit", idempotency_key="race", payload="{}", received_at=NOW)
    with unit_of_work(engine) as s:
        s.add(store.InboundEvent(**row))
    with pytest.raises(IntegrityError), unit_of_work(engine) as s:
        s.add(store.InboundEvent(**row))


def test_duplicate_claim_holds_the_later_report(engine) -> None:
    first = lead("TS01", landing_area="CHEMPARK")
    second = lead("TS02", landing_area="CHEMPARK", investor=dict(first["investor"], name="别名"))
    with unit_of_work(engine) as s:
        record(s, parsed("TS01", "lead", first), "a", NOW)
    with unit_of_work(engine) as s:
        result = record(s, parsed("TS02", "lead", second), "b", NOW)
    assert isinstance(result, Recorded) and result.outcome == "duplicate_claim"
    event = json.loads(result.outbox[0].body)
    assert result.outbox[0].subject == subjects.keyed("project.duplicate", event["project_id"])
    assert (
        event["units"] == ["TS02", "TS01"] and event["duplicate_of"] == f"TS01-{first['lead_id']}"
    )
