"""`investflow dlq list|replay`: what failed max_deliver times, and re-driving it once fixed.

Each dead letter (stream DLQ, subject `dlq.<service>.<stream>`) carries the original
subject, headers, body, the error and the delivery count (shared/messaging.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from shared.settings import Settings, connect_nats


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dlq = subparsers.add_parser(
        "dlq", help="dead letters: messages a service gave up on, with their error"
    )
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = sub.add_parser("list", help="every dead letter: sequence, service, subject, error")
    listing.add_argument("--url", default=None, help="default: $NATS_URL")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=lambda a: asyncio.run(cmd_list(a)))
    replay = sub.add_parser(
        "replay", help="publish a dead letter's original message again, to its own subject"
    )
    replay.add_argument(
        "seq", type=int, nargs="+", metavar="SEQ", help="DLQ sequence numbers from `dlq list`"
    )
    replay.add_argument("--url", default=None, help="default: $NATS_URL")
    replay.set_defaults(func=lambda a: asyncio.run(cmd_replay(a)))


async def dead_letters(js: Any) -> list[tuple[int, dict[str, Any]]]:
    info = await js.stream_info("DLQ")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg("DLQ", seq)
        except Exception:  # purged or deleted
            continue
        out.append((seq, json.loads(msg.data)))
    return out


async def cmd_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    nc = await connect_nats(Settings.from_env(), args.url, max_reconnect_attempts=1)
    try:
        letters = await dead_letters(nc.jetstream())
    finally:
        await nc.close()
    for seq, d in letters:
        if args.json:
            print(json.dumps({"seq": seq} | d, ensure_ascii=False), file=out)
        else:
            print(
                f"{seq:>6}  {d['service']:<8} {d['subject']:<28} tries {d['deliveries']}  {d['error'][:90]}",
                file=out,
            )
    if not args.json:
        print(f"{len(letters)} dead letter(s) / 死信", file=out)
    return 0


async def cmd_replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    nc = await connect_nats(Settings.from_env(), args.url, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        letters = dict(await dead_letters(js))
        missing = [s for s in args.seq if s not in letters]
        if missing:
            print(
                f"no dead letter with sequence {', '.join(map(str, missing))} / 无此死信", file=out
            )
            return 1
        for seq in args.seq:
            d = letters[seq]
            headers = {k: v for k, v in d["headers"].items() if k != "Nats-Msg-Id"}
            # A fresh id: the original's is inside the duplicate window or already in a table.
            original = d["headers"].get("Nats-Msg-Id", f"seq{d.get('stream_seq')}")
            headers["Nats-Msg-Id"] = f"{original}:replay:{seq}"
            ack = await js.publish(d["subject"], d["body"].encode(), headers=headers)
            print(f"replayed {seq} to {d['subject']} as {ack.stream} #{ack.seq}", file=out)
    finally:
        await nc.close()
    return 0
