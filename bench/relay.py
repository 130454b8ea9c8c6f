"""The baseline hop of bench/pipeline.py: a raw nats-py relay with no logic.

    python bench/relay.py NATS_URL STREAM FILTER DURABLE NEXT_SUBJECT_PREFIX

Pulls from STREAM (durable DURABLE, subjects FILTER) in batches, republishes each body to
NEXT_SUBJECT_PREFIX + the last token of its subject with a derived Nats-Msg-Id, then acks.
The same shape as a service (durable pull, publish, ack), minus validation and storage.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig


async def main(url: str, stream: str, filter_subject: str, durable: str, prefix: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        filter_subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10000),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(256, timeout=1)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        acks = []
        for m in msgs:
            mid = (m.headers or {}).get("Nats-Msg-Id", "")
            acks.append(
                await js.publish_async(
                    prefix + m.subject.rsplit(".", 1)[-1],
                    m.data,
                    headers={"Nats-Msg-Id": f"{durable}:{mid}"},
                )
            )
        await asyncio.gather(*acks)
        for m in msgs:
            await m.ack()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
