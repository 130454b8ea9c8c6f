"""Board benchmark: server time per page at the sample year and at a province-size year.

    .venv/bin/python bench/board.py [--leads 100000] [--samples samples/year-2022.jsonl]
                                    [--requests 200] [--database-url URL]

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


async def measure(app: Any, paths: list[str], requests: int) -> list[float]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://board") as client:
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
    parser.add_argument("--seed", type=int, default=2022)
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

    if args.leads:
        from samples.generate import generate

        lines: Iterator[dict[str, Any]] = generate(args.leads, 2022, args.seed)
        source = f"{args.leads} generated leads"
    else:
        lines = (
            json.loads(line) for line in Path(args.samples).read_text(encoding="utf-8").splitlines()
        )
        source = Path(args.samples).name
    started = time.perf_counter()
    events, leads = fill(board.engine(), lines)
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
    print(
        f"board bench: {source}: {leads} leads, {events} events stored in {filled_s:.1f}s; "
        f"{platform.machine()} {os.cpu_count()} cpu, {'PostgreSQL' if args.database_url else 'SQLite'}; "
        f"{args.requests} requests per page",
        flush=True,
    )
    print(f"{'page':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    results = {}
    for name, paths in pages.items():
        ms = asyncio.run(measure(board.http, paths, args.requests))
        results[name] = {"p50": pct(ms, 0.5), "p99": pct(ms, 0.99), "mean": statistics.mean(ms)}
        print(f"{name:<36} {pct(ms, 0.5):>8.1f} {pct(ms, 0.99):>8.1f} {max(ms):>8.1f}", flush=True)
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
