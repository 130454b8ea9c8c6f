"""One replica of a partitioned consumer, as its own process (tests/test_partitions.py).

Each batch is recorded into SQLite in one transaction: every delivery handled, and the
first handling of each (key, seq) (a unique constraint; a redelivery of one already
recorded, e.g. committed just before a kill -9, is a repeat, not a second row).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import nats

from shared.partitions import PartitionConsumer, partitioning

SUBJECTS = ["project.*.*"]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--member", required=True)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--ack-wait", type=float, default=2.0)
    ap.add_argument("--lease", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--work", type=float, default=0.02, help="seconds per message")
    ap.add_argument("--wait-file", default="", help="join only once this file exists")
    args = ap.parse_args()

    if args.wait_file:
        while not Path(args.wait_file).exists():
            await asyncio.sleep(0.02)
    db = sqlite3.connect(args.db, timeout=30)
    db.execute("PRAGMA busy_timeout=30000")
    parts = partitioning(SUBJECTS, args.partitions)

    async def handler(msgs: list[nats.aio.msg.Msg]) -> None:
        await asyncio.sleep(args.work * len(msgs))
        now = time.time()
        rows = []
        for m in msgs:
            body = json.loads(m.data)
            p = int(m.subject.split(".")[2])
            rows.append((body["key"], body["seq"], args.member, p, m.metadata.num_delivered, now))
        with db:
            db.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?, ?)", rows)

    async def dead_letter(msg: nats.aio.msg.Msg, exc: BaseException) -> None:
        raise AssertionError(f"nothing should be dead-lettered here: {msg.subject}: {exc!r}")

    nc = await nats.connect(args.url)
    consumer = PartitionConsumer(
        nc.jetstream(),
        service="worker",
        stream="PROJECT",
        partitioning=parts,
        handler=handler,
        dead_letter=dead_letter,
        ack_wait_s=args.ack_wait,
        lease_s=args.lease,
        batch=args.batch,
        fetch_timeout_s=0.5,
        member=args.member,
    )
    task = asyncio.create_task(consumer.run())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
