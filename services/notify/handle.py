"""One consumed event, in one transaction: its facts, the message id, the notifications it causes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from shared.db import unit_of_work

from . import facts, store
from .plan import plan
from .render import Renderer
from .triggers import event_alerts

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
    with unit_of_work(engine) as session:
        if session.get(store.Processed, key) is not None:
            return 0
        session.add(store.Processed(msg_id=key))
        facts.apply(session, subject, event)
        project = facts.project_view(session, event.get("project_id"))
        return plan(session, event_alerts(subject, event, project, titles), renderer, now)
