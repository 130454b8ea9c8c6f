"""Publishing a JSON Lines file of inbound messages (the sample year) into JetStream."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nats.js import JetStreamContext


@dataclass
class FeedResult:
    published: int = 0
    dropped_as_duplicate: int = 0  # JetStream's duplicate window caught a re-send
    per_kind: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def lines(path: Path):  # type: ignore[no-untyped-def]
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc


def body_of(item: dict) -> bytes:  # type: ignore[type-arg]
    """The bytes a unit sends for a sample line: `raw` as it is, else `data` as JSON."""
    if "raw" in item:
        return item["raw"].encode()
    return json.dumps(item["data"], ensure_ascii=False).encode()


async def feed_file(js: JetStreamContext, path: Path, progress: bool = True) -> FeedResult:
    result = FeedResult()
    total = sum(1 for _ in path.open(encoding="utf-8"))
    started = time.monotonic()
    step = max(1, total // 10)
    for n, item in enumerate(lines(path), 1):
        ack = await js.publish(
            item["subject"], body_of(item), headers={"Nats-Msg-Id": item["msg_id"]}
        )
        result.published += 1
        result.dropped_as_duplicate += int(bool(ack.duplicate))
        result.per_kind[item["subject"].split(".")[-1]] += 1
        if progress and n % step == 0:
            print(f"  fed {n}/{total} messages ({100 * n // total}%)", flush=True)
    result.seconds = time.monotonic() - started
    return result
