"""What notify did, counted from its outbox: for the demo and operators."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func
from sqlmodel import Session, select

from shared.db import create_tables, make_engine

from . import store


def counts_by_cause(database_url: str) -> dict[str, dict[str, int]]:
    """{cause kind (lead_assigned, visit_overdue, ...): {status: notifications}}."""
    engine = make_engine(database_url)
    try:
        create_tables(engine, store.TABLES)
        N = store.Notification
        with Session(engine) as session:
            rows = session.exec(
                select(N.kind, N.status, func.count()).group_by(N.kind, N.status)
            ).all()
    finally:
        engine.dispose()
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, status, n in rows:
        out[kind][status] = int(n)
    return dict(sorted(out.items()))


def render_counts(counts: dict[str, dict[str, int]]) -> str:
    statuses = ("sent", "pending", "sending", "failed")
    lines = [
        "Notifications by cause / 通知（按原因）:",
        f"  {'cause':<20}" + "".join(f"{s:>9}" for s in statuses) + f"{'total':>9}",
    ]
    for kind, by in counts.items():
        lines.append(
            f"  {kind:<20}"
            + "".join(f"{by.get(s, 0):>9}" for s in statuses)
            + f"{sum(by.values()):>9}"
        )
    if not counts:
        lines.append("  (none)")
    return "\n".join(lines)


def print_counts(database_url: str) -> None:
    print(render_counts(counts_by_cause(database_url)), flush=True)


def scheduler_caught_up(database_url: str) -> bool:
    """Whether the scheduler has planned everything up to the business clock's "today"
    (the latest business date seen, minus one day): what a replay waits for before counting."""
    import datetime as dt

    from .facts import BUSINESS_DATE
    from .scheduler import LAST_DAY, WEEKLY_LAST_DAY

    engine = make_engine(database_url)
    try:
        create_tables(engine, store.TABLES)
        with Session(engine) as session:
            state = {
                k: store.get_state(session, k) for k in (BUSINESS_DATE, LAST_DAY, WEEKLY_LAST_DAY)
            }
    finally:
        engine.dispose()
    if not state[BUSINESS_DATE]:
        return True
    today = (dt.date.fromisoformat(state[BUSINESS_DATE]) - dt.timedelta(days=1)).isoformat()
    return all(state[k] is not None and state[k] >= today for k in (LAST_DAY, WEEKLY_LAST_DAY))
