"""The sample year as scoring receives it, without NATS: the sample's inbound lines go
through intake's own validation and recording and review's own case handling (each on a
scratch in-memory database), and what they would emit on `project.*` and
`review.recognition` is collected in order. Built once per test session."""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path

from services.intake.record import Recorded
from services.intake.record import record as intake_record
from services.intake.validate import Parsed, parse
from services.scoring.inputs import INPUTS, inbox_key
from services.scoring.record import Event
from shared import subjects
from shared.db import create_tables, make_engine, unit_of_work
from shared.directory import load_directory
from shared.rules import default_registry
from shared.settings import REPO_ROOT, Settings

SAMPLE = REPO_ROOT / "samples" / "year-2022.jsonl"
NOW = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)

Input = tuple[str, Event, str]  # subject, event, inbox key


@cache
def scoring_inputs(path: Path = SAMPLE) -> tuple[Input, ...]:
    from services.intake import store as intake_store
    from services.review import cases
    from services.review import store as review_store

    settings = Settings.from_env()
    directory = load_directory(settings.units_file)
    intake_db, review_db = make_engine("sqlite://"), make_engine("sqlite://")
    create_tables(intake_db, intake_store.TABLES)
    create_tables(review_db, review_store.TABLES)
    rules = default_registry()
    out: list[Input] = []
    # A replay of 2022: filing dates are the business dates, as in the demo (REVIEW_CLOCK).
    clock, cases.CLOCK = cases.CLOCK, "business"
    try:
        _replay(path, directory, settings, intake_db, review_db, rules, out)
    finally:
        cases.CLOCK = clock
    intake_db.dispose()
    review_db.dispose()
    return tuple(out)


def _replay(path, directory, settings, intake_db, review_db, rules, out) -> None:  # type: ignore[no-untyped-def]
    from services.review import cases

    with unit_of_work(intake_db) as intake, unit_of_work(review_db) as review:
        for line in path.read_text(encoding="utf-8").splitlines():
            msg = json.loads(line)
            _, unit, kind = msg["subject"].split(".", 2)
            raw = msg["raw"].encode() if "raw" in msg else json.dumps(msg["data"]).encode()
            parsed = parse(unit, kind, raw, directory, settings.max_payload_bytes)
            if not isinstance(parsed, Parsed):
                continue
            result = intake_record(intake, parsed, msg["msg_id"], NOW)
            if not isinstance(result, Recorded):
                continue
            for row in result.outbox:
                body = json.loads(row.body)
                kind = subjects.event_type(row.subject)
                if kind in INPUTS:
                    event = INPUTS[kind].model_validate(body)
                    out.append((kind, event, inbox_key(kind, event)))  # type: ignore[arg-type]
                if kind.startswith("project."):
                    for emitted in cases.apply(review, kind, body, rules):
                        if subjects.event_type(emitted.subject) == subjects.REVIEW_RECOGNITION:
                            recognition = subjects.REVIEW_RECOGNITION
                            event = INPUTS[recognition].model_validate_json(emitted.body)
                            key = inbox_key(recognition, event, {"Nats-Msg-Id": emitted.msg_id})  # type: ignore[arg-type]
                            out.append((recognition, event, key))  # type: ignore[arg-type]
