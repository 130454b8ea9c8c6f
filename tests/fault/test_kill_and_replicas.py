"""Faults: services killed mid-stream, and two replicas of everything — exact counts after.

Every lead is recognised on arrival (its landing proofs come with it) and every funds
record is in CNY, so each funds record must end as exactly one credit: in scoring's ledger
and as one `score.credited`. Every fifth project's first funds record is then corrected
(更正, 1000.00 → 400.00): it ends as one standing credit of the corrected amount (a credit,
its reversal and the new credit; or the new amount alone, where the correction overtook the
record). Notifications must never go out twice for one cause.
`INVESTFLOW_SLOW=1` runs the issue's full 2,000 events; the default run 500, and each fault
on one backend: kill -9 on PostgreSQL, two of everything (two intake replicas too) on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from investflow.runtime import wait_until_idle
from samples.workload import recognised_projects
from shared.db import make_engine
from tests.conftest import PG_SKIP_REASON, system_on
from tests.helpers import read_subject

SLOW = bool(os.environ.get("INVESTFLOW_SLOW"))
LEADS = 200 if SLOW else 50
# The other backend of each fault costs `make test` ~2.5 min of CPU and adds no new case.
ALSO = pytest.mark.skipif(not SLOW, reason="INVESTFLOW_SLOW: this fault's other backend")
FUNDS_PER_LEAD = 9
ENV = {
    "INVESTFLOW_ACK_WAIT": "5",
    # The deployed window (600 s): an outcome announced just before a kill -9 is announced
    # again after the restart under the same Nats-Msg-Id, and the window must outlast the
    # restart to fold it. The suite's 2 s default is shorter than a restart under load.
    "INVESTFLOW_DUPLICATE_WINDOW": "600",
    "NOTIFY_CLOCK": "business",
    "NOTIFY_DRY_RUN": "1",
    "NOTIFY_TICK_S": "3600",
}

pytestmark = pytest.mark.timeout(600)


CORRECT_EVERY = 5  # every fifth project's F0 is corrected
CORRECTED_AMOUNT = "400.00"


def workload(tag: str) -> list[tuple[str, str, bytes]]:
    """(subject, msg id, body): each lead followed by its funds records, as a unit sends them,
    and for every fifth project a correction of its first funds record."""
    out = []
    for i, (lead, funds) in enumerate(recognised_projects(LEADS, FUNDS_PER_LEAD, tag, "1000.00")):
        out += [lead, *funds]
        if i % CORRECT_EVERY == 0:
            unit = lead[0].split(".")[1]
            fix = {
                "correction_id": f"C{i}",
                "target": {
                    "kind": "funds",
                    "project_id": corrected_project(lead),
                    "funds_id": "F0",
                },
                "changes": {"amount": CORRECTED_AMOUNT},
                "reason": "录入错误 / entered wrong",
            }
            out.append((f"intake.{unit}.correction", f"{tag}-fix-{i}", json.dumps(fix).encode()))
    return out


def corrected_project(lead: tuple[str, str, bytes]) -> str:
    unit = lead[0].split(".")[1]
    return f"{unit}-{json.loads(lead[2])['lead_id']}"


def scalar(url: str, query) -> int:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return int(session.exec(query).one())
    finally:
        engine.dispose()


async def check_exact(system, data: Path, db_url: str | None) -> None:  # type: ignore[no-untyped-def]
    from services.notify.store import Notification
    from services.scoring.store import Entry

    expected = LEADS * FUNDS_PER_LEAD
    corrections = await read_subject(system.js, "PROJECT", "project.correction")
    fixed = {(e["project_id"], "F0") for e in corrections}
    assert len(corrections) == len(fixed) == -(-LEADS // CORRECT_EVERY)
    leads = await read_subject(system.js, "PROJECT", "project.lead")
    assert len(leads) == LEADS and len({e["project_id"] for e in leads}) == LEADS

    credited = await read_subject(system.js, "SCORE", "score.credited")
    pairs = Counter((e["project_id"], e["funds_id"]) for e in credited)
    if len(pairs) != expected:
        funds = {
            (e["project_id"], e["data"]["funds_id"])
            for e in await read_subject(system.js, "PROJECT", "project.funds")
        }
        held = [e for e in await read_subject(system.js, "SCORE", "score.held")]
        recognition = await read_subject(system.js, "REVIEW", "review.recognition")
        lost = sorted(funds - set(pairs))
        detail = {
            "canonical funds events": len(funds),
            "missing after intake": expected - len(funds),
            "lost after intake": lost[:3],
            "their holds": [h for h in held if (h["project_id"], h["funds_id"]) in set(lost)][:3],
            "their recognition": [r for r in recognition if lost and r["project_id"] == lost[0][0]],
            "rejections": [
                (r["idempotency_key"], r["errors"])
                for r in await read_subject(system.js, "INTAKE", "intake.rejected.>")
            ][:5],
            "dead letters": [
                (d["subject"], d["error"]) for d in await read_subject(system.js, "DLQ", "dlq.>")
            ][:5],
        }
        raise AssertionError(f"{expected - len(pairs)} funds records never credited: {detail}")
    doubled = [p for p, n in pairs.items() if n > (2 if p in fixed else 1)]
    assert not doubled, f"double credits: {doubled[:5]}"
    reversed_ = Counter(
        (e["project_id"], e["funds_id"])
        for e in await read_subject(system.js, "SCORE", "score.reversed")
    )
    # A corrected record: credited, reversed, credited anew; or, overtaken, credited once.
    assert set(reversed_) <= fixed and all(reversed_[p] == pairs[p] - 1 for p in fixed)
    last = {(e["project_id"], e["funds_id"]): e["points"] for e in credited}
    assert {Decimal(last[p]) for p in fixed} == {Decimal(CORRECTED_AMOUNT)}

    scoring_db = db_url or f"sqlite:///{data / 'scoring.db'}"
    assert scalar(
        scoring_db, select(func.count()).select_from(Entry).where(Entry.kind == "credit")
    ) == expected + sum(reversed_.values())
    total = Decimal(1000) * (expected - len(fixed)) + Decimal(CORRECTED_AMOUNT) * len(fixed)
    assert scalar(scoring_db, select(func.sum(Entry.points_fen))) == int(total * 100)
    distinct = select(func.count(func.distinct(Entry.project_id + ":" + Entry.funds_id))).where(
        Entry.kind == "credit"
    )
    assert scalar(scoring_db, distinct) == expected

    notify_db = db_url or f"sqlite:///{data / 'notify.db'}"
    sent = await read_subject(system.js, "NOTIFY", "notify.sent")
    keys = Counter((e["cause"], e["recipient"], e["channel"]) for e in sent)
    assert keys and max(keys.values()) == 1, "a notification went out twice"
    assigned = scalar(
        notify_db,
        select(func.count()).select_from(Notification).where(Notification.kind == "lead_assigned"),
    )
    per_project = scalar(
        notify_db,
        select(func.count())
        .select_from(Notification)
        .where(
            Notification.kind == "lead_assigned", Notification.project_id == leads[0]["project_id"]
        ),
    )
    assert per_project >= 1 and assigned == LEADS * per_project


@contextlib.asynccontextmanager
async def faulty(tmp_path: Path, backend: str, replicas: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    async with system_on(backend, tmp_path, extra_env=ENV, replicas=replicas) as system:
        yield system, system.database_url


@pytest.mark.parametrize(
    "backend",
    # SQLite too where PostgreSQL does not answer: the kill -9 case always runs somewhere.
    [pytest.param("sqlite", marks=[] if PG_SKIP_REASON else ALSO), "postgresql"],
)
async def test_kill_9_each_service_in_turn_loses_and_doubles_nothing(
    tmp_path: Path, backend: str
) -> None:
    messages = workload("K")
    victims = {
        len(messages) * n // 5: name
        for n, name in enumerate(["intake", "review", "scoring", "notify"], 1)
    }
    async with faulty(tmp_path, backend) as (system, db_url):
        for n, (subject, key, body) in enumerate(messages):
            await system.js.publish(subject, body, headers={"Nats-Msg-Id": key})
            if n in victims:
                system.supervisor.kill(victims[n])
                await asyncio.sleep(0.3)  # let it die with its messages in flight
        await wait_until_idle(system.js, timeout=400)
        assert all(system.supervisor.children[name].restarts >= 1 for name in victims.values())
        await check_exact(system, tmp_path, db_url)


TWO_OF_EVERY_SERVICE = {"intake": 2, "review": 2, "scoring": 2, "notify": 2}


@pytest.mark.parametrize(
    ("backend", "two"),
    [
        pytest.param("sqlite", {**TWO_OF_EVERY_SERVICE, "intake": 1}, marks=ALSO),
        pytest.param("postgresql", {**TWO_OF_EVERY_SERVICE, "intake": 1}, marks=ALSO),
        # Two intake replicas share the units' inboxes as partitions (shared/partitions.py):
        # each inbox has one holder at a time, so a funds record no longer overtakes its
        # lead on a hand-over between replicas (the defect of issue 12's turn-taking).
        ("sqlite", TWO_OF_EVERY_SERVICE),
    ],
)
async def test_two_replicas_of_every_service_count_exactly_once(
    tmp_path: Path, backend: str, two: dict[str, int]
) -> None:
    messages = workload("R")
    async with faulty(tmp_path, backend, replicas=two) as (system, db_url):
        from investflow.services import SERVICES

        # Two of each, and one of every other service (the board).
        assert len(system.supervisor.children) == sum(two.values()) + len(SERVICES) - len(two)
        await asyncio.gather(
            *(system.js.publish(s, b, headers={"Nats-Msg-Id": k}) for s, k, b in messages)
        )
        await wait_until_idle(system.js, timeout=400)
        await check_exact(system, tmp_path, db_url)
