"""The inbox beside the outbox: has this service applied this message already?

Each service keeps its own inbox table (its own name and columns: deployments hold data and
there are no migrations); `Inbox` only needs the table and its key column. A message is
claimed by inserting its key with INSERT ... ON CONFLICT DO NOTHING in the transaction that
applies it: a key seen before, or claimed by a replica racing on it (which waits for the
other transaction and then finds the key taken), is not claimed, and its effects are not
applied twice. One statement per message where a look-up then an insert took two.

The statements are built once per dialect and run on the session's connection (Core: no ORM
instance, no identity map), as the hot paths did before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

# ON CONFLICT DO NOTHING is spelled alike by both, but built by each dialect's own insert().
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class Inbox:
    """`Inbox(store.Processed, "event_id")`: the table (a SQLModel table class or a Core
    Table) and the column that holds a message's key, its primary key or unique."""

    def __init__(self, table: type[SQLModel] | Table, key_column: str) -> None:
        t: Table = table if isinstance(table, Table) else table.__table__  # type: ignore[attr-defined]
        self.table = t
        self.key_column = key_column
        key = t.c[key_column]
        self._seen = core_select(key).where(key == bindparam("_key"))
        self._claim: dict[str, Any] = {}
        self._claim_many: dict[str, Any] = {}
        for dialect, insert in _INSERTS.items():
            stmt = insert(t).on_conflict_do_nothing(index_elements=[key_column])
            # An INSERT's rowcount is kept only when asked for (-1 on psycopg otherwise).
            self._claim[dialect] = stmt.execution_options(preserve_rowcount=True)
            # RETURNING: an executemany's rowcount is not reliable on PostgreSQL.
            self._claim_many[dialect] = stmt.returning(key)

    def seen(self, session: Session, key: str) -> bool:
        """Whether `key` was claimed (by a committed transaction, or by this one)."""
        return session.connection().execute(self._seen, {"_key": key}).first() is not None

    def claim(self, session: Session, key: str, **columns: Any) -> bool:
        """Insert `key` (with the table's other `columns`) unless it is there: True when this
        transaction claimed it, False when it was applied before or by a racing replica."""
        conn = session.connection()
        values = {self.key_column: key, **columns}
        return conn.execute(self._claim[conn.dialect.name], values).rowcount == 1

    def claim_many(self, session: Session, rows: Sequence[dict[str, Any]]) -> set[Any]:
        """`claim` for many rows (each names the key column and the same other columns) in one
        executemany: the keys this transaction claimed. A key twice in `rows` counts once."""
        if not rows:
            return set()
        conn = session.connection()
        return set(conn.execute(self._claim_many[conn.dialect.name], list(rows)).scalars())

    def claim_keys(self, session: Session, keys: Iterable[str]) -> set[str]:
        """`claim_many` for a table whose only required column is the key."""
        return self.claim_many(session, [{self.key_column: k} for k in dict.fromkeys(keys)])
