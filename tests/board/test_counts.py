"""The overview's kept counts (board_count, board_day_count) equal a recount of the rows.

Ingest moves them by each batch's change; this folds a seeded mix of events (meetings
after their decisions, redeliveries, holds turning into credits, terminations, corrections
and withdrawals of leads, funds records and milestones) in batches
of every size and, after each, recounts board_project and board_funds in Python with the
lights' own reading (`readmodel.light`), on many clocks. A threshold change rebuilds them.
On SQLite and PostgreSQL (amounts in fen pass 2^31).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Any

from sqlmodel import Session, select

from services.board import ingest
from services.board import readmodel as rm
from services.board.access import OPEN, Viewer
from services.board.queries import Signing, overview
from services.board.store import TABLES, BoardFunds, BoardProject
from shared.db import create_tables, make_engine

T = rm.Thresholds.load()
UNITS = ("TS01", "TS02", "DEVZONE")
D0 = dt.date(2022, 1, 3)


def _day(n: int) -> str:
    return (D0 + dt.timedelta(days=n)).isoformat()


def _events(rng: random.Random, n_projects: int = 40) -> list[tuple[str, str, dict[str, Any]]]:
    """(stream, subject, event) in an order a real run could deliver them."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    pids = []
    for i in range(n_projects):
        unit = rng.choice(UNITS)
        pid = f"{unit}-L{i}"
        pids.append(pid)
        out.append(
            (
                "PROJECT",
                "project.lead",
                {
                    "project_id": pid,
                    "unit": unit,
                    "data": {
                        "title": f"p{i}",
                        "attracting_unit": unit,
                        "landing_area": "DEVZONE",
                        "kind": "industrial",
                        "planned_investment": "200000000",
                        "reported_on": _day(rng.randrange(0, 60)),
                    },
                },
            )
        )
        terminated = rng.random() < 0.15
        out.append(
            (
                "REVIEW",
                "review.screened",
                {
                    "project_id": pid,
                    "outcome": "terminated" if terminated else "accepted",
                    "track": None if terminated else rng.choice(("major", "standard")),
                    "reasons": ["outside_catalogue"] if terminated else [],
                },
            )
        )
    for i, pid in enumerate(rng.sample(pids, n_projects // 2)):
        meeting = f"M{i}"
        on = rng.randrange(20, 120)
        decision = {
            "project_id": pid,
            "data": {
                "project_id": pid,
                "meeting_id": meeting,
                "decision": rng.choice(("approved", "approved", "rejected")),
                "sponsor_leader": rng.choice(("L01", "L02")),
            },
        }
        meeting_event = {"data": {"meeting_id": meeting, "on": _day(on), "agenda": [pid]}}
        # Half the decisions arrive before their meeting: its date comes later.
        pair = [("project.meeting", meeting_event), ("project.decision", decision)]
        for subject, event in pair if rng.random() < 0.5 else pair[::-1]:
            out.append(("PROJECT", subject, event))
        for _ in range(rng.randrange(0, 3)):
            out.append(
                (
                    "PROJECT",
                    "project.visit",
                    {"project_id": pid, "data": {"on": _day(on + rng.randrange(1, 60))}},
                )
            )
    for pid in rng.sample(pids, n_projects // 2):
        t0 = rng.randrange(30, 200)
        amount = rng.choice(("50000000", "100000000", "250000000"))
        steps = [("signed", t0, amount)]
        steps += [(m, t0 + rng.randrange(5, 90), None) for m in ("waiting_for_land", "started")]
        steps += [(m, t0 + rng.randrange(20, 150), None) for m in ("lacking_funds", "completed")]
        for milestone, on, amount_ in rng.sample(steps, rng.randrange(1, len(steps) + 1)):
            data: dict[str, Any] = {"project_id": pid, "milestone": milestone, "on": _day(on)}
            if amount_:
                data["amount"] = amount_
            out.append(("PROJECT", "project.milestone", {"project_id": pid, "data": data}))
        for k in range(rng.randrange(0, 3)):
            funds_id = f"F{k}"
            arrived = {
                "project_id": pid,
                "data": {
                    "project_id": pid,
                    "funds_id": funds_id,
                    "amount": "1000000",
                    "currency": rng.choice(("CNY", "CNY", "USD")),
                    "arrived_on": _day(t0 + rng.randrange(1, 100)),
                },
            }
            score = [("SCORE", "score.held", {"project_id": pid, "funds_id": funds_id})]
            score[0][2]["reason"] = "not recognised yet / 尚未认定"
            if rng.random() < 0.6:
                credit = {
                    "project_id": pid,
                    "funds_id": funds_id,
                    "amount_rmb": "1000000",
                    "points": "100",
                    "multiplier": "1",
                    "credited_to": [pid.split("-")[0]],
                    "year": 2022,
                    "quarter": 2,
                }
                score.append(("SCORE", "score.credited", credit))
            # A hold may arrive before the funds record it is about.
            first = [("PROJECT", "project.funds", arrived)]
            out += score + first if rng.random() < 0.3 else first + score
    out += _amendments(rng, out)
    # Streams interleave; each stream's own order is kept.
    by_stream: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for e in out:
        by_stream.setdefault(e[0], []).append(e)
    merged = []
    while any(by_stream.values()):
        stream = rng.choice([s for s, q in by_stream.items() if q])
        merged.append(by_stream[stream].pop(0))
    return merged


def _amendment(
    subject: str, target: dict[str, Any], before: dict[str, Any], after: dict[str, Any] | None
) -> tuple[str, str, dict[str, Any]]:
    """project.correction (`after`) or project.withdrawal (None) of `target`, as intake sends."""
    data: dict[str, Any] = {"target": target, "reason": "录入有误 / entered wrongly"}
    event: dict[str, Any] = {
        "project_id": target["project_id"],
        "unit": "CENTER",
        "version": 2,
        "owner": target["project_id"].split("-")[0],
        "before": before,
        "data": data,
    }
    if after is not None:
        data |= {"correction_id": f"C{rng_id(target)}", "changes": {}}
        event |= {
            "after": after,
            "changes": [
                {"field": k, "old": before.get(k), "new": v}
                for k, v in after.items()
                if before.get(k) != v
            ],
        }
    return ("PROJECT", subject, event)


def rng_id(target: dict[str, Any]) -> str:
    return "-".join(str(v) for v in target.values())


def _amendments(
    rng: random.Random, out: list[tuple[str, str, dict[str, Any]]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """Corrections and withdrawals (更正、撤回) of some leads, funds records and milestones,
    each after its record in the PROJECT stream; some sent twice (a re-publish: new seq)."""
    fixes: list[tuple[str, str, dict[str, Any]]] = []
    last_lead: dict[str, dict[str, Any]] = {}
    for _, subject, event in out:
        data = event.get("data") or {}
        if subject == "project.lead":
            last_lead[event["project_id"]] = data
            if rng.random() < 0.2:
                target = {"kind": "lead", "project_id": event["project_id"]}
                after = data | {"title": data["title"] + " (更正)", "planned_investment": "3"}
                fixes.append(_amendment("project.correction", target, data, after))
        elif subject == "project.funds" and rng.random() < 0.4:
            pid = event["project_id"]
            target = {"kind": "funds", "project_id": pid, "funds_id": data["funds_id"]}
            if rng.random() < 0.5:
                fixes.append(_amendment("project.withdrawal", target, data, None))
            else:
                on = dt.date.fromisoformat(data["arrived_on"]) + dt.timedelta(
                    rng.randrange(-40, 40)
                )
                after = data | {
                    "amount": "2500000",
                    "currency": "CNY",
                    "arrived_on": on.isoformat(),
                }
                fixes.append(_amendment("project.correction", target, data, after))
        elif subject == "project.milestone" and rng.random() < 0.4:
            pid = event["project_id"]
            target = {"kind": "milestone", "project_id": pid, "milestone": data["milestone"]}
            if rng.random() < 0.4:
                fixes.append(_amendment("project.withdrawal", target, data, None))
            else:
                on = dt.date.fromisoformat(data["on"]) + dt.timedelta(rng.randrange(-30, 60))
                after = data | {"on": on.isoformat()}
                if data["milestone"] == "signed":
                    after["amount"] = rng.choice(("50000000", "300000000"))
                fixes.append(_amendment("project.correction", target, data, after))
    for pid in rng.sample(sorted(last_lead), len(last_lead) // 6):
        target = {"kind": "lead", "project_id": pid}
        fixes.append(_amendment("project.withdrawal", target, last_lead[pid], None))
    fixes += rng.sample(fixes, len(fixes) // 5)  # published again: another stream sequence
    return fixes


def _recount(session: Session, unit: str | None, clock: dt.date, t: rm.Thresholds) -> dict:
    projects = [
        p
        for p in session.exec(select(BoardProject)).all()
        if unit is None or p.attracting_unit == unit
    ]
    by_stage = dict.fromkeys(rm.STAGE_KEYS, 0)
    lights = dict.fromkeys(rm.LIGHTS, 0)
    quarters = [0, 0, 0, 0]
    for p in projects:
        by_stage[p.stage] += 1
        colour = rm.light(p, clock, t)[0]
        if colour is not None:
            lights[colour] += 1
        big = p.signed_fen is not None and p.signed_fen >= t.signing_min * 100
        if big and p.signed_on and dt.date(clock.year, 1, 1) <= p.signed_on <= clock:
            quarters[(p.signed_on.month - 1) // 3] += 1
    held = sum(
        1
        for f in session.exec(select(BoardFunds)).all()
        if f.state == "held" and not f.withdrawn and (unit is None or f.unit == unit)
    )
    funds: dict[str, dict[str, int]] = {}
    for f in session.exec(select(BoardFunds)).all():
        if f.withdrawn or not f.rmb_fen or not f.month.startswith(str(clock.year)):
            continue
        if unit is None or f.unit == unit:
            by = funds.setdefault(f.unit, {})
            by[f.month] = by.get(f.month, 0) + f.rmb_fen
    months = {u: {m: str(rm.from_fen(n)) for m, n in by.items() if n} for u, by in funds.items()}
    return {
        "by_stage": by_stage,
        "lights": lights,
        "signed": quarters,
        "held": held,
        "funds": {u: by for u, by in months.items() if by},
    }


def _counted(session: Session, viewer: Viewer, clock: dt.date, t: rm.Thresholds) -> dict:
    signing = Signing({}, t.signing_min, check_after=1, expected_share=0)  # type: ignore[arg-type]
    ov = overview(session, viewer, clock, t, signing)
    return {
        "by_stage": ov["by_stage"],
        "lights": ov["lights"],
        "signed": [s["actual"] for s in ov["signings"]],
        "held": ov["funds_held"],
        "funds": ov["funds_by_unit_month"],
    }


def _check(session: Session, t: rm.Thresholds, clocks: list[dt.date]) -> None:
    for clock in clocks:
        for unit in (None, *UNITS):
            viewer = OPEN if unit is None else Viewer("unit", unit)
            assert _counted(session, viewer, clock, t) == _recount(session, unit, clock, t), (
                unit,
                clock,
            )


def _check_amendments(session: Session, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """What the corrections and withdrawals sent make of the rows (not the counts: above)."""
    amended = [(s, e) for _, s, e in events if s in ("project.correction", "project.withdrawal")]
    gone = {e["project_id"] for s, e in amended if s.endswith("withdrawal") and _kind(e) == "lead"}
    titles = {
        e["project_id"]: e["after"]["title"]
        for _, e in amended
        if "after" in e and _kind(e) == "lead"
    }
    funds_gone = {
        (e["project_id"], e["data"]["target"]["funds_id"])
        for s, e in amended
        if s.endswith("withdrawal") and _kind(e) == "funds"
    }
    assert gone and titles and funds_gone and any(_kind(e) == "milestone" for _, e in amended)
    projects = {p.project_id: p for p in session.exec(select(BoardProject)).all()}
    assert {pid for pid, p in projects.items() if p.stage == "withdrawn"} == gone
    for pid, title in titles.items():
        assert projects[pid].title == title and projects[pid].planned_investment == "3"
    funds = session.exec(select(BoardFunds)).all()
    withdrawn = {(f.project_id, f.funds_id) for f in funds if f.withdrawn}
    of_gone = {(f.project_id, f.funds_id) for f in funds if f.project_id in gone}
    assert withdrawn == funds_gone | of_gone


def _kind(event: dict[str, Any]) -> str:
    return str(event["data"]["target"]["kind"])


CLOCKS = [D0 + dt.timedelta(days=n) for n in range(0, 330, 15)]


def test_kept_counts_equal_a_recount_after_every_batch(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, TABLES)
    rng = random.Random(15)
    events = _events(rng)
    seq = {"PROJECT": 0, "REVIEW": 0, "SCORE": 0}
    items = []
    for stream, subject, event in events:
        seq[stream] += 1
        items.append(ingest.Item(stream, seq[stream], subject, event, json.dumps(event)))
    start = 0
    while start < len(items):
        size = rng.choice((1, 2, 7, 30))
        batch = items[start : start + size]
        if start and rng.random() < 0.3:
            batch = items[max(0, start - 3) : start] + batch  # redelivered with the next run
        with Session(engine) as session:
            ingest.ingest(session, batch, T)
            session.commit()
        start += size
        if rng.random() < 0.2 or start >= len(items):
            with Session(engine) as session:
                _check(session, T, CLOCKS[::10])
    with Session(engine) as session:
        _check(session, T, CLOCKS)
        seen = [_recount(session, None, clock, T) for clock in CLOCKS]
        _check_amendments(session, events)
    # The mix reaches every light and several stages, and holds some funds.
    assert all(any(s["lights"][k] for s in seen) for k in rm.LIGHTS), seen[-1]
    assert sum(1 for n in seen[-1]["by_stage"].values() if n) >= 5, seen[-1]
    assert seen[-1]["by_stage"]["withdrawn"] and seen[-1]["funds"], seen[-1]
    assert seen[-1]["held"] and sum(seen[-1]["signed"]), seen[-1]

    # Other thresholds (notify's ruleset changed): lights and signing counts rebuilt.
    other = dataclasses.replace(T, visit_red=T.visit_red + 9, signing_min=250_000_000)
    with Session(engine) as session:
        ingest.relight_all(session, other)
        session.commit()
    with Session(engine) as session:
        _check(session, other, CLOCKS)
    # ... and a batch after it moves the rebuilt counts by the same thresholds.
    with Session(engine) as session:
        extra = {
            "project_id": "TS01-L0",
            "data": {"project_id": "TS01-L0", "on": "2022-05-01", "milestone": "completed"},
        }
        item = ingest.Item("PROJECT", 10**6, "project.milestone", extra, json.dumps(extra))
        ingest.ingest(session, [item], other)
        session.commit()
    with Session(engine) as session:
        _check(session, other, CLOCKS[::3])
