"""Board benchmark: server time per page at the sample year and at a province-size year.

    .venv/bin/python bench/board.py [--leads 100000] [--samples samples/year-2022.jsonl]
                                    [--requests 200] [--database-url URL] [--fast]
                                    [--reuse board.db] [--pages overview,project]

Fills the board's own tables straight from a generated year (samples/generate.py), not
through NATS: each inbound line becomes the canonical project.* event intake would emit,
and each lead a review.screened (major track at 100 million yuan and above), folded in by
the board's own `ingest`. Then it asks each page `--requests` times in-process (ASGI, the
same app uvicorn serves, auth off, business clock) and prints p50 and p99 server time per
page. Target: p99 < 300 ms for the overview and a project page at 100,000 leads. Numbers
only: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STREAM = {"project": "PROJECT", "review": "REVIEW"}


def canonical(lines: Iterator[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(subject, event) as intake and review would publish them for valid, first-sent lines."""
    seen: set[str] = set()
    for line in lines:
        if line.get("case") or line["msg_id"] in seen:
            continue  # bad input intake refuses, and re-sends it drops
        seen.add(line["msg_id"])
        _, unit, kind = line["subject"].split(".")
        data = line["data"]
        pid = f"{unit}-{data['lead_id']}" if kind == "lead" else data.get("project_id")
        event = {
            "event_id": line["msg_id"],
            "project_id": pid,
            "unit": unit,
            "idempotency_key": line["msg_id"],
            "received_at": "2022-01-01T00:00:00Z",
            "data": data,
        }
        yield f"project.{kind}", event
        if kind == "lead":
            major = float(data["planned_investment"]) >= 100_000_000
            yield (
                "review.screened",
                {
                    "project_id": pid,
                    "outcome": "accepted",
                    "track": "major" if major else "standard",
                    "reasons": [],
                    "explanation": {
                        "ruleset_id": "review",
                        "version": "2022.1",
                        "matched": ["major_project"] if major else [],
                        "parameters": {"major_project_min_investment": 100000000},
                        "deciding_rule": "major_project" if major else None,
                    },
                },
            )


def fill(engine: Any, lines: Iterator[dict[str, Any]], batch: int = 2000) -> tuple[int, int]:
    from services.board import ingest
    from shared.db import unit_of_work

    seq = {"PROJECT": 0, "REVIEW": 0}
    items: list[Any] = []
    count = projects = 0
    for subject, event in canonical(lines):
        stream = STREAM[subject.split(".")[0]]
        seq[stream] += 1
        items.append(
            ingest.Item(stream, seq[stream], subject, event, json.dumps(event, ensure_ascii=False))
        )
        projects += subject == "project.lead"
        if len(items) >= batch:
            with unit_of_work(engine) as session:
                count += ingest.ingest(session, items)
            items = []
    if items:
        with unit_of_work(engine) as session:
            count += ingest.ingest(session, items)
    return count, projects


def _blank(model: Any, **values: Any) -> SimpleNamespace:
    """A plain stand-in for a table row: the read model's folds duck-type, and a plain
    attribute costs a microsecond where SQLModel's instrumented one costs twenty."""
    fields = {k: f.default for k, f in model.model_fields.items()}
    return SimpleNamespace(**(fields | values))


def fill_fast(engine: Any, lines: Iterator[dict[str, Any]]) -> tuple[int, int]:
    """The same folds as `ingest` (services.board.readmodel), in memory, then bulk inserts.

    For a province-size year, where one transaction per run through the ORM would take the
    better part of an hour on this machine. Each CNY funds record is also credited (points
    = yuan / 10,000, to its attracting unit), so the ranking has rows to rank.
    """
    from sqlalchemy import insert

    from services.board import readmodel as rm
    from services.board.store import (
        BoardEvent,
        BoardFunds,
        BoardMeeting,
        BoardPoints,
        BoardProject,
        BoardState,
    )

    projects: dict[str, SimpleNamespace] = {}
    funds: dict[tuple[str, str], SimpleNamespace] = {}
    meetings: dict[str, dt.date] = {}
    points: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    seq = {"PROJECT": 0, "REVIEW": 0, "SCORE": 0}
    clock: dt.date | None = None
    leads = 0

    def flush_events() -> None:
        with engine.begin() as conn:
            conn.execute(insert(BoardEvent.__table__), events)  # type: ignore[attr-defined]
        events.clear()

    def add_event(subject: str, event: dict[str, Any], day: dt.date | None) -> None:
        stream = subject.split(".")[0].upper()
        seq[stream] += 1
        events.append(
            {
                "stream": stream,
                "seq": seq[stream],
                "subject": subject,
                "project_id": event.get("project_id"),
                "day": day,
                "body": json.dumps(event, ensure_ascii=False),
            }
        )
        if len(events) >= 20000:
            flush_events()

    for subject, event in canonical(lines):
        day = rm.business_day(subject, event)
        if day is not None and (clock is None or day > clock):
            clock = day
        add_event(subject, event, day)
        pid = event.get("project_id")
        data = event.get("data") or {}
        if subject == "project.meeting":
            meetings[str(data["meeting_id"])] = rm.parse_day(data["on"])  # type: ignore[assignment]
            continue
        if not pid:
            continue
        p = projects.get(pid) or projects.setdefault(pid, _blank(BoardProject, project_id=pid))
        if subject.startswith("project."):
            leads += subject == "project.lead"
            meeting_day = (
                meetings.get(str(data.get("meeting_id"))) if subject == "project.decision" else None
            )
            rm.apply_project_event(p, subject, event, meeting_day)  # type: ignore[arg-type]
            if subject == "project.funds":
                f = _blank(BoardFunds, project_id=pid, funds_id=str(data["funds_id"]))
                funds[(pid, f.funds_id)] = f
                rm.apply_funds_arrived(f, event, p.attracting_unit)  # type: ignore[arg-type]
                if f.currency == "CNY":
                    amount = rm.money(f.amount)
                    credit = {
                        "project_id": pid,
                        "funds_id": f.funds_id,
                        "year": f.arrived_on.year,
                        "quarter": (f.arrived_on.month - 1) // 3 + 1,
                        "amount_rmb": str(amount),
                        "multiplier": "1",
                        "points": str((amount / 10000).quantize(rm.Decimal("0.01"))),
                        "credited_to": [p.attracting_unit],
                        "explanation": {},
                    }
                    add_event("score.credited", credit, None)
                    rm.apply_score_event(f, "score.credited", credit)  # type: ignore[arg-type]
                    points.append(
                        {
                            "project_id": pid,
                            "funds_id": f.funds_id,
                            "subject": p.attracting_unit,
                            "points_fen": rm.to_fen(credit["points"]),
                            "year": credit["year"],
                            "quarter": credit["quarter"],
                            "arrived_on": f.arrived_on,
                            "active": True,
                        }
                    )
        else:
            rm.apply_review_event(p, subject, event)  # type: ignore[arg-type]
    if events:
        flush_events()
    thresholds = rm.Thresholds.load()
    for p in projects.values():
        rm.relight(p, thresholds)  # type: ignore[arg-type]
    with engine.begin() as conn:
        for table, rows in (
            (BoardProject, [vars(p) for p in projects.values()]),
            (BoardFunds, [vars(f) for f in funds.values()]),
            (BoardPoints, points),
            (
                BoardMeeting,
                [{"meeting_id": k, "on": v, "agenda": "[]"} for k, v in meetings.items()],
            ),
            (
                BoardState,
                [
                    {"key": "clock", "value": clock.isoformat() if clock else ""},
                    {"key": "version", "value": "1"},
                ],
            ),
        ):
            for start in range(0, len(rows), 20000):
                conn.execute(insert(table.__table__), rows[start : start + 20000])  # type: ignore[attr-defined]
    from services.board.ingest import rebuild_months, rebuild_tallies
    from shared.db import unit_of_work

    with unit_of_work(engine) as session:
        rebuild_months(session)
        rebuild_tallies(session, thresholds)
    return sum(seq.values()), leads


def synth_rates(engine: Any, year: int = 2022, part_size: int = 500) -> int:
    """score.rates for the bench, folded by the board's own `ingest.apply_rates` in parts of
    `part_size` projects: every project signed in `year` counted (performed and landed if it
    started by the year's end, contracted its signed amount, funds its RMB by then). The
    bench's figures, as its credits are: scoring does not run here."""
    from collections import defaultdict
    from decimal import Decimal

    from sqlmodel import col, func, select

    from services.board import ingest
    from services.board.store import BoardFunds, BoardProject, BoardRatesYear
    from services.scoring.assessment import Rates
    from shared.db import unit_of_work

    start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
    with unit_of_work(engine) as session:
        if session.get(BoardRatesYear, year) is not None:
            return 0
        P = BoardProject
        signed = session.exec(
            select(P.project_id, P.attracting_unit, P.signed_fen, P.started_on).where(
                col(P.signed_on) >= start, col(P.signed_on) <= end
            )
        ).all()
        funds = dict(
            session.exec(
                select(BoardFunds.project_id, func.sum(BoardFunds.rmb_fen))
                .where(col(BoardFunds.arrived_on) <= end, col(BoardFunds.rmb_fen).is_not(None))
                .group_by(BoardFunds.project_id)
            ).all()
        )
    projects: dict[str, Rates] = {}
    units: dict[str, Rates] = defaultdict(Rates)
    county = Rates()
    for pid, unit, fen, started_on in signed:
        done = int(started_on is not None and started_on <= end)
        r = Rates(1, done, done, Decimal(fen or 0) / 100, Decimal(funds.get(pid) or 0) / 100)
        projects[pid] = r
        units[unit].add(r)
        county.add(r)
    items = sorted(projects.items())
    parts = max(1, -(-len(items) // part_size))
    explanation = {"ruleset_id": "scoring", "version": "bench", "matched": [], "parameters": {}}
    for i in range(parts):
        event = {
            "year": year,
            "revision": 1,
            "part": i + 1,
            "parts": parts,
            "county": county.to_json(),
            "by_unit": {u: r.to_json() for u, r in sorted(units.items())},
            "by_project": {p: r.to_json() for p, r in items[i * part_size : (i + 1) * part_size]},
            "dropped": [],
            "projects": len(items),
            "definitions": {"performance": ["started"], "landing": ["started"]},
            "explanation": explanation | {"deciding_rule": None},
        }
        with unit_of_work(engine) as session:
            ingest.apply_rates(session, event)
    return len(items)


def upgrade(engine: Any) -> None:
    """Bring a kept bench database to the current tables: new columns, indexes and tables,
    then the derived values (lights' first days, monthly funds)."""
    from sqlalchemy import inspect, text

    from services.board import readmodel as rm
    from services.board.ingest import rebuild_months, relight_all
    from services.board.store import TABLES
    from shared.db import create_tables, unit_of_work

    create_tables(engine, TABLES)
    inspector = inspect(engine)
    with engine.begin() as conn:
        for model in TABLES:
            table = model.__table__  # type: ignore[attr-defined]
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    conn.execute(
                        text(
                            f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(engine.dialect)}"
                        )
                    )
    for model in TABLES:
        for index in model.__table__.indexes:  # type: ignore[attr-defined]
            index.create(engine, checkfirst=True)
    with unit_of_work(engine) as session:
        relight_all(session, rm.Thresholds.load())  # and the overview's counts, if not kept
        rebuild_months(session)


async def measure(app: Any, paths: list[str], requests: int) -> list[float]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://board") as client:
        await client.get(paths[0])  # the first request loads the directory and thresholds
        for i in range(requests):
            path = paths[i % len(paths)]
            started = time.perf_counter()
            response = await client.get(path)
            out.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--leads", type=int, default=0, help="generate this many leads (0: --samples)"
    )
    parser.add_argument("--samples", default=str(ROOT / "samples" / "year-2022.jsonl"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reuse", default=None, help="measure a board.db kept from an earlier run")
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument(
        "--pages", default="", help="only pages whose name has one of these words (comma-separated)"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fold in memory and bulk insert (the same folds; for 100,000 leads) instead of ingest",
    )
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="investflow-bench-board-")
    os.environ["INVESTFLOW_DATA_DIR"] = tmp
    os.environ["BOARD_CLOCK"] = "business"
    os.environ["BOARD_HTTP_AUTH"] = "0"
    if args.database_url:
        os.environ["BOARD_DATABASE_URL"] = args.database_url

    from services.board import app as board
    from services.board.store import BoardProject
    from shared.db import unit_of_work

    if args.reuse:
        os.environ["BOARD_DATABASE_URL"] = f"sqlite:///{args.reuse}"
    lines: Iterator[dict[str, Any]] = iter(())
    source = ""
    if args.reuse:
        pass
    elif args.leads:
        from samples.generate import generate

        lines = generate(args.leads, 2022, args.seed)
        source = f"{args.leads} generated leads"
    else:
        lines = (
            json.loads(line) for line in Path(args.samples).read_text(encoding="utf-8").splitlines()
        )
        source = Path(args.samples).name
    started = time.perf_counter()
    if args.reuse:
        upgrade(board.engine())
        with unit_of_work(board.engine()) as session:
            from sqlmodel import func, select

            from services.board.store import BoardEvent

            events = int(session.exec(select(func.count()).select_from(BoardEvent)).one())
            leads = int(session.exec(select(func.count()).select_from(BoardProject)).one())
        source = f"{args.reuse} (kept)"
    else:
        events, leads = (fill_fast if args.fast else fill)(board.engine(), lines)
    rated = synth_rates(board.engine())
    filled_s = time.perf_counter() - started
    with unit_of_work(board.engine()) as session:
        from sqlmodel import select

        ids = list(session.exec(select(BoardProject.project_id)).all())
    rng = random.Random(args.seed)
    some = [rng.choice(ids) for _ in range(50)]
    pages = {
        "overview /": ["/"],
        "project page /projects/{id}": [f"/projects/{p}" for p in some],
        "project list /projects (filters)": [
            "/projects",
            "/projects?light=red",
            "/projects?unit=TS01&stage=review",
            "/projects?sponsor=L03",
        ],
        "red list /red": ["/red"],
        "ranking /ranking": ["/ranking"],
        "api overview /api/overview": ["/api/overview"],
    }
    if args.pages:
        words = [w.strip() for w in args.pages.split(",") if w.strip()]
        pages = {k: v for k, v in pages.items() if any(w in k for w in words)}
    print(
        f"board bench: {source}: {leads} leads, {events} events stored in {filled_s:.1f}s "
        f"({'bulk' if args.fast else 'ingest'}); "
        f"{platform.machine()} {os.cpu_count()} cpu, {'PostgreSQL' if args.database_url else 'SQLite'}; "
        f"{args.requests} requests per page; score.rates synthesised for {rated} signed projects "
        f"(0: kept from before)",
        flush=True,
    )
    print(f"{'page':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    results = {}
    for name, paths in pages.items():
        ms = asyncio.run(measure(board.http, paths, args.requests))
        results[name] = {"p50": pct(ms, 0.5), "p99": pct(ms, 0.99), "mean": statistics.mean(ms)}
        print(f"{name:<36} {pct(ms, 0.5):>8.1f} {pct(ms, 0.99):>8.1f} {max(ms):>8.1f}", flush=True)
    if args.pages:
        return 0  # a partial run: the kept results stay whole
    out = ROOT / "bench" / "results" / f"board-{leads}.json"
    out.write_text(
        json.dumps(
            {
                "source": source,
                "leads": leads,
                "events": events,
                "when": dt.datetime.now(dt.UTC).isoformat(),
                "pages": results,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
