"""Intake's parse and record, alone: the sample year replayed line by line into SQLite.

    .venv/bin/python bench/intake_record.py [--batch N] [--profile N] [--database URL]

Each line is parsed (validate.py) and recorded (record.py) as the consumer does it, `--batch`
lines per transaction (1: a transaction per line; 64: the consumer's batch). No NATS: this is
the CPU intake spends per message on its own tables. Prints CPU ms per line for parse and for
record (the transaction included; time waiting on the disk is not counted); `--profile N` prints cProfile's top N by own time.
Numbers only: nothing here asserts them.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.intake import store  # noqa: E402
from services.intake.record import record  # noqa: E402
from services.intake.validate import parse  # noqa: E402
from shared.db import create_tables, make_engine, unit_of_work  # noqa: E402
from shared.directory import load_directory  # noqa: E402
from shared.settings import Settings  # noqa: E402

YEAR = ROOT / "samples" / "year-2022.jsonl"


def lines() -> list[tuple[str, str, str, bytes]]:
    out = []
    for text in YEAR.read_text("utf-8").splitlines():
        line = json.loads(text)
        _, unit, kind = line["subject"].split(".", 2)
        raw = line["raw"].encode() if "raw" in line else json.dumps(line["data"]).encode()
        out.append((unit, kind, line["msg_id"], raw))
    return out


def replay(url: str, batch: int, profiler: cProfile.Profile | None) -> tuple[int, float, float]:
    settings = Settings.from_env()
    directory = load_directory(settings.units_file)
    engine = make_engine(url)
    create_tables(engine, store.TABLES)
    year = lines()
    parse_s = record_s = 0.0
    if profiler is not None:
        profiler.enable()
    for i in range(0, len(year), batch):
        chunk = year[i : i + batch]
        t0 = time.process_time()
        parsed = [
            (key, parse(unit, kind, raw, directory, settings.max_payload_bytes))
            for unit, kind, key, raw in chunk
        ]
        t1 = time.process_time()
        now = dt.datetime.now(dt.UTC)
        with unit_of_work(engine) as session:
            for key, p in parsed:
                if not isinstance(p, list):
                    record(session, p, key, now)
        t2 = time.process_time()
        parse_s += t1 - t0
        record_s += t2 - t1
    if profiler is not None:
        profiler.disable()
    engine.dispose()
    return len(year), parse_s, record_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--database", default="", help="default: a new SQLite file")
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'intake.db'}"
        n, parse_s, record_s = replay(url, args.batch, profiler)
    print(
        f"{n} lines, {args.batch} per transaction, CPU: parse {parse_s * 1000 / n:.3f} ms/line, "
        f"record {record_s * 1000 / n:.3f} ms/line, total {(parse_s + record_s) * 1000 / n:.3f}"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
