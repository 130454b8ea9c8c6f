"""Partitioned consumers: per-key stream order with replicas sharing the work (issue 12).

The stream splits its subjects into N partitions with a subject transform
(`{{partition(N, wildcard...)}}`, FNV-1a 32 over the key tokens, the same number
`partition_of` gives), and each partition p has one durable pull consumer `<service>-p<p>`
filtered to it. Replicas of a service share the partitions through leases in a KV bucket:
each registers as a member, holds at most ceil(N / live members) partitions (create = take,
update with the last revision = renew, delete with the last revision = give back after
finishing the batch in hand), and a dead replica's leases expire (the bucket's TTL) so the
others take them. The lease is at least the consumer's ack_wait, so by the time a lease
runs out the dead holder's unacked messages are (nearly) due for redelivery.

Each partition is consumed by one replica at a time, so order needs no turn-taking: a
batch is checked against the consumer's ack floor only when something else may hold older
messages (after taking a partition over, after a nak, after a redelivery); what would
overtake an older unsettled message is nak'd with a short delay and comes back after it.
A failing batch is handled one message at a time so the failure lands on the message that
causes it: a transient error naks it and the rest of its batch and waits (that partition
only); anything else is dead-lettered and terminated. Only public nats-py APIs are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, SubjectTransform
from nats.js.kv import KeyValue

from .messaging import backoff_s, transient
from .subjects import fnv1a_32

log = logging.getLogger("investflow.partitions")

DEFAULT_BUCKET = "investflow_leases"

Handler = Callable[[list[Msg]], Awaitable[None]]
DeadLetter = Callable[[Msg, BaseException], Awaitable[None]]


# --- partitioning of subjects -------------------------------------------------------------


def partition_of(key: str | bytes | Sequence[str], n: int) -> int:
    """The partition the server's `{{partition(n, ...)}}` gives these key token(s).

    nats-server hashes the tokens concatenated without a separator (FNV-1a 32, modulo n).
    """
    if n < 1:
        raise ValueError(f"分区数须 >= 1 / partitions must be >= 1, got {n}")
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str):
        data = key.encode()
    else:
        data = "".join(key).encode()
    return fnv1a_32(data) % n


@dataclass(frozen=True)
class Partitioning:
    """How a stream's subject is split: `source` like `project.*.*`, `key` the 1-based
    wildcard positions hashed; the partition token goes right before the first key token,
    so `project.<kind>.<id>` is stored as `project.<kind>.<p>.<id>`."""

    source: str
    partitions: int
    key: tuple[int, ...]

    @property
    def _tokens(self) -> list[str]:
        return self.source.split(".")

    def _key_position(self) -> int:
        """Index in the source tokens of the first key wildcard."""
        seen = 0
        for i, token in enumerate(self._tokens):
            if token == "*":
                seen += 1
                if seen == min(self.key):
                    return i
        raise AssertionError("checked in partitioning()")

    def _with_partition(self, partition_token: str, wildcard: Callable[[int], str]) -> str:
        out: list[str] = []
        at = self._key_position()
        seen = 0
        for i, token in enumerate(self._tokens):
            if i == at:
                out.append(partition_token)
            if token == "*":
                seen += 1
                out.append(wildcard(seen))
            else:
                out.append(token)
        return ".".join(out)

    def transform(self) -> SubjectTransform:
        """The stream's `subject_transform` (StreamConfig.subject_transform)."""
        args = ",".join(str(k) for k in self.key)
        return SubjectTransform(
            src=self.source,
            dest=self._with_partition(
                f"{{{{partition({self.partitions},{args})}}}}", lambda w: f"{{{{wildcard({w})}}}}"
            ),
        )

    def filter_subject(self, p: int) -> str:
        """The stored subjects of partition p, for its consumer's filter."""
        if not 0 <= p < self.partitions:
            raise ValueError(f"分区 {p} 不存在 / no partition {p} of {self.partitions}")
        return self._with_partition(str(p), lambda _w: "*")

    def partition_of_subject(self, subject: str) -> int:
        """The partition a subject as published (before the transform) lands in."""
        tokens = subject.split(".")
        wild = [t for t, s in zip(tokens, self._tokens, strict=True) if s == "*"]
        return partition_of([wild[k - 1] for k in self.key], self.partitions)


@dataclass(frozen=True)
class StreamPartitions:
    """Partitions given one by one as (name, stream, filter), e.g. one inbox stream per unit.

    The name, not the index, makes the durable (`<service>-<name>`) and the lease key, so
    adding a partition (a unit) renames nothing and moves no other partition's position.
    """

    entries: tuple[tuple[str, str, str], ...]

    @property
    def partitions(self) -> int:
        return len(self.entries)

    def name_of(self, p: int) -> str:
        return self.entries[p][0]

    def stream_of(self, p: int) -> str:
        return self.entries[p][1]

    def filter_subject(self, p: int) -> str:
        return self.entries[p][2]


def partitioning(
    subjects: Sequence[str], partitions: int, key: Sequence[int] | None = None
) -> Partitioning:
    """The partitioning of a stream with these subjects: one subject of `*` wildcards (a
    stream has one subject transform, and `>` has no fixed position to hash); `key`, the
    wildcards hashed, defaults to the last one (`project.<kind>.<project_id>` by project)."""
    if len(subjects) != 1:
        raise ValueError(
            f"分区流只能有一个主题 / a partitioned stream has exactly one subject, got {list(subjects)}"
        )
    source = subjects[0]
    tokens = source.split(".")
    wildcards = tokens.count("*")
    if ">" in tokens or not wildcards or any(not t for t in tokens):
        raise ValueError(
            f"主题须为带 * 的固定层级 / the subject needs fixed tokens with '*' and no '>': {source!r}"
        )
    keys = tuple(key) if key else (wildcards,)
    if any(not 1 <= k <= wildcards for k in keys):
        raise ValueError(f"键位置须在 1..{wildcards} / key wildcards must be in 1..{wildcards}")
    if partitions < 1:
        raise ValueError(f"分区数须 >= 1 / partitions must be >= 1, got {partitions}")
    return Partitioning(source, partitions, keys)


# --- leases -------------------------------------------------------------------------------


def default_member_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class LeaseChanges:
    acquired: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)  # held beyond the fair share: give back


class PartitionLeases:
    """Which of a service's N partitions this replica holds, through a KV bucket.

    Keys: `<service>.m.<member>` (a member, rewritten every tick) and `<service>.p.<p>`
    (the holder of p). The bucket's TTL is the lease: a key not rewritten within it is
    gone. Call `tick()` every `lease_s / 3`.
    """

    def __init__(
        self,
        js: JetStreamContext,
        service: str,
        partitions: int,
        lease_s: float,
        *,
        bucket: str = DEFAULT_BUCKET,
        member: str | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.js = js
        self.service = service
        self.partitions = partitions
        self.names = list(names) if names is not None else None
        self.lease_s = float(lease_s)
        self.bucket = bucket
        self.member = member or default_member_id()
        self.kv: KeyValue | None = None
        self.held: dict[int, int] = {}  # partition -> revision of our lease
        self.renewed_at: dict[int, float] = {}
        self.members = 1
        self.target = partitions

    @property
    def interval_s(self) -> float:
        return self.lease_s / 3

    def key(self, p: int) -> str:
        return f"{self.service}.p.{self.names[p] if self.names else p}"

    async def open(self) -> None:
        try:
            kv = await self.js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # a replica raced us
                await self.js.create_key_value(bucket=self.bucket, history=1, ttl=self.lease_s)
            kv = await self.js.key_value(self.bucket)
        ttl = (await kv.status()).ttl
        if not ttl or abs(ttl - self.lease_s) > 1e-3:
            raise ValueError(
                f"租约桶 {self.bucket} 的 TTL 为 {ttl}s，而非 {self.lease_s}s / lease bucket "
                f"{self.bucket} has TTL {ttl}s, not {self.lease_s}s: all replicas must agree"
            )
        self.kv = kv

    async def live_members(self) -> int:
        assert self.kv is not None
        prefix = f"{self.service}.m."
        try:
            keys = await self.kv.keys()  # filters= only warns, and matches substrings
        except nats.js.errors.NoKeysError:
            keys = []
        return max(1, sum(1 for k in keys if k.startswith(prefix)))

    def order(self) -> list[int]:
        """Partitions to try, from a member-specific start, so joiners do not all collide."""
        start = fnv1a_32(self.member.encode()) % self.partitions
        return [(start + i) % self.partitions for i in range(self.partitions)]

    async def tick(
        self, releasing: frozenset[int] = frozenset(), busy: frozenset[int] = frozenset()
    ) -> LeaseChanges:
        """`releasing`: being given back (not counted as our share); `busy`: not to be taken
        (a lost partition whose worker has not stopped yet)."""
        assert self.kv is not None
        changes = LeaseChanges()
        await self.kv.put(f"{self.service}.m.{self.member}", b"")
        self.members = await self.live_members()
        self.target = math.ceil(self.partitions / self.members)
        now = time.monotonic()
        for p, revision in list(self.held.items()):
            try:
                self.held[p] = await self.kv.update(
                    self.key(p), self.member.encode(), last=revision
                )
                self.renewed_at[p] = now
            except nats.js.errors.KeyWrongLastSequenceError:
                changes.lost.append(p)  # expired, and maybe taken: never ours again unasked
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                # NATS away: the lease still stands until its TTL; stop short of it.
                if now - self.renewed_at.get(p, now) > 0.8 * self.lease_s:
                    changes.lost.append(p)
                log.warning("%s: could not renew partition %d: %s", self.service, p, exc)
        for p in changes.lost:
            self.held.pop(p, None)
            self.renewed_at.pop(p, None)
        active = [p for p in self.held if p not in releasing]
        if len(active) > self.target:
            changes.extra = sorted(active)[self.target - len(active) :]
        for p in self.order():
            if len(self.held) >= self.target:
                break
            if p in self.held or p in busy:
                continue
            try:
                self.held[p] = await self.kv.create(self.key(p), self.member.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone holds it
            self.renewed_at[p] = now
            changes.acquired.append(p)
        return changes

    async def release(self, p: int) -> None:
        assert self.kv is not None
        revision = self.held.pop(p, None)
        self.renewed_at.pop(p, None)
        if revision is None:
            return
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self.kv.delete(self.key(p), last=revision)

    async def leave(self) -> None:
        """Give back every lease (the caller has finished their batches) and the membership."""
        assert self.kv is not None
        for p in list(self.held):
            await self.release(p)
        await self.kv.delete(f"{self.service}.m.{self.member}")


# --- consumers ----------------------------------------------------------------------------


def _seq(msg: Msg) -> int:
    return int(msg.metadata.sequence.stream)


def _follows(prev: Msg, msg: Msg) -> bool:
    """Both first deliveries, one right after the other: nothing of the consumer in between."""
    return (
        prev.metadata.num_delivered == 1
        and msg.metadata.num_delivered == 1
        and msg.metadata.sequence.consumer == prev.metadata.sequence.consumer + 1
    )


@dataclass
class _Order:
    """What a partition's consumer knows about its own deliveries."""

    # Set once a batch was settled completely by us: then a first delivery right after
    # the last one we saw cannot overtake anything.
    clean: bool = False
    last_seen: Msg | None = None
    done_seq: int = 0  # highest stream sequence settled


@dataclass
class _Partition:
    p: int
    task: asyncio.Task[None] | None = None
    stopping: bool = False  # give back after the batch in hand
    lost: bool = False  # someone else may hold it now: stop at once
    handled: int = 0


class PartitionConsumer:
    """Consumes the partitions this replica holds, each in stream order; see the module doc."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        service: str,
        stream: str | None = None,
        partitioning: Partitioning | StreamPartitions,
        handler: Handler,
        dead_letter: DeadLetter,
        handle_one: Callable[[Msg], Awaitable[None]] | None = None,
        settled: Callable[[Msg, str, float], None] | None = None,
        replaces: str | None = None,
        ack_wait_s: float = 30.0,
        lease_s: float | None = None,
        batch: int = 64,
        fetch_timeout_s: float = 1.0,
        max_deliver: int = 8,
        is_transient: Callable[[BaseException], bool] = transient,
        retry_delay_s: Callable[[int], float] = backoff_s,
        bucket: str = DEFAULT_BUCKET,
        member: str | None = None,
        lease_group: str | None = None,
    ) -> None:
        lease_s = float(lease_s if lease_s is not None else ack_wait_s)
        if lease_s < ack_wait_s:
            raise ValueError(
                f"租约 ({lease_s}s) 须不短于 ack_wait ({ack_wait_s}s) / the lease ({lease_s}s) "
                f"must be >= ack_wait ({ack_wait_s}s)"
            )
        if stream is None and not isinstance(partitioning, StreamPartitions):
            raise ValueError("a subject-transform partitioning needs its stream")
        self.js = js
        self.service = service
        self.stream = stream
        self.partitioning = partitioning
        self.handler = handler
        # One message on its own (a batch of one, or after its batch failed), when it is
        # handled differently from a batch.
        self.handle_one = handle_one
        # (message, ok | retry | dead_letter, seconds): metrics and tracing, told once per
        # decision, so a service does not restate the retry rule.
        self.settled = settled or (lambda _m, _o, _s: None)
        # The durable these consumers take over from (one per stream, before partitions).
        self.replaces = replaces
        self.dead_letter = dead_letter
        self.ack_wait_s = float(ack_wait_s)
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.max_deliver = max_deliver
        self.is_transient = is_transient
        self.retry_delay_s = retry_delay_s
        # What would overtake an older unsettled message comes back after this.
        self.reorder_delay_s = max(0.2, self.ack_wait_s / 4)
        names = (
            [partitioning.name_of(p) for p in range(partitioning.partitions)]
            if isinstance(partitioning, StreamPartitions)
            else None
        )
        # The leases' key prefix: one per set of partitions a service consumes (a service
        # reading two streams has two), under the service's own name for its permissions.
        self.leases = PartitionLeases(
            js,
            lease_group or service,
            partitioning.partitions,
            lease_s,
            bucket=bucket,
            member=member,
            names=names,
        )
        self.parts: dict[int, _Partition] = {}
        self.releasing: dict[int, asyncio.Task[None]] = {}
        self.retiring: dict[int, asyncio.Task[None]] = {}  # lost, worker still finishing
        self.short_since: float | None = None
        self.stopping = False

    def durable(self, p: int) -> str:
        if isinstance(self.partitioning, StreamPartitions):
            return f"{self.service}-{self.partitioning.name_of(p)}"
        return f"{self.service}-p{p}"

    def stream_of(self, p: int) -> str:
        if isinstance(self.partitioning, StreamPartitions):
            return self.partitioning.stream_of(p)
        assert self.stream is not None
        return self.stream

    @property
    def held(self) -> set[int]:
        return set(self.leases.held)

    async def run(self) -> None:
        """Until cancelled or `stop()`; then the batches in hand are finished and the leases
        given back."""
        await self.leases.open()
        me = asyncio.current_task()
        try:
            # Python 3.11's wait_for (inside nats-py) can swallow a cancellation that lands
            # as its reply does: the request to cancel is still counted, so look at it.
            while not self.stopping and not (me is not None and me.cancelling()):
                try:
                    await self._tick()
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    log.warning("%s: lease round failed: %s", self.service, exc)
                except Exception:
                    # Any other failure of a round is retried too: leaving here gave every
                    # lease back and the service consumed nothing more while it ran on (the
                    # 100,000-lead soak's notify, an hour in).
                    log.exception("%s: lease round failed; trying again", self.service)
                await asyncio.sleep(self._pause())
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
        finally:
            await asyncio.shield(self._leave())

    def stop(self) -> None:
        """Ask `run()` to give everything back and return, within a lease round."""
        self.stopping = True

    def _pause(self) -> float:
        """A tick's interval; a quarter of it while short of our share since a change, so
        partitions given back are taken soon, not a whole interval later."""
        now = time.monotonic()
        if len(self.leases.held) >= self.leases.target:
            self.short_since = None
            return self.leases.interval_s
        if self.short_since is None:
            self.short_since = now
        if now - self.short_since < self.leases.lease_s:
            return self.leases.interval_s / 4
        return self.leases.interval_s

    async def _tick(self) -> None:
        self.retiring = {p: t for p, t in self.retiring.items() if not t.done()}
        changes = await self.leases.tick(frozenset(self.releasing), frozenset(self.retiring))
        for p in changes.lost:
            log.warning("%s: lost the lease of partition %d", self.service, p)
            part = self.parts.pop(p, None)
            if part is not None:
                part.lost = True
                if part.task is not None:
                    self.retiring[p] = part.task
        for p in changes.acquired:
            part = _Partition(p)
            part.task = asyncio.create_task(self._consume(part), name=f"{self.durable(p)}")
            self.parts[p] = part
        for p in changes.extra:
            self.releasing[p] = asyncio.create_task(self._give_back(p))

    async def _give_back(self, p: int) -> None:
        part = self.parts.get(p)
        try:
            if part is not None and part.task is not None:
                part.stopping = True
                await part.task
            self.parts.pop(p, None)
            await self.leases.release(p)
        finally:
            self.releasing.pop(p, None)

    async def _leave(self) -> None:
        for part in self.parts.values():
            part.stopping = True
        tasks = [t for t in (part.task for part in self.parts.values()) if t is not None]
        tasks += list(self.releasing.values()) + list(self.retiring.values())
        await asyncio.gather(*tasks, return_exceptions=True)
        self.parts.clear()
        try:
            await self.leases.leave()
        except (nats.errors.Error, OSError, TimeoutError) as exc:  # they expire anyway
            log.warning("%s: could not give the leases back: %s", self.service, exc)

    def config(self, p: int) -> ConsumerConfig:
        """Partition p's durable as this consumer wants it."""
        return ConsumerConfig(
            durable_name=self.durable(p),
            filter_subject=self.partitioning.filter_subject(p),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.batch,
            # Unlimited: a reorder nak also counts as a delivery, and a message the server
            # gave up on would be lost; we dead-letter after max_deliver ourselves.
            max_deliver=-1,
        )

    async def ensure(self, p: int) -> None:
        """Create partition p's durable, or bring it to the current settings in place.

        A new one taking over from `replaces` starts after that consumer's ack floor, so
        what it settled is not handled again, and the old one is deleted.
        """
        try:
            await self._ensure_once(p)
        except nats.js.errors.APIError:
            # Another replica starting at the same time made it first, with another start
            # ("deliver policy can not be updated"): once more, and it is there to update.
            await self._ensure_once(p)

    async def _ensure_once(self, p: int) -> None:
        stream, config = self.stream_of(p), self.config(p)
        try:
            have = await self.js.consumer_info(stream, self.durable(p))
        except nats.js.errors.NotFoundError:
            have = None
        if have is not None:  # the server refuses to change where a consumer starts
            filters = [have.config.filter_subject] if have.config.filter_subject else []
            filters += list(have.config.filter_subjects or [])
            if filters != [config.filter_subject]:  # redefined behind the service's back
                log.warning(
                    "%s: consumer %s/%s filtered %s; put back to %r",
                    self.service, stream, self.durable(p), filters, config.filter_subject,
                )  # fmt: skip
            config.deliver_policy = have.config.deliver_policy
            config.opt_start_seq = have.config.opt_start_seq
            config.opt_start_time = have.config.opt_start_time
            await self.js.add_consumer(stream, config=config)
            return
        old = None
        if self.replaces:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                old = await self.js.consumer_info(stream, self.replaces)
        if old is None:
            await self.js.add_consumer(stream, config=config)
            return
        floor = int(old.ack_floor.stream_seq if old.ack_floor else 0)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = floor + 1
        try:
            await self.js.add_consumer(stream, config=config)
        except nats.js.errors.BadRequestError:
            # A work queue takes one consumer per subject: the old one goes first (what it
            # acked is gone from a work queue, so a crash in between loses nothing).
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(stream, self.replaces)
            await self.js.add_consumer(stream, config=config)
        else:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(stream, self.replaces)
        log.warning(
            "%s: consumer %s/%s replaces %s, starting after its ack floor %d",
            self.service,
            stream,
            self.durable(p),
            self.replaces,
            floor,
        )

    async def ensure_all(self) -> None:
        """Every partition's durable, e.g. before saying ready: its backlog shows from the start."""
        for p in range(self.partitioning.partitions):
            await self.ensure(p)

    async def _subscribe(self, p: int) -> JetStreamContext.PullSubscription:
        await self.ensure(p)
        return await self.js.pull_subscribe_bind(durable=self.durable(p), stream=self.stream_of(p))

    async def _consume(self, part: _Partition) -> None:
        sub: JetStreamContext.PullSubscription | None = None
        state = _Order()
        fetched_at = 0.0
        while not (part.stopping or part.lost):
            try:
                if sub is None:
                    sub = await self._subscribe(part.p)
                fetched_at = time.monotonic()
                try:
                    msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout_s)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                await self._process(part, state, msgs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, a consumer refused: retry, keep the lease
                log.warning("%s: partition %d: %s", self.service, part.p, exc)
                state.clean = False
                await asyncio.sleep(1.0)
        if sub is None:
            return
        try:
            if part.stopping and not part.lost:
                # A pull request can still deliver until it expires: settle what it brings
                # (or the next holder would wait ack_wait for it), then let it expire.
                while not part.lost:
                    await asyncio.sleep(
                        max(0.0, fetched_at + self.fetch_timeout_s - time.monotonic())
                    )
                    if not sub.pending_msgs:
                        break
                    fetched_at = time.monotonic()
                    try:
                        msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout_s)
                    except (nats.errors.TimeoutError, TimeoutError):
                        break  # only status messages were queued; its request has expired
                    await self._process(part, state, msgs)
        except Exception as exc:  # what is left comes back to the next holder after ack_wait
            log.warning("%s: partition %d: giving back: %s", self.service, part.p, exc)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _process(self, part: _Partition, state: _Order, msgs: list[Msg]) -> None:
        if part.lost:
            return  # not ours to settle any more
        latest: dict[int, Msg] = {}
        for m in msgs:  # a redelivered copy of one in hand: the latest is settled
            latest[_seq(m)] = m
        msgs = [latest[s] for s in sorted(latest)]
        for m in [m for m in msgs if _seq(m) <= state.done_seq]:
            await m.ack()  # a copy of one we settled, redelivered while it was in hand
        msgs = [m for m in msgs if _seq(m) > state.done_seq]
        if not msgs:
            return
        last = state.last_seen
        fast = state.clean and last is not None and _follows(last, msgs[0])
        ready = len(msgs) if fast else await self._in_order(part.p, msgs)
        state.last_seen = msgs[-1]
        held_back = msgs[ready:]
        for m in held_back:
            await m.nak(delay=self.reorder_delay_s)
        if held_back:
            log.info(
                "%s: partition %d: %d messages wait for older ones",
                self.service,
                part.p,
                len(held_back),
            )
        complete, settled = await self._settle(part, msgs[:ready])
        if settled:
            state.done_seq = max(state.done_seq, _seq(settled[-1]))
        state.clean = complete and not held_back

    async def _in_order(self, p: int, msgs: list[Msg]) -> int:
        """How many of `msgs` (in stream order) may be handled now: those that overtake no
        unsettled older message of the partition (held by a dead holder, or nak'd)."""
        info = await self.js.consumer_info(self.stream_of(p), self.durable(p))
        if info.num_ack_pending == len(msgs):
            return len(msgs)  # everything unsettled is in hand; anything older is acked
        subject = self.partitioning.filter_subject(p)

        async def next_after(seq: int) -> int | None:
            try:
                found = await self.js.get_msg(
                    self.stream_of(p), seq=seq + 1, subject=subject, next=True
                )
            except nats.js.errors.NotFoundError:
                return None
            return found.seq

        if await next_after(info.ack_floor.stream_seq) != _seq(msgs[0]):
            return 0
        for i in range(1, len(msgs)):
            if not _follows(msgs[i - 1], msgs[i]) and await next_after(_seq(msgs[i - 1])) != _seq(
                msgs[i]
            ):
                return i
        return len(msgs)

    async def _settle(self, part: _Partition, msgs: list[Msg]) -> tuple[bool, list[Msg]]:
        """Handle and settle `msgs` in order; (all settled, the ones settled)."""
        if not msgs:
            return True, []
        keepalive = asyncio.create_task(self._keep_alive(msgs))
        try:
            if len(msgs) == 1 and self.handle_one is not None:
                return (True, msgs) if await self._settle_one(part, msgs, 0) else (False, [])
            started = time.monotonic()
            try:
                await self.handler(msgs)
            except Exception as exc:
                log.info(
                    "%s: partition %d: %d messages failed together (%r); one by one",
                    self.service,
                    part.p,
                    len(msgs),
                    exc,
                )
            else:
                share = (time.monotonic() - started) / len(msgs)
                for m in msgs:
                    await m.ack()
                    self.settled(m, "ok", share)
                part.handled += len(msgs)
                return True, msgs
            for k in range(len(msgs)):
                if part.lost:
                    return False, msgs[:k]
                if not await self._settle_one(part, msgs, k):
                    return False, msgs[:k]
            return True, msgs
        finally:
            keepalive.cancel()

    async def _settle_one(self, part: _Partition, msgs: list[Msg], k: int) -> bool:
        msg = msgs[k]
        started = time.monotonic()
        try:
            if self.handle_one is not None:
                await self.handle_one(msg)
            else:
                await self.handler([msg])
        except Exception as exc:
            delivered = int(msg.metadata.num_delivered)
            if self.is_transient(exc) and delivered < self.max_deliver:
                self.settled(msg, "retry", time.monotonic() - started)
                delay = self.retry_delay_s(delivered)
                log.warning(
                    "%s: %s failed (try %d), retrying in %.1fs: %r",
                    self.service,
                    msg.subject,
                    delivered,
                    delay,
                    exc,
                )
                for rest in msgs[k:]:
                    await rest.nak(delay=delay)
                await asyncio.sleep(delay)  # this partition only: the others keep going
                return False
            self.settled(msg, "dead_letter", time.monotonic() - started)
            log.error("%s: %s dead-lettered: %r", self.service, msg.subject, exc)
            try:
                await self.dead_letter(msg, exc)
            except Exception as dl_exc:  # not recorded: keep it, try again later
                log.warning("%s: dead-lettering failed: %r", self.service, dl_exc)
                for rest in msgs[k:]:
                    await rest.nak(delay=self.retry_delay_s(delivered))
                await asyncio.sleep(self.retry_delay_s(delivered))
                return False
            await msg.term()
            return True
        await msg.ack()
        self.settled(msg, "ok", time.monotonic() - started)
        part.handled += 1
        return True

    async def _keep_alive(self, msgs: list[Msg]) -> None:
        """in_progress on what is unsettled every third of ack_wait, while a batch is worked."""
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            for m in msgs:
                if not m.is_acked:
                    with contextlib.suppress(Exception):
                        await m.in_progress()


async def run_partitions(js: JetStreamContext, **kwargs: object) -> None:
    """Run a PartitionConsumer (same keyword arguments) until cancelled."""
    await PartitionConsumer(js, **kwargs).run()  # type: ignore[arg-type]
