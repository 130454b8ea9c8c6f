"""The JetStream streams, declared in this one place and created idempotently.

Services refer to streams by name only (`JStream(name, declare=False)`): a second
declaration with a different config would silently call update_stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "INTAKE", ("intake.>",), "inbound events from units (intake.<unit>.<kind>) and rejections"
    ),
    StreamSpec("PROJECT", ("project.>",), "canonical project events emitted by intake"),
    StreamSpec("REVIEW", ("review.>",), "screening, materials, decisions and recognition"),
    StreamSpec("SCORE", ("score.>",), "credits, holds and reversals"),
    StreamSpec("NOTIFY", ("notify.>",), "delivery outcomes of notifications"),
    StreamSpec("DLQ", ("dlq.>",), "messages that failed max_deliver times, with their error"),
)

STREAM_BY_NAME = {s.name: s for s in STREAMS}


def stream_config(spec: StreamSpec, duplicate_window_s: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=float(duplicate_window_s),
    )


async def ensure_streams(js: JetStreamContext, duplicate_window_s: int) -> list[str]:
    """Create missing streams and bring drifted ones back to the declared config.

    Returns one line per stream saying what was done, for `investflow nats init`.
    """
    report = []
    for spec in STREAMS:
        wanted = stream_config(spec, duplicate_window_s)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(wanted)
            report.append(f"created {spec.name} {list(spec.subjects)}")
            continue
        have = info.config
        if (
            sorted(have.subjects or []) != sorted(spec.subjects)
            or (have.duplicate_window or 0) != wanted.duplicate_window
        ):
            await js.update_stream(wanted)
            report.append(f"updated {spec.name}")
        else:
            report.append(f"ok {spec.name}")
    return report
