"""One consumed event, in one transaction: its facts, the message id, the notifications it causes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from shared.db import unit_of_work

from . import facts, store
from .plan import plan
from .render import Renderer
from .triggers import ALERTING_SUBJECTS, event_alerts

Titles = Callable[[str, str | None], dict[str, dict[str, str]]]


def consume(
    engine: Engine,
    subject: str,
    event: dict[str, Any],
    key: str,
    renderer: Renderer,
    titles: Titles,
    now: dt.datetime,
) -> int:
    """Apply `event` once (a redelivery under the same key changes nothing); returns how
    many notifications are new. Raises facts.ProjectNotYetKnown to be retried later."""
    return consume_run(engine, [(subject, event, key)], renderer, titles, now)


def consume_run(
    engine: Engine,
    events: list[tuple[str, dict[str, Any], str]],
    renderer: Renderer,
    titles: Titles,
    now: dt.datetime,
) -> int:
    """`consume` for (subject, event, key) in order, all in one transaction (a run of
    messages delivered together): all are applied or none; returns how many are new."""
    with unit_of_work(engine) as session:
        return sum(
            _consume(session, subject, event, key, renderer, titles, now)
            for subject, event, key in events
        )


def _consume(
    session: Session,
    subject: str,
    event: dict[str, Any],
    key: str,
    renderer: Renderer,
    titles: Titles,
    now: dt.datetime,
) -> int:
    # Claiming the key first, with ON CONFLICT DO NOTHING: one statement instead of a
    # lookup and an insert, and a replica racing on the same key waits and then skips.
    if not store.insert_ignore(session, store.Processed, [{"msg_id": key}], ["msg_id"]):
        return 0
    facts.apply(session, subject, event)
    if subject not in ALERTING_SUBJECTS:
        return 0
    project = facts.project_card(session, event.get("project_id"))
    principals = renderer.directory.principal_leaders()
    alerts = event_alerts(subject, event, project, titles, principals)
    return plan(session, alerts, renderer, now)
