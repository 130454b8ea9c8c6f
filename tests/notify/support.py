"""Building notify's inputs the way the other services emit them, and a notify on a test database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from services.notify import store
from services.notify.contacts import read_contacts, store_contacts
from services.notify.handlers import consume
from services.notify.params import rule_titles
from services.notify.render import Renderer
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import load_directory
from shared.settings import REPO_ROOT

DIRECTORY = load_directory(REPO_ROOT / "deploy" / "units.yaml")
RENDERER = Renderer(DIRECTORY)
RULESETS = REPO_ROOT / "rulesets"
NOW = dt.datetime(2022, 3, 1, 8, 0, tzinfo=dt.UTC)


def notify_engine(database_url: str, contacts: Path | None = None) -> Engine:
    engine = make_engine(database_url)
    create_tables(engine, store.TABLES)
    if contacts is not None:
        with unit_of_work(engine) as session:
            store_contacts(session, read_contacts(contacts, DIRECTORY), DIRECTORY)
    return engine


def titles(ruleset_id: str, version: str | None) -> dict[str, dict[str, str]]:
    return rule_titles(RULESETS, ruleset_id, version)


def feed(engine: Engine, subject: str, event: dict[str, Any] | str, key: str | None = None) -> int:
    """What the consumer does with one message (the same function app.py calls)."""
    body = json.loads(event) if isinstance(event, str) else event
    return consume(
        engine,
        subject,
        body,
        key or f"{subject}|{json.dumps(body, sort_keys=True, default=str)}"[:300],
        RENDERER,
        titles,
        NOW,
    )


def envelope(
    kind: str, unit: str, data: dict[str, Any], project_id: str | None = None
) -> dict[str, Any]:
    pid = (
        project_id
        if project_id is not None
        else data.get("project_id") or f"{unit}-{data.get('lead_id')}"
    )
    return {
        "event_id": f"{kind}:{unit}:{json.dumps(data, sort_keys=True)}"[:200],
        "project_id": pid,
        "unit": unit,
        "idempotency_key": "k",
        "received_at": NOW.isoformat(),
        "data": {"unit": unit, **data},
    }


def lead_event(unit: str, lead_id: str, **over: Any) -> dict[str, Any]:
    data = {
        "lead_id": lead_id,
        "title": f"年产5万吨新材料项目{lead_id}",
        "attracting_unit": unit,
        "landing_area": over.pop("landing_area", "DEVZONE"),
        "kind": "industrial",
        "industry": "new_materials",
        "planned_investment": "150000000",
        "land": "new_land",
        "investor": {"name": "江苏某某新材料有限公司", "origin": "outside_province"},
        "reported_on": "2022-01-10",
    } | over
    return envelope("lead", unit, data)


def rows(engine: Engine, *where: Any) -> list[store.Notification]:
    N = store.Notification
    with Session(engine) as session:
        return list(session.exec(select(N).where(*where).order_by(N.id)).all())  # type: ignore[arg-type]
