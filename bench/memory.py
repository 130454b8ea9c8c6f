"""Scoring's memory over a growing year, in-process (issue 17): RSS per 1,000 leads.

    .venv/bin/python bench/memory.py [--leads 3000] [--base 1000] [--seed 2022]

A `--base`-lead year from samples/generate.py goes once through intake's and review's own
handlers (SQLite files, one transaction per message, as the services run); what they would
emit on `project.*` and `review.recognition` is scoring's input. Scoring then applies it
`--leads / --base` times over, each copy under other lead ids (so the year grows, it does
not repeat), in runs of 5 messages a transaction, and recomputes score.rates as its
publisher does (assessment_rates.settle, at most once a second and at least twice as long
as the last one took). Each way of reading the year runs in its own process, so one's high
water mark does not hide the other's:
- `whole`: the year read at once (assessment_rates.CHUNK larger than the year: how the
  rates were read before issue 17's fix);
- `chunked`: assessment_rates.CHUNK projects at a time (the service's way).
It prints scoring's RSS every 1,000 leads and the growth per 1,000 leads, and review's
remembered recognitions (cases._remembered, bounded by cases._REMEMBERED) after the replay.
Numbers only; nothing asserts them. Not tracemalloc: its own tables grow with every traced
block and hide what the process holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Input = tuple[str, str, str | None]  # subject, body, Nats-Msg-Id (recognitions)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def replay(year_file: Path, db_dir: Path) -> tuple[list[Input], int]:
    """The year through intake and review: scoring's inputs, and review's remembered count."""
    from services.intake import store as intake_store
    from services.intake.record import Recorded
    from services.intake.record import record as intake_record
    from services.intake.validate import Parsed, parse
    from services.review import cases
    from services.review import store as review_store
    from services.scoring.inputs import INPUTS
    from shared import subjects
    from shared.db import create_tables, make_engine, unit_of_work
    from shared.directory import load_directory
    from shared.rules import default_registry
    from shared.settings import Settings

    settings = Settings.from_env()
    directory = load_directory(settings.units_file)
    intake_db = make_engine(f"sqlite:///{db_dir / 'intake.db'}")
    review_db = make_engine(f"sqlite:///{db_dir / 'review.db'}")
    create_tables(intake_db, intake_store.TABLES)
    create_tables(review_db, review_store.TABLES)
    rules = default_registry()
    cases.CLOCK = "business"  # a replay of a past year, as the soak's services see it
    now = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    out: list[Input] = []
    for line in year_file.read_text(encoding="utf-8").splitlines():
        msg = json.loads(line)
        _, unit, kind = msg["subject"].split(".", 2)
        raw = msg["raw"].encode() if "raw" in msg else json.dumps(msg["data"]).encode()
        parsed = parse(unit, kind, raw, directory, settings.max_payload_bytes)
        if not isinstance(parsed, Parsed):
            continue
        with unit_of_work(intake_db) as session:
            result = intake_record(session, parsed, msg["msg_id"], now)
        if not isinstance(result, Recorded):
            continue
        for row in result.outbox:
            if row.subject in INPUTS:
                out.append((row.subject, row.body, None))
            if row.subject.startswith("project."):
                with unit_of_work(review_db) as session:
                    emitted = cases.apply(session, row.subject, json.loads(row.body), rules)
                out.extend(
                    (e.subject, e.body, e.msg_id)
                    for e in emitted
                    if e.subject == subjects.REVIEW_RECOGNITION
                )
    return out, len(cases._remembered)


def copies(inputs: list[Input], year: int, n: int) -> list[Input]:
    """`n` copies of the year's inputs, each under its own lead ids (ZS<year>- → Z<k><year>-)."""
    tag = f"ZS{year}-"
    out: list[Input] = []
    for k in range(n):
        new = f"Z{chr(ord('A') + k)}{year}-" if k else tag
        out.extend((s, b.replace(tag, new), m.replace(tag, new) if m else m) for s, b, m in inputs)
    return out


def score(inputs_file: Path, db: Path, chunk: int | None, every: int) -> list[dict[str, Any]]:
    """Apply the inputs as scoring's consumer and rates publisher do; RSS every `every` leads."""
    from services.scoring import assessment_rates, store
    from services.scoring.inputs import inbox_key, parse
    from services.scoring.record import apply
    from shared.db import create_tables, make_engine, unit_of_work
    from shared.rules import default_registry

    if chunk is not None:
        assessment_rates.CHUNK = chunk
    inputs: list[Input] = pickle.loads(inputs_file.read_bytes())
    engine = make_engine(f"sqlite:///{db}")
    create_tables(engine, store.TABLES)
    rules = default_registry()
    points = [{"leads": 0, "rss_mb": round(rss_mb(), 1), "s": 0.0}]
    started = last = time.monotonic()
    took, leads, seq = 0.0, 0, 0
    for i in range(0, len(inputs), 5):
        with unit_of_work(engine) as session:
            for subject, body, msg_id in inputs[i : i + 5]:
                seq += 1
                event = parse(subject, body.encode())  # as the consumer parses (inputs.py)
                assert event is not None
                headers = {"Nats-Msg-Id": msg_id} if msg_id else None
                key = inbox_key(subject, event, headers)  # type: ignore[arg-type]
                apply(session, event, key, subject, seq, rules, dt.datetime.now(dt.UTC))
                if subject == "project.lead":
                    leads += 1
                    if leads % every == 0:
                        points.append(
                            {
                                "leads": leads,
                                "rss_mb": round(rss_mb(), 1),
                                "s": round(time.monotonic() - started, 1),
                            }
                        )
        if time.monotonic() - last >= max(1.0, 2 * took):  # the publisher's pace (app.py)
            t = time.monotonic()
            with unit_of_work(engine) as session:
                assessment_rates.settle(session, rules)
            last = time.monotonic()
            took = last - t
    engine.dispose()
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=3000)
    parser.add_argument("--base", type=int, default=1000, help="leads in the generated year")
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--every", type=int, default=1000, help="RSS every this many leads")
    parser.add_argument("--modes", default="whole,chunked")
    parser.add_argument(
        "--_score", nargs=3, metavar=("INPUTS", "DB", "CHUNK"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args._score:
        inputs, db, chunk = args._score
        points = score(Path(inputs), Path(db), int(chunk) if chunk != "-" else None, args.every)
        print(json.dumps(points))
        return 0

    year = 2022
    with tempfile.TemporaryDirectory(prefix="investflow-memory-") as tmp:
        work = Path(tmp)
        year_file = work / "year.jsonl"
        subprocess.run(
            [sys.executable, str(ROOT / "samples" / "generate.py"), "--leads", str(args.base),
             "--year", str(year), "--seed", str(args.seed), "--out", str(year_file)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        t = time.monotonic()
        inputs, remembered = replay(year_file, work)
        print(
            f"memory: {args.base}-lead year (seed {args.seed}) through intake and review in "
            f"{time.monotonic() - t:.0f} s: {len(inputs)} scoring inputs; review remembers "
            f"{remembered} recognitions (bounded at its _REMEMBERED)",
            flush=True,
        )
        n = max(1, -(-args.leads // args.base))
        inputs_file = work / "inputs.pickle"
        inputs_file.write_bytes(pickle.dumps(copies(inputs, year, n)))
        for mode in args.modes.split(","):
            chunk = str(10**9) if mode == "whole" else "-"
            db = work / f"scoring-{mode}.db"
            done = subprocess.run(
                [sys.executable, __file__, "--every", str(args.every),
                 "--_score", str(inputs_file), str(db), chunk],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            points = json.loads(done.stdout.splitlines()[-1])
            first, end = points[0], points[-1]
            per_k = (end["rss_mb"] - first["rss_mb"]) / max(1, end["leads"]) * 1000
            shown = ", ".join(f"{p['leads']}: {p['rss_mb']}" for p in points)
            print(
                f"scoring ({mode:7}): RSS MB at leads {shown}; "
                f"{per_k:+.1f} MB per 1,000 leads; {end['s']:.0f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
