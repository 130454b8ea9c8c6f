"""Turning alerts into outbox rows: one per cause, recipient and channel, worded in their language.

Runs inside the transaction that stored the facts causing them. The unique key
(cause, recipient, channel) and INSERT ... ON CONFLICT DO NOTHING make a cause delivered at
most once to each recipient per channel, whatever the redeliveries, replicas and ticks.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlmodel import Session

from . import store
from .contacts import Recipient
from .contacts import recipients as resolve
from .model import Alert
from .render import Renderer

log = logging.getLogger("investflow.notify")


def plan(
    session: Session,
    alerts: Iterable[Alert],
    renderer: Renderer,
    now: dt.datetime,
    extra: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Store the notifications `alerts` call for; returns how many were new.

    `extra` maps a cause to ready-made columns (html, image) for rich messages like the
    weekly report. A recipient without any contact gets one `failed` row on channel `none`,
    so the gap shows in `investflow notifications list --status failed`.
    """
    alerts = list(alerts)
    if not alerts:
        return 0
    done = store.existing_keys(session, [a.cause for a in alerts])
    people = _recipients(session, [code for a in alerts for code in a.recipients])
    rows: list[dict[str, Any]] = []
    for alert in alerts:
        for code in alert.recipients:
            person = people[code]
            channels = person.addresses or {"none": {}}
            todo = [ch for ch in channels if (alert.cause, code, ch) not in done]
            if not todo:
                continue
            subject, body = renderer.message(alert.kind, person.language, alert.data, code)
            for channel in todo:
                row: dict[str, Any] = {
                    "cause": alert.cause,
                    "kind": alert.kind,
                    "project_id": alert.project_id,
                    "recipient": code,
                    "channel": channel,
                    "target": json.dumps(channels[channel], ensure_ascii=False),
                    "language": person.language,
                    "subject": subject,
                    "body": body,
                    "html": None,
                    "image": None,
                    "data": json.dumps(alert.data, ensure_ascii=False, default=str),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": None,
                    "created_at": now,
                }
                if channel == "none":
                    row |= {
                        "status": "failed",
                        "last_error": f"no contact for {code} in deploy/contacts.yaml / 无联系方式",
                    }
                row |= (extra or {}).get(f"{alert.cause}|{code}|{person.language}", {})
                rows.append(row)
                done.add((alert.cause, code, channel))
    # One executemany for them all (every row names the same columns); a row a replica has
    # just planned too is skipped by the unique key and not counted.
    keys = ["cause", "recipient", "channel"]
    return len(store.insert_new(session, store.Notification, rows, keys, "id"))


def _recipients(session: Session, codes: list[str]) -> dict[str, Recipient]:
    """`contacts.recipients`, looked up once per transaction: a run of messages applied
    together names the same units and leaders again and again."""
    known: dict[str, Recipient] = session.info.setdefault("notify.recipients", {})
    missing = [code for code in codes if code and code not in known]
    if missing:
        known.update(resolve(session, missing))
    return {code: known[code] for code in codes if code}
