"""The JetStream streams, declared in this one place and created idempotently.

Each unit reports into a stream of its own, `INTAKE_<UNIT>` (`intake.<UNIT>.<kind>`), so that
- a unit's idempotency keys (`Nats-Msg-Id`) can only ever collide with its own: JetStream's
  duplicate window is per stream, and two units using the key `LEAD-1` give two events;
- a unit's quota (bytes waiting, message size) is its own, and a full inbox refuses that
  unit's next message with an error (`discard: new`), never another unit's or an old one;
- one unit's backlog or poison message does not hold up another unit's events.

The inboxes are work queues: intake's table is the record of what was accepted, and a
message leaves the inbox once intake has stored it (or rejected it), so the quota bounds
what waits, not what was ever sent. `INTAKE` holds intake's rejections
(`intake.rejected.<unit>.<kind>`), where units cannot publish, and, on a deployment upgraded
from the one-stream layout, the unit messages it held then, which intake drains.

Services refer to streams by name only (`JStream(name, declare=False)`): a second
declaration with a different config would silently call update_stream.

On a JetStream cluster every stream and the two KV buckets are kept on three nodes
(`replicas: 3`), on a single server on one: `ensure_streams` asks the server which
(`replicas_available`), or takes INVESTFLOW_STREAM_REPLICAS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from .partitions import Partitioning, partitioning

MiB = 1024 * 1024

# The server's smallest duplicate window (nats-server: "duplicates window needs to be >=
# 100ms", err_code 10052, measured on 2.15.1). Intake's (unit, key) table is the dedup
# authority for unit traffic; the window only folds a unit's own burst of the same key.
UNIT_DUPLICATE_WINDOW_S = 0.1


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from exc


@dataclass(frozen=True)
class Limits:
    """Stream limits; the figures and their reasons are in docs/operations.md."""

    unit_backlog_bytes: int  # per unit: what may wait for intake
    unit_max_msg_bytes: int  # per message, headers included
    stream_max_bytes: int  # each internal event stream
    dlq_max_bytes: int
    rejections_max_bytes: int
    rejections_max_age_s: int

    @classmethod
    def from_env(cls) -> Limits:
        payload = _int_env("INVESTFLOW_MAX_PAYLOAD", 64 * 1024)
        return cls(
            unit_backlog_bytes=_int_env("INVESTFLOW_UNIT_BACKLOG_BYTES", 32 * MiB),
            # Room for headers above the payload limit, so intake can still name a payload
            # a little over it; anything larger the server refuses to the publisher.
            unit_max_msg_bytes=payload + 8 * 1024,
            # JetStream reserves these against the server's max_file_store (deploy: 20 GB).
            stream_max_bytes=_int_env("INVESTFLOW_STREAM_MAX_BYTES", 2 * 1024 * MiB),
            dlq_max_bytes=_int_env("INVESTFLOW_DLQ_MAX_BYTES", 512 * MiB),
            rejections_max_bytes=_int_env("INVESTFLOW_REJECTIONS_MAX_BYTES", 256 * MiB),
            rejections_max_age_s=_int_env("INVESTFLOW_REJECTIONS_MAX_AGE", 90 * 86400),
        )


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    kind: str = "events"  # events | keyed | unit | rejections


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "INTAKE",
        ("intake.rejected.*.*",),
        "intake's rejections (intake.rejected.<unit>.<kind>); units cannot publish here",
        kind="rejections",
    ),
    StreamSpec(
        "PROJECT",
        ("project.*.*",),
        "canonical project events emitted by intake, project.<kind>.<key>",
        kind="keyed",
    ),
    StreamSpec(
        "REVIEW",
        ("review.*.*",),
        "screening, materials, decisions and recognition, review.<kind>.<key>",
        kind="keyed",
    ),
    StreamSpec("SCORE", ("score.*.*",), "credits, holds, reversals and rates", kind="keyed"),
    StreamSpec("NOTIFY", ("notify.*.*",), "delivery outcomes of notifications", kind="keyed"),
    StreamSpec("DLQ", ("dlq.>",), "messages that failed, with their error"),
)

STREAM_BY_NAME = {s.name: s for s in STREAMS}

# Subjects of the one-stream layout, before units had inboxes of their own.
LEGACY_INTAKE_SUBJECTS = ("intake.>",)


def legacy_filter(stream: str) -> str:
    """The stored subjects of the layout before keys: `project.<kind>`, two tokens. What an
    upgraded stream still holds of them is consumed first, in stream order."""
    return STREAM_BY_NAME[stream].subjects[0].rsplit(".", 1)[0]


# Partitions of each keyed stream (by project, or year for score.rates), when it is created.
# The stream keeps the number it was made with (its subject transform says it); the services
# read it from there, so they always agree with what is stored.
DEFAULT_PARTITIONS = 4


def partitions_setting() -> int:
    n = _int_env("INVESTFLOW_PARTITIONS", DEFAULT_PARTITIONS)
    if not 1 <= n <= 1024:
        raise SystemExit(f"INVESTFLOW_PARTITIONS={n}: must be 1..1024")
    return n


def keyed_partitioning(spec: StreamSpec, partitions: int) -> Partitioning:
    """`<root>.<kind>.<key>` stored as `<root>.<kind>.<p>.<key>`: p from the key."""
    return partitioning(spec.subjects, partitions, key=(2,))


def partitions_of(config: StreamConfig) -> int | None:
    """The number of partitions a stream's subject transform makes, None if it has none."""
    transform = config.subject_transform
    dest = transform.dest if transform is not None else ""
    found = re.search(r"\{\{\s*partition\(\s*(\d+)\s*,", dest or "")
    return int(found.group(1)) if found else None


async def stream_partitioning(js: JetStreamContext, stream: str) -> Partitioning:
    """How a keyed stream is partitioned, as the server holds it."""
    info = await js.stream_info(stream)
    n = partitions_of(info.config)
    if n is None:
        raise RuntimeError(
            f"流 {stream} 尚未分区，请先运行 investflow nats init / stream {stream} has no "
            "partitions yet (an older layout): run `investflow nats init` (or `investflow up`) first"
        )
    return keyed_partitioning(STREAM_BY_NAME[stream], n)


def unit_stream_name(unit: str) -> str:
    return f"INTAKE_{unit}"


def unit_stream(unit: str) -> StreamSpec:
    return StreamSpec(
        unit_stream_name(unit),
        (f"intake.{unit}.*",),
        f"inbox of unit {unit}: intake.{unit}.<kind>, until intake has stored or rejected it",
        kind="unit",
    )


def inbox_partitions(units: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    """Intake's partitions as (name, stream, filter): each unit's inbox, and the one-stream
    layout's leftovers in INTAKE. Named by unit, so adding a unit renames nothing."""
    inboxes = tuple((u, unit_stream_name(u), f"intake.{u}.*") for u in sorted(units))
    return (*inboxes, ("INTAKE", "INTAKE", "intake.*.*"))


def all_streams(units: Iterable[str]) -> tuple[StreamSpec, ...]:
    return STREAMS + tuple(unit_stream(u) for u in sorted(units))


# Copies kept of each stream on a cluster: any one node may die, and a majority (2 of 3)
# still agrees on every write. More nodes do not mean more copies; each copy costs a write.
CLUSTER_REPLICAS = 3

# nats-server's answers to a replicated stream it cannot hold (server/errors.json).
NOT_CLUSTERED = 10074  # "replicas > 1 not supported in non-clustered mode"
NO_PLACEMENT = 10005  # "no suitable peers for placement"

PROBE_STREAM = "INVESTFLOW_REPLICAS_PROBE"


class ReplicasError(RuntimeError):
    """The server can neither hold the replicated streams nor is it a single server."""


async def replicas_available(js: JetStreamContext, wanted: int = CLUSTER_REPLICAS) -> int:
    """How many copies of each stream this server can hold: INVESTFLOW_STREAM_REPLICAS, else
    ask it. A single server refuses a replicated stream as non-clustered (→ 1); a cluster takes
    a throwaway in-memory stream of `wanted` copies (→ wanted), deleted at once. A cluster that
    cannot place them (a node down, fewer nodes) is an error, not a quiet fall back to one copy.
    """
    forced = _int_env("INVESTFLOW_STREAM_REPLICAS", 0)
    if forced:
        return forced
    probe = StreamConfig(
        name=PROBE_STREAM,
        subjects=[f"_investflow.probe.{PROBE_STREAM}"],
        storage=StorageType.MEMORY,
        num_replicas=wanted,
        max_msgs=1,
    )
    try:
        await js.add_stream(probe)
    except APIError as exc:
        if exc.err_code == NOT_CLUSTERED:
            return 1
        if exc.err_code == NO_PLACEMENT:
            raise ReplicasError(
                f"the JetStream cluster cannot place {wanted} copies of a stream now "
                f"({exc.description}): are all its nodes up? On a smaller cluster set "
                "INVESTFLOW_STREAM_REPLICAS / 集群无法放置副本，请检查各节点"
            ) from exc
        raise
    await js.delete_stream(PROBE_STREAM)
    return wanted


def stream_config(
    spec: StreamSpec,
    duplicate_window_s: float,
    limits: Limits | None = None,
    replicas: int = 1,
    partitions: int | None = None,
) -> StreamConfig:
    limits = limits or Limits.from_env()
    config = StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        # Discarding old messages would lose accepted events: a full stream refuses new ones.
        discard=DiscardPolicy.NEW,
        max_bytes=limits.stream_max_bytes,
        duplicate_window=float(duplicate_window_s),
    )
    if spec.kind == "keyed":
        n = partitions if partitions is not None else partitions_setting()
        config.subject_transform = keyed_partitioning(spec, n).transform()
    if spec.kind == "unit":
        config.retention = RetentionPolicy.WORK_QUEUE
        config.max_bytes = limits.unit_backlog_bytes
        config.max_msg_size = limits.unit_max_msg_bytes
        config.duplicate_window = UNIT_DUPLICATE_WINDOW_S
    elif spec.name == "DLQ":
        config.max_bytes = limits.dlq_max_bytes
    elif spec.kind == "rejections":
        # Notices to the units, not accepted data: the oldest go first.
        config.discard = DiscardPolicy.OLD
        config.max_bytes = limits.rejections_max_bytes
        config.max_age = float(limits.rejections_max_age_s)
    return config


_COMPARED = (
    "max_bytes",
    "max_msg_size",
    "max_age",
    "discard",
    "duplicate_window",
    "num_replicas",
)


def _drifted(have: StreamConfig, wanted: StreamConfig) -> bool:
    if sorted(have.subjects or []) != sorted(wanted.subjects or []):
        return True
    if partitions_of(have) != partitions_of(wanted):
        return True

    def norm(value: object) -> object:
        return -1 if value in (None, 0, -1) else value

    return any(norm(getattr(have, k)) != norm(getattr(wanted, k)) for k in _COMPARED)


async def ensure_streams(
    js: JetStreamContext,
    duplicate_window_s: int,
    units: Iterable[str] | None = None,
    *,
    replicas: int | None = None,
    lease_s: float | None = None,
) -> list[str]:
    """Create missing streams and bring drifted ones back to the declared config.

    `units` are the directory's unit codes (default: the directory in INVESTFLOW_UNITS); each
    gets its inbox. `replicas`: copies of each stream (default: what the server can hold).
    The rulesets bucket is created with them, and so is the leases bucket when `lease_s` (its
    TTL, the services' INVESTFLOW_ACK_WAIT) is given; buckets the services made are scaled.
    Returns one line per stream saying what was done, for `investflow nats init`.
    """
    if units is None:
        from .directory import load_directory
        from .settings import Settings

        units = load_directory(Settings.from_env().units_file).units
    if replicas is None:
        replicas = await replicas_available(js)
    limits = Limits.from_env()
    report = []
    for spec in all_streams(units):
        wanted = stream_config(spec, duplicate_window_s, limits, replicas)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(wanted)
            n = partitions_of(wanted)
            report.append(
                f"created {spec.name} {list(spec.subjects)}" + (f", {n} partitions" if n else "")
            )
            continue
        have = info.config
        kept = partitions_of(have)
        if spec.kind == "keyed" and kept is not None and kept != partitions_of(wanted):
            # Moving stored messages between partitions is not done in place: consumers of
            # the old number would miss some, and order across the change would be lost.
            report.append(
                f"kept {spec.name}: {kept} partitions, not {partitions_of(wanted)} "
                "(repartitioning needs an empty stream)"
            )
            wanted.subject_transform = have.subject_transform
        if have.retention != wanted.retention:
            # JetStream cannot change a stream's retention in place.
            report.append(f"kept {spec.name}: retention {have.retention} (recreate to change)")
            wanted.retention = have.retention
        if not _drifted(have, wanted):
            report.append(f"ok {spec.name}")
            continue
        legacy = spec.name == "INTAKE" and sorted(have.subjects or []) == list(
            LEGACY_INTAKE_SUBJECTS
        )
        unkeyed = spec.kind == "keyed" and partitions_of(have) is None
        await js.update_stream(wanted)
        if legacy:
            report.append(
                "upgraded INTAKE: units now report into INTAKE_<unit>; the unit messages it "
                "holds are drained by intake"
            )
        elif unkeyed:
            report.append(
                f"upgraded {spec.name}: events now carry their key, in "
                f"{partitions_of(wanted)} partitions; each service consumes what it holds "
                "from before first"
            )
        else:
            report.append(f"updated {spec.name}")
    report += await ensure_buckets(js, replicas, lease_s)
    return report


RULES_BUCKET = "investflow_rulesets"  # shared.rules.published.BUCKET
LEASES_BUCKET = "investflow_leases"  # shared.partitions.DEFAULT_BUCKET


def bucket_configs(replicas: int, lease_s: float | None) -> list[KeyValueConfig]:
    """The buckets as shared/rules/published.py and shared/partitions.py create them when
    missing (there with one copy), here with the deployment's `replicas`."""
    out = [
        KeyValueConfig(
            bucket=RULES_BUCKET,
            history=64,
            storage=StorageType.FILE,
            description="published rulesets",
            replicas=replicas,
        )
    ]
    if lease_s is not None:
        out.append(
            KeyValueConfig(bucket=LEASES_BUCKET, history=1, ttl=float(lease_s), replicas=replicas)
        )
    return out


async def ensure_buckets(
    js: JetStreamContext, replicas: int, lease_s: float | None = None
) -> list[str]:
    """Create the KV buckets with `replicas` copies; scale a bucket that has other than that
    (a service created it first, with one). A bucket on one node of three would stop every
    service that follows the rulesets, or holds a lease, when that node dies. Looked up by
    name: a cluster's stream list leaves out streams whose leader is busy (one being scaled)."""
    report = []
    for config in bucket_configs(replicas, lease_s):
        try:
            have = (await js.stream_info(f"KV_{config.bucket}")).config
        except NotFoundError:
            await js.create_key_value(config)
            report.append(f"created KV {config.bucket} (replicas {replicas})")
            continue
        if (have.num_replicas or 1) == replicas:
            report.append(f"ok KV {config.bucket}")
            continue
        have.num_replicas = replicas
        await js.update_stream(have)
        report.append(f"scaled KV {config.bucket} to replicas {replicas}")
    return report
