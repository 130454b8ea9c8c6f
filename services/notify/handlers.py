"""Notify's handlers: a run of consumed events in one transaction. Each event type maps to
the facts it records (`facts.FACTS`) and the alerts it raises (`triggers.EVENT_TRIGGERS`);
the run's alerts are planned once (`plan.plan`) into the notification outbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from shared.db import unit_of_work

from . import facts, store
from .model import Alert
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
    """`consume` for (event type, event, key) in order, all in one transaction (a run of
    messages delivered together): all are applied or none; returns how many are new."""
    with unit_of_work(engine) as session:
        # The run's keys are claimed first, in one statement: a key already applied (or
        # claimed by a replica racing on it, which waits and then skips) is not claimed, and
        # a key twice in the run is applied the first time only.
        new = store.INBOX.claim_keys(session, (key for _, _, key in events))
        principals = renderer.directory.principal_leaders()
        alerts: list[Alert] = []
        for subject, event, key in events:
            if key not in new:
                continue
            new.discard(key)
            facts.apply(session, subject, event)
            if subject in ALERTING_SUBJECTS:
                # The project as known right after this event, as if each were applied alone.
                project = facts.project_card(session, event.get("project_id"))
                alerts += event_alerts(subject, event, project, titles, principals)
        # One plan for the run: its outbox rows do not depend on the facts applied after the
        # alert was worked out, and a cause named twice is planned once either way.
        return plan(session, alerts, renderer, now)
