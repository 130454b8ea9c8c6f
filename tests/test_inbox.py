"""shared/inbox.py: a message's key is claimed once, also by two replicas racing on it.

On SQLite and, where it answers, PostgreSQL (the `database_url` fixture), each over a table
of its own columns as the services' inbox tables are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table
from sqlmodel import Session

from shared.db import make_engine, unit_of_work
from shared.inbox import Inbox

pytestmark = pytest.mark.timeout(60)

_META = MetaData()
_TABLE = Table(
    "test_inbox",
    _META,
    Column("msg_key", String(100), primary_key=True),
    Column("subject", String(100), nullable=False),
    Column("seq", Integer, nullable=True),
)
INBOX = Inbox(_TABLE, "msg_key")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    _META.create_all(engine)
    yield engine
    engine.dispose()


def test_a_key_is_claimed_once_and_then_seen(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        assert not INBOX.seen(session, "a")
        assert INBOX.claim(session, "a", subject="project.lead", seq=7)
        assert INBOX.seen(session, "a")  # by the transaction that claimed it, too
        assert not INBOX.claim(session, "a", subject="project.lead", seq=8)
    with unit_of_work(engine) as session:
        assert INBOX.seen(session, "a")
        assert not INBOX.claim(session, "a", subject="project.lead", seq=9)
        row = session.connection().execute(_TABLE.select()).one()
    assert (row.msg_key, row.subject, row.seq) == ("a", "project.lead", 7)


def test_a_rolled_back_claim_leaves_the_key_free(engine: Engine) -> None:
    with pytest.raises(RuntimeError), unit_of_work(engine) as session:
        assert INBOX.claim(session, "b", subject="s")
        raise RuntimeError("the handler failed after claiming")
    with unit_of_work(engine) as session:
        assert not INBOX.seen(session, "b")
        assert INBOX.claim(session, "b", subject="s")


def test_claim_many_returns_only_the_new_keys(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        assert INBOX.claim(session, "old", subject="s")
    with unit_of_work(engine) as session:
        assert INBOX.claim_many(session, []) == set()
        rows = [{"msg_key": k, "subject": "s", "seq": None} for k in ("old", "n1", "n2")]
        assert INBOX.claim_many(session, rows) == {"n1", "n2"}
        assert INBOX.claim_many(session, rows) == set()


def test_claim_keys_of_a_key_only_table(database_url: str) -> None:
    meta = MetaData()
    table = Table("test_inbox_keys", meta, Column("msg_id", String(100), primary_key=True))
    inbox = Inbox(table, "msg_id")
    engine = make_engine(database_url)
    meta.create_all(engine)
    try:
        with unit_of_work(engine) as session:
            assert inbox.claim_keys(session, ["x", "y", "x"]) == {"x", "y"}
        with unit_of_work(engine) as session:
            assert inbox.claim_keys(session, ["y", "z"]) == {"z"}
    finally:
        engine.dispose()


def test_two_replicas_racing_on_one_key_exactly_one_wins(engine: Engine) -> None:
    """Both transactions claim before either commits: the second waits for the first (a
    row lock on PostgreSQL, the write lock on SQLite), then finds the key taken, and goes on
    without an error (it rolls back nothing and applies nothing)."""
    start = threading.Barrier(2)
    won: dict[str, bool] = {}
    errors: list[BaseException] = []

    def replica(name: str) -> None:
        try:
            with Session(engine) as session:
                start.wait()
                won[name] = INBOX.claim(session, "raced", subject=name)
                time.sleep(0.3)  # the winner holds its transaction open a while
                session.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(won.values()) == [False, True], won
    with unit_of_work(engine) as session:
        rows = session.connection().execute(_TABLE.select()).all()
    assert [(r.msg_key, r.subject) for r in rows] == [
        ("raced", next(n for n, w in won.items() if w))
    ]
