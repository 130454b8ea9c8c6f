"""The baseline hop of bench/pipeline.py: a raw nats-py relay with no logic.

    python bench/relay.py NATS_URL STREAM FILTER DURABLE NEXT_SUBJECT_PREFIX [SQLITE_FILE]

Pulls from STREAM (durable DURABLE, subjects FILTER) in batches, republishes each body to
NEXT_SUBJECT_PREFIX + `<kind>.<key>` of its subject (as the services key their events:
shared/subjects.py) with a derived Nats-Msg-Id, then acks.
The same shape as a service (durable pull, publish, ack), minus validation and storage.

With SQLITE_FILE it is the least an exactly-once service must do: each fetched batch is
written in one transaction (an inbox row per message, its key unique, and an outbox row
with the body to send) before anything is published or acked: storage, no logic.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig


def open_store(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # what the services use
    db.execute("CREATE TABLE IF NOT EXISTS inbox (msg_id TEXT PRIMARY KEY)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS outbox (msg_id TEXT PRIMARY KEY, subject TEXT, body BLOB)"
    )
    return db


def store(db: sqlite3.Connection, rows: list[tuple[str, str, bytes]]) -> None:
    db.execute("BEGIN")
    db.executemany("INSERT OR IGNORE INTO inbox VALUES (?)", [(r[0],) for r in rows])
    db.executemany("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?)", rows)
    db.execute("COMMIT")


def kind_and_key(subject: str) -> str:
    """`funds.TS01` of intake.TS01.funds; `funds.<key>` of a stored project.funds.<p>.<key>."""
    tokens = subject.split(".")
    if tokens[0] == "intake":
        return f"{tokens[2]}.{tokens[1]}"
    return f"{tokens[1]}.{tokens[-1]}"


async def main(
    url: str, stream: str, filter_subject: str, durable: str, prefix: str, db_path: str = ""
) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        filter_subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10000),
    )
    db = open_store(db_path) if db_path else None
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(256, timeout=1)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        if db_path:
            rows = [((m.headers or {}).get("Nats-Msg-Id", ""), m.subject, m.data) for m in msgs]
            await asyncio.to_thread(store, db, rows)
        acks = []
        for m in msgs:
            mid = (m.headers or {}).get("Nats-Msg-Id", "")
            acks.append(
                await js.publish_async(
                    prefix + kind_and_key(m.subject),
                    m.data,
                    headers={"Nats-Msg-Id": f"{durable}:{mid}"},
                )
            )
        await asyncio.gather(*acks)
        for m in msgs:
            await m.ack()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
