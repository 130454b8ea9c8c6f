"""Claiming due notifications costs the same with a backlog of 300 as of 30,000 (SQLite and
PostgreSQL): the dispatcher claims a few rows at a time, so a claim that reads and sorts
every due row makes sending a backlog quadratic. Found by the 100,000-lead soak: with 22,000
lead_assigned notifications waiting, notify spent a quarter of its CPU in claim_due."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text, update
from sqlmodel import select

from services.notify import store
from shared.db import create_tables, make_engine, unit_of_work
from tests.notify.support import notify_engine

pytestmark = pytest.mark.timeout(120)
N = store.Notification
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=5)


def fill(engine: Engine, due: int, *, later: int = 0, sent: int = 0, fresh: int = 0) -> None:
    """`due` pending rows due now, `later` pending rows due tomorrow, `sent` sent rows
    (announced), `fresh` sent rows not yet announced."""

    def row(i: int, status: str, at: dt.datetime, announced: bool = False) -> dict[str, Any]:
        return {
            "outcome_published_at": NOW if announced else None,
            "cause": f"lead_assigned:P-{i}",
            "kind": "lead_assigned",
            "recipient": "u1",
            "channel": "email",
            "subject": "s",
            "body": "b",
            "status": status,
            "next_attempt_at": at,
            "created_at": NOW,
        }

    rows = [row(i, "sent", NOW, announced=True) for i in range(sent)]
    rows += [row(sent + due + later + i, "sent", NOW) for i in range(fresh)]
    rows += [row(sent + i, "pending", NOW + dt.timedelta(days=1)) for i in range(later)]
    rows += [row(sent + later + i, "pending", NOW) for i in range(due)]
    with engine.begin() as conn:
        conn.execute(insert(N.__table__), rows)  # type: ignore[attr-defined]
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE notify_notification"))


def work_of_claim(engine: Engine) -> tuple[int, list[int]]:
    """(what the database did for one claim of 8 rows, the ids claimed)."""
    return work_of(engine, lambda session: store.claim_due(session, NOW, LEASE, 8))


def work_of(engine: Engine, read: Callable[[Any], list[Any]]) -> tuple[int, list[int]]:
    """(what the database did for `read`, the ids of the rows it returned). SQLite: virtual
    machine steps (its progress handler). PostgreSQL: the most rows any plan node of the
    claim's SELECTs read (returned or filtered out) (EXPLAIN ANALYZE of the statements claim_due sent)."""
    with unit_of_work(engine) as session:
        if engine.dialect.name == "sqlite":
            steps = [0]

            def count() -> int:
                steps[0] += 1
                return 0

            raw = session.connection().connection.dbapi_connection
            raw.set_progress_handler(count, 1)  # type: ignore[union-attr]
            try:
                claimed = read(session)
            finally:
                raw.set_progress_handler(None, 1)  # type: ignore[union-attr]
            return steps[0], [r.id for r in claimed]
        selects: list[tuple[str, Any]] = []

        def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                selects.append((statement, params))

        conn = session.connection()
        event.listen(conn, "before_cursor_execute", seen)
        try:
            claimed = read(session)
        finally:
            event.remove(conn, "before_cursor_execute", seen)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        most = 0
        for statement, params in selects:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            most = max(most, _most_rows(cursor.fetchone()[0][0]["Plan"]))
        return most, [r.id for r in claimed]


def _most_rows(plan: dict[str, Any]) -> int:
    below = [_most_rows(p) for p in plan.get("Plans", [])]
    read = int(plan["Actual Rows"]) + int(plan.get("Rows Removed by Filter", 0))
    return max([read, *below])


@pytest.fixture
def engines(database_url: str, tmp_path: Any) -> Iterator[Callable[[str], Engine]]:
    """Two fresh notify databases: the one of the parametrised backend, and a second one."""
    made: list[Engine] = []

    def make(name: str) -> Engine:
        if database_url.startswith("sqlite"):
            engine = notify_engine(f"sqlite:///{tmp_path / name}.db")
        else:
            engine = notify_engine(database_url)
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM notify_notification"))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def test_a_claim_costs_the_same_behind_a_backlog_of_30000(engines) -> None:  # type: ignore[no-untyped-def]
    small = engines("small")
    fill(small, 300, later=100, sent=300)
    small_work, small_ids = work_of_claim(small)
    if small.dialect.name == "postgresql":
        small.dispose()  # the same database: refill it at the larger size
    large = engines("large")
    fill(large, 30_000, later=10_000, sent=30_000)
    large_work, large_ids = work_of_claim(large)
    # The first 8 due rows by id, and only due ones; with the backlog 100 times larger, the
    # work stays within twice the small one's (reading and sorting every due row: ~100x).
    assert len(large_ids) == 8 and large_ids == sorted(large_ids)
    with unit_of_work(large) as session:
        statuses = {
            r.id: (r.status, r.next_attempt_at)
            for r in session.exec(select(N).where(N.id.in_(large_ids)))  # type: ignore[union-attr]
        }
    assert all(s == "sending" and at == NOW for s, at in statuses.values()), statuses
    with unit_of_work(large) as session:
        first_due = list(
            session.exec(
                select(N.id)
                .where(N.status == "pending", N.next_attempt_at <= NOW)
                .order_by(N.id)  # type: ignore[arg-type]
                .limit(1)
            )
        )
    assert large_ids[0] < first_due[0]  # nothing due with a smaller id was skipped
    print(f"claim work: {small_work} at 300 due, {large_work} at 30,000 due")
    assert large_work <= 2 * small_work + 50, (small_work, large_work)
    assert len(small_ids) == 8


def test_a_lapsed_lease_and_a_due_row_are_claimed_in_id_order(engines) -> None:  # type: ignore[no-untyped-def]
    engine = engines("mixed")
    fill(engine, 3)
    with unit_of_work(engine) as session:
        ids = sorted(session.exec(select(N.id)))
        # The middle one was claimed by a dispatcher that died (its lease ran out); the
        # last one's claim is still leased, so it is not due.
        lease_until = {1: NOW - dt.timedelta(seconds=1), 2: NOW + dt.timedelta(seconds=1)}
        for k, until in lease_until.items():
            session.exec(  # type: ignore[call-overload]
                update(N).where(N.id == ids[k]).values(status="sending", lease_until=until)
            )
    with unit_of_work(engine) as session:
        claimed = store.claim_due(session, NOW, LEASE, 8)
    assert [r.id for r in claimed] == ids[:2]
    with unit_of_work(engine) as session:
        assert store.claim_due(session, NOW, LEASE, 8, skip=ids[:2]) == []


def test_an_old_data_dir_gets_the_new_indexes_and_loses_the_retired_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    create_tables(engine, store.TABLES)
    with engine.begin() as conn:  # a data dir from before: its index on status alone
        conn.execute(text("DROP INDEX ix_notify_notification_due"))
        conn.execute(
            text("CREATE INDEX ix_notify_notification_status ON notify_notification (status)")
        )
    create_tables(engine, store.TABLES)  # upgraded
    create_tables(engine, store.TABLES)  # and again: nothing to do
    with engine.connect() as conn:
        names = {r[1] for r in conn.execute(text("PRAGMA index_list(notify_notification)"))}
    assert "ix_notify_notification_due" in names
    assert "ix_notify_notification_status" not in names
    engine.dispose()


def test_finding_what_to_announce_costs_the_same_after_30000_sent(engines) -> None:  # type: ignore[no-untyped-def]
    def work(name: str, sent: int) -> tuple[int, list[int]]:
        engine = engines(name)
        fill(engine, sent // 10, sent=sent, fresh=3)
        return work_of(engine, store.unannounced)

    small_work, small_ids = work("small", 300)
    large_work, large_ids = work("large", 30_000)
    print(f"unannounced work: {small_work} after 300 sent, {large_work} after 30,000")
    assert len(small_ids) == len(large_ids) == 3 and large_ids == sorted(large_ids)
    assert large_work <= 2 * small_work + 50, (small_work, large_work)


def test_planning_a_provinces_day_looks_up_more_causes_than_a_query_takes(engines) -> None:  # type: ignore[no-untyped-def]
    """The scheduler plans a day's time triggers for every project at once: at 100,000
    leads one IN (...) of every cause was over what a statement takes, and every tick
    failed ("too many SQL variables"), so no reminder or weekly report went out. More
    causes here than either backend takes in one statement (PostgreSQL: 65,535)."""
    engine = engines("province")
    fill(engine, 0, sent=2_000)
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        limit = 65_535
        if engine.dialect.name == "sqlite":
            limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    causes = [f"lead_assigned:P-{i}" for i in range(limit + 1)]
    with unit_of_work(engine) as session:
        found = store.existing_keys(session, causes + causes[:10])
    assert len(found) == 2_000
    assert ("lead_assigned:P-1999", "u1", "email") in found
