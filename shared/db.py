"""Each service's own database: SQLite file by default, PostgreSQL when DATABASE_URL says so."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Engine, Index, Table, event
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlmodel import Session, SQLModel, create_engine


def normalise_url(url: str) -> str:
    # psycopg 3 is what we install; plain postgresql:// would ask for psycopg2.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL lets the HTTP handler read while the consumer writes. NORMAL sync in WAL
            # mode survives a killed process (what we ack after); only an OS crash or power
            # loss can drop the last commits, which is what PostgreSQL is for in production.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def create_tables(engine: Engine, tables: Sequence[type[SQLModel]]) -> None:
    """Create only this service's tables: all services share SQLModel.metadata in-process."""
    wanted: list[Table] = [t.__table__ for t in tables]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(engine, tables=wanted)
    # create_all makes a table's indexes only with the table: one added since (a data dir
    # from an older version) is made here, and one the model retired (its table's
    # info["retired_indexes"]) is dropped. IF (NOT) EXISTS: replicas may start together.
    with engine.begin() as conn:
        for table in wanted:
            for name in table.info.get("retired_indexes", ()):
                conn.execute(DropIndex(Index(name), if_exists=True))
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index, if_not_exists=True))


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
