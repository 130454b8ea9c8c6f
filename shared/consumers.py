"""A service's consumers of the keyed streams (PROJECT, REVIEW, SCORE, NOTIFY), by partition.

Each stream a service reads is consumed by one `PartitionConsumer` (shared/partitions.py):
a durable `<service>-p<p>` per partition, shared by the service's replicas through leases,
each partition in stream order, so each project's events are applied in order and projects
in different partitions go on side by side. A retry or a poison message holds its partition
only.

Upgrading from the layout before keys (one durable `<service>` per stream, subjects
`project.<kind>`): the partition durables start after the old durable's ack floor, so what it
settled is not handled again; what the stream holds of the old subjects is consumed first by
`<service>-legacy`, in stream order, and the partitions start once it is drained (by whichever
replica holds its lease; the others wait for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from faststream.nats import JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, DeliverPolicy

from . import metrics, subjects, tracing
from .messaging import dead_letter, delivery_count
from .partitions import PartitionConsumer, Partitioning, StreamPartitions
from .settings import Settings, connect_nats
from .streams import (
    STREAM_BY_NAME,
    keyed_partitioning,
    legacy_filter,
    partitions_setting,
    stream_partitioning,
)

log = logging.getLogger("investflow.consumers")

LEGACY = "legacy"
DRAIN_POLL_S = 0.5


@dataclass(frozen=True)
class Reads:
    """A keyed stream a service consumes; `only`: one event type of it (else all)."""

    stream: str
    description: str
    only: str | None = None

    def narrowed(self, partitioning: Partitioning) -> Partitioning:
        """The stream's partitioning, filtered to `only`: `review.recognition.<p>.*`."""
        if self.only is None:
            return partitioning
        return Partitioning(f"{self.only}.*", partitioning.partitions, (1,))

    def legacy(self) -> str:
        return self.only or legacy_filter(self.stream)

    def pattern(self) -> str:
        """What it reads, as the AsyncAPI document and the permissions name it."""
        return f"{self.only}.*" if self.only else STREAM_BY_NAME[self.stream].subjects[0]


def durables(reads: Reads, partitions: int) -> list[tuple[str, str, str]]:
    """(name, stream, filter) of every durable of `reads`, `<service>-<name>`: the partitions
    and the legacy one."""
    spec = STREAM_BY_NAME[reads.stream]
    part = reads.narrowed(keyed_partitioning(spec, partitions))
    out = [(f"p{p}", reads.stream, part.filter_subject(p)) for p in range(partitions)]
    return [*out, (LEGACY, reads.stream, reads.legacy())]


def document(broker: NatsBroker, service: str, reads: Sequence[Reads]) -> None:
    """Declare the durables on a broker that is never started: the AsyncAPI document and the
    permission table (tests/deploy/test_nats_auth.py) read them from there."""
    for r in reads:
        # One channel per stream and service: the partitions' durables share its title and
        # its address, what is published (each durable's filter is one partition of it).
        for name, stream, _filter in durables(r, partitions_setting()):
            broker.subscriber(
                r.pattern(),
                stream=JStream(stream, declare=False),
                durable=f"{service}-{name}",
                pull_sub=PullSub(),
                title=f"{service}:{r.pattern()}:Consume",
                description=r.description,
            )


Handler = Callable[[list[Msg]], Awaitable[None]]


class StreamConsumer:
    """One keyed stream of one service: the upgrade, the legacy drain, the partitions."""

    def __init__(
        self,
        js: JetStreamContext,
        service: str,
        reads: Reads,
        *,
        handler: Handler,
        handle_one: Callable[[Msg], Awaitable[None]] | None,
        dead_letter: Callable[[Msg, BaseException], Awaitable[None]],
        settled: Callable[[Msg, str, float], None],
        settings: Settings,
    ) -> None:
        self.js, self.service, self.reads = js, service, reads
        self.common: dict[str, Any] = {
            "service": service,
            "handler": handler,
            "handle_one": handle_one,
            "dead_letter": dead_letter,
            "settled": settled,
            "ack_wait_s": settings.ack_wait_s,
            "batch": settings.batch_size,
            "max_deliver": settings.max_deliver,
        }
        self.partitions: PartitionConsumer | None = None
        self.legacy: PartitionConsumer | None = None
        self.stopping = False

    async def prepare(self) -> None:
        """Every durable made (or brought to the settings) before the service says ready."""
        part = self.reads.narrowed(await stream_partitioning(self.js, self.reads.stream))
        self.partitions = PartitionConsumer(
            self.js,
            stream=self.reads.stream,
            partitioning=part,
            lease_group=f"{self.service}.{self.reads.stream}",
            **self.common,
        )
        self.legacy = PartitionConsumer(
            self.js,
            partitioning=StreamPartitions(((LEGACY, self.reads.stream, self.reads.legacy()),)),
            lease_group=f"{self.service}.{self.reads.stream}.{LEGACY}",
            **self.common,
        )
        await self._upgrade()
        await self.partitions.ensure_all()

    async def _info(self, durable: str) -> ConsumerInfo | None:
        try:
            return await self.js.consumer_info(self.reads.stream, durable)
        except nats.js.errors.NotFoundError:
            return None

    async def _upgrade(self) -> None:
        """Take over from the one durable of the layout before partitions, if it is there."""
        assert self.partitions is not None and self.legacy is not None
        stream = self.reads.stream
        old = await self._info(self.service)
        start: int | None = None
        if old is not None:
            start = int(old.ack_floor.stream_seq if old.ack_floor else 0) + 1
        elif await self._info(self.legacy.durable(0)) is None and await self._holds_legacy():
            start = 1  # a stream from before keys this service never read: all of it
        if start is None:
            return
        wanted = [(self.legacy, 0)] + [(self.partitions, p) for p in range(self.partitions_n)]
        for consumer, p in wanted:
            if await self._info(consumer.durable(p)) is not None:
                continue  # made by an earlier start (or another replica): it knows its place
            config = consumer.config(p)
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start
            with contextlib.suppress(nats.js.errors.APIError):  # a replica made it first
                await self.js.add_consumer(stream, config=config)
        if old is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(stream, self.service)
            log.warning(
                "%s: %s consumed by partitions from sequence %d on (was durable %s); the "
                "messages from before keys go first",
                self.service,
                stream,
                start,
                self.service,
            )

    @property
    def partitions_n(self) -> int:
        assert self.partitions is not None
        return self.partitions.partitioning.partitions

    async def _holds_legacy(self) -> bool:
        info = await self.js.stream_info(self.reads.stream, subjects_filter=self.reads.legacy())
        return bool(info.state.subjects)

    async def _drained(self) -> bool:
        assert self.legacy is not None
        info = await self._info(self.legacy.durable(0))
        return info is None or (not info.num_pending and not info.num_ack_pending)

    async def run(self) -> None:
        assert self.partitions is not None and self.legacy is not None
        if not await self._drained():
            legacy = asyncio.create_task(self.legacy.run(), name=f"{self.service}-legacy")
            try:
                while not self.stopping and not await self._drained():
                    await asyncio.sleep(DRAIN_POLL_S)
            finally:
                legacy.cancel()  # it finishes the batch in hand and gives its lease back
                with contextlib.suppress(asyncio.CancelledError):
                    await legacy
            if self.stopping:
                return
            log.warning("%s: %s drained of the messages from before keys", self.service,
                        self.reads.stream)  # fmt: skip
        await self.partitions.run()

    def stop(self) -> None:
        self.stopping = True
        for consumer in (self.partitions, self.legacy):
            if consumer is not None:
                consumer.stop()

    async def infos(self) -> list[ConsumerInfo]:
        assert self.partitions is not None and self.legacy is not None
        names = [self.partitions.durable(p) for p in range(self.partitions_n)]
        found = [await self._info(n) for n in [*names, self.legacy.durable(0)]]
        return [i for i in found if i is not None]


class Combined:
    """One batch at a time in a process, and the batches of other partitions that came in
    meanwhile handled with it, in one call (one transaction).

    Separately, the partitions' batches met in the database (SQLite takes one writer; a
    deferred transaction that must upgrade fails as locked and is retried) and split a
    burst into transactions a quarter the size: the pipeline bench measured the CPU per
    funds record up by half (docs/performance.md). If a combined call fails, each batch in
    it gets the error and its partition settles it one message at a time (uncombined), so
    the failure still lands on the message that causes it. Order within each partition is
    kept: its batch goes in whole, in order, and its next one only after this returns.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.turn = asyncio.Lock()
        self.waiting: list[tuple[list[Msg], asyncio.Future[None]]] = []

    async def __call__(self, msgs: list[Msg]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (msgs, done)
        self.waiting.append(entry)
        try:
            async with self.turn:
                if done.done():  # handled in the call of a batch that had the turn
                    return done.result()
                taken, self.waiting = self.waiting, []
                try:
                    await self.handler([m for batch, _ in taken for m in batch])
                except Exception as exc:
                    for _, other in taken:
                        if other is not done:
                            other.set_exception(exc)
                    raise
                for _, other in taken:
                    if other is not done:
                        other.set_result(None)
        finally:
            if entry in self.waiting:  # cancelled before its turn
                self.waiting.remove(entry)
            if done.done() and not done.cancelled():
                done.exception()  # retrieved: no "never retrieved" warning when cancelled


class ServiceConsumers:
    """Every keyed stream a service reads; `start()` before ready, then `run()` as a task."""

    def __init__(
        self,
        js: JetStreamContext,
        broker: NatsBroker,
        service: str,
        reads: Sequence[Reads],
        *,
        handler: Handler,
        settings: Settings,
    ) -> None:
        combined = Combined(handler)

        async def traced(msgs: list[Msg]) -> None:
            tracing.consuming(msgs, service)
            await combined(msgs)

        async def traced_one(msg: Msg) -> None:
            # One message (alone, or after its batch failed): never combined with others,
            # so a failure is its own and it alone is retried or dead-lettered.
            async with combined.turn:
                tracing.consuming([msg], service)
                await handler([msg])

        async def to_dead_letters(msg: Msg, exc: BaseException) -> None:
            await dead_letter(broker, service, msg, exc, delivery_count(msg))

        def settled(msg: Msg, outcome: str, seconds: float) -> None:
            # By event type: a label per project key would grow without bound.
            metrics.observe_settled(service, subjects.event_type(msg.subject), outcome, seconds)
            tracing.settled(msg, outcome)

        self.nc: Any = None  # the connection `start_consumers` made, closed by `close()`
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # close() called: the task ending is expected
        self.streams = [
            StreamConsumer(
                js,
                service,
                r,
                handler=traced,
                handle_one=traced_one,
                dead_letter=to_dead_letters,
                settled=settled,
                settings=settings,
            )
            for r in reads
        ]

    async def start(self) -> None:
        for s in self.streams:
            await s.prepare()

    async def run(self) -> None:
        """Until cancelled: then the batches in hand are finished and the leases given back."""
        tasks = [
            asyncio.create_task(s.run(), name=f"{s.service}-{s.reads.stream}") for s in self.streams
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for s in self.streams:
                s.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def infos(self) -> list[ConsumerInfo]:
        """Every durable as the server sees it, for the /metrics gauges."""
        return [i for s in self.streams for i in await s.infos()]

    def ended(self, task: asyncio.Task[None]) -> None:
        """`task` (run()) never ends on its own: if it does, the service stops (SIGTERM: the
        batches in hand are finished) and its supervisor starts it again (`investflow up`,
        compose's restart policy), where it ran on consuming nothing (the 100,000-lead
        soak's notify, an hour in)."""
        if self.closing or task.cancelled():
            return  # closed, or cancelled with everything else (the loop shutting down)
        error = task.exception()
        log.critical(
            "%s: consuming ended (%r); stopping the service so that it is started again",
            task.get_name(),
            error,
            exc_info=error,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    async def close(self) -> None:
        """Finish the batches in hand, give the leases back, close the connection."""
        self.closing = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.nc is not None:
            await self.nc.close()


async def start_consumers(
    settings: Settings,
    broker: NatsBroker,
    service: str,
    reads: Sequence[Reads],
    handler: Handler,
) -> ServiceConsumers:
    """A service's consumers on a connection of their own, every durable made (call before
    saying ready: each partition's backlog shows from the start), consuming in a task;
    `await consumers.close()` on the way out."""
    nc = await connect_nats(
        settings, name=f"investflow-{service}-consumers", max_reconnect_attempts=-1
    )
    consumers = ServiceConsumers(
        nc.jetstream(), broker, service, reads, handler=handler, settings=settings
    )
    consumers.nc = nc
    await consumers.start()
    consumers.task = asyncio.create_task(consumers.run(), name=f"{service}-consumers")
    consumers.task.add_done_callback(consumers.ended)
    return consumers
