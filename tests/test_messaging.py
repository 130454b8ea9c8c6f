"""The consumer every service uses: batches, stream order across replicas, failure in a batch.

A real nats-server and real FastStream brokers; the work is a list append, so what is
checked is the consumption itself, not a service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from faststream.nats.annotations import NatsMessage
from nats.aio.msg import Msg

from investflow.nats_server import NatsServer, free_port
from shared.messaging import consume_in_order, durable_subscriber, make_broker
from shared.settings import Settings
from shared.streams import ensure_streams
from tests.helpers import uid

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    with NatsServer(free_port(), tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream(), 60)
        await nc.close()
        yield server.url


def settings_for(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"nats_url": url, "ack_wait_s": 5, "max_deliver": 3}
    return dataclasses.replace(Settings.from_env(), **(values | overrides))  # type: ignore[arg-type]


async def replica(  # type: ignore[no-untyped-def]
    settings: Settings, name: str, work, calls: list[str], work_run=None, subject="project.>"
):
    broker = make_broker(settings, name)
    sub = durable_subscriber(
        broker, subject, stream="PROJECT", durable="ordering", settings=settings
    )

    @sub
    async def handler(message: NatsMessage) -> None:
        calls.append(name)
        await consume_in_order(
            message.raw_message, sub, broker, name, settings, work, work_run=work_run
        )

    await broker.start()
    return broker


async def publish(url: str, n: int, pause: float = 0.0) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for i in range(n):
        await js.publish(f"project.k{i % 3}", str(i).encode(), headers={"Nats-Msg-Id": f"m{i}"})
        if pause:
            await asyncio.sleep(pause)
    await nc.close()


async def until(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_backlog_is_taken_in_batches_in_order(nats_url: str) -> None:
    await publish(nats_url, 300)
    done: list[int] = []

    async def work(msg: Msg) -> None:
        done.append(int(msg.data))

    calls: list[str] = []
    broker = await replica(settings_for(nats_url, batch_size=32), "solo", work, calls)
    try:
        await until(lambda: len(done) >= 300)
    finally:
        await broker.stop()
    assert done == list(range(300))
    # One handler call per batch, not per message: ceil(300 / 32) = 10 at best.
    assert len(calls) <= 30, f"{len(calls)} handler calls for 300 messages"


@pytest.mark.parametrize("subject", ["project.>", "project.k0"])
async def test_two_replicas_take_turns_in_stream_order(nats_url: str, subject: str) -> None:
    """Interleaved batches must not let a message overtake an older one held by the other;
    with project.k0 the consumer sees every third message of the stream (the ack floor
    then lags over the others' messages)."""
    started: list[tuple[str, int]] = []
    running: set[int] = set()
    overlaps: list[tuple[int, int]] = []

    def work_for(name: str):  # type: ignore[no-untyped-def]
        async def work(msg: Msg) -> None:
            n = int(msg.data)
            overlaps.extend((other, n) for other in running)
            running.add(n)
            started.append((name, n))
            await asyncio.sleep(random.uniform(0, 0.004))
            running.discard(n)

        return work

    # ack_wait 30 s, the deployed default: at 5 s a replica starved of CPU (a loaded CI
    # machine) let a message it had queued but not yet taken expire, and the other replica
    # got it too. Delivery is at least once by design (each service's inbox table keeps the
    # effect once); what this test checks is the order, so it gives the replicas that time.
    settings = settings_for(nats_url, batch_size=16, ack_wait_s=30)
    calls: list[str] = []
    brokers = [
        await replica(settings, name, work_for(name), calls, subject=subject) for name in ("a", "b")
    ]
    expected = [n for n in range(600) if subject == "project.>" or n % 3 == 0]
    try:
        await publish(nats_url, 600, pause=0.001)
        await until(lambda: len(started) >= len(expected))
    finally:
        for broker in brokers:
            await broker.stop()
    order = [n for _, n in started]
    assert order == expected, "processed out of stream order, or twice"
    assert not overlaps, f"a replica worked while the other had an older message: {overlaps[:5]}"
    assert {name for name, _ in started} == {"a", "b"}, "one replica did everything"


async def test_a_failure_in_a_batch_holds_the_rest_back_then_resumes(nats_url: str) -> None:
    await publish(nats_url, 40)
    done: list[int] = []
    failed = {17: 2}  # message 17 fails twice, then succeeds

    async def work(msg: Msg) -> None:
        n = int(msg.data)
        if failed.get(n):
            failed[n] -= 1
            raise OSError("database unavailable")  # transient: retried, in order
        done.append(n)

    broker = await replica(settings_for(nats_url, batch_size=64), "solo", work, [])
    try:
        await until(lambda: len(done) >= 40, timeout=30)
    finally:
        await broker.stop()
    assert done == list(range(40)), "a message overtook the one being retried"


async def test_a_consumer_made_by_an_older_release_is_brought_to_the_settings(
    nats_url: str,
) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    old = ConsumerConfig(
        durable_name="ordering",
        filter_subject="project.>",
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=1,  # what releases before batching created
        ack_wait=30,
    )
    await js.add_consumer("PROJECT", config=old)
    await publish(nats_url, 100)
    done: list[int] = []

    async def work(msg: Msg) -> None:
        done.append(int(msg.data))

    broker = await replica(settings_for(nats_url, batch_size=16), "solo", work, [])
    try:
        await until(lambda: len(done) >= 100)
        info = await js.consumer_info("PROJECT", "ordering")
    finally:
        await broker.stop()
        await nc.close()
    assert done == list(range(100))
    assert (info.config.max_ack_pending, info.config.ack_wait) == (16, 5.0)


async def test_runs_are_settled_together_and_a_failing_run_one_by_one(nats_url: str) -> None:
    await publish(nats_url, 120)
    done: list[int] = []
    runs: list[int] = []

    async def work(msg: Msg) -> None:
        done.append(int(msg.data))

    async def work_run(msgs: list[Msg]) -> None:
        numbers = [int(m.data) for m in msgs]
        if 57 in numbers:  # say, one message breaks the shared transaction
            raise RuntimeError("constraint violated")
        runs.append(len(numbers))
        done.extend(numbers)

    broker = await replica(settings_for(nats_url, batch_size=32), "solo", work, [], work_run)
    try:
        await until(lambda: len(done) >= 120)
    finally:
        await broker.stop()
    assert done == list(range(120))
    assert runs and max(runs) > 1, "no run was settled together"
    assert sum(runs) < 120, "the failing run was not settled one by one"


async def test_a_message_held_by_a_dead_replica_is_taken_in_order_without_handing_back(
    nats_url: str,
) -> None:
    """The oldest message is held by a replica that died: after ack_wait it is redelivered,
    and the live replica, waiting with newer ones, pulls it and goes on in order; no message
    is handed back (each handing back costs a delivery, and deliveries run out)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    await publish(nats_url, 50)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    config = ConsumerConfig(
        durable_name="ordering",
        filter_subject="project.>",
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=16,
        ack_wait=5,
        max_deliver=4,
    )
    dead = await js.pull_subscribe("project.>", durable="ordering", stream="PROJECT", config=config)
    held = await dead.fetch(1, timeout=2)  # and never acked: the replica "dies"
    assert int(held[0].data) == 0
    done: list[int] = []
    deliveries: dict[int, int] = {}

    async def work(msg: Msg) -> None:
        done.append(int(msg.data))
        deliveries[int(msg.data)] = msg.metadata.num_delivered

    settings = settings_for(nats_url, batch_size=16, max_deliver=3)
    broker = await replica(settings, "live", work, [])
    try:
        await until(lambda: len(done) >= 50, timeout=40)
    finally:
        await broker.stop()
        await nc.close()
    assert done == list(range(50))
    handed_back = sorted(n for n, times in deliveries.items() if times > 1 and n != 0)
    assert deliveries[0] == 2 and not handed_back, f"handed back: {handed_back}"


async def test_a_consumer_whose_filter_was_changed_is_put_back_on_start(nats_url: str) -> None:
    """Issue 11 item 5: a durable redefined with another filter (as the Center could once)
    is repaired before the service subscribes, and what arrived meanwhile is still pending."""
    from nats.js.api import AckPolicy, ConsumerConfig

    from shared import messaging

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    durable = f"svc{uid()}"
    await js.add_consumer(
        "PROJECT",
        config=ConsumerConfig(
            durable_name=durable, filter_subject="project.none", ack_policy=AckPolicy.EXPLICIT
        ),
    )
    await js.publish("project.lead", b"{}", headers={"Nats-Msg-Id": uid()})
    messaging.DECLARED.append(("PROJECT", durable, "project.>"))
    try:
        repaired = await messaging.repair_consumers(settings_for(nats_url), durable)
        again = await messaging.repair_consumers(settings_for(nats_url), durable)
    finally:
        messaging.DECLARED.remove(("PROJECT", durable, "project.>"))
    info = await js.consumer_info("PROJECT", durable)
    await nc.close()
    assert len(repaired) == 1 and "project.none" in repaired[0] and again == []
    assert info.config.filter_subject == "project.>"
    assert (info.num_pending or 0) >= 1


def test_a_transient_failure_is_logged_in_one_line_anything_else_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The demo under load printed a notify traceback for a NATS request that timed out and
    was retried: the operator reads one line for that, and a traceback only for a bug."""
    import logging

    from shared.messaging import log_failure

    logger = logging.getLogger("investflow.test")
    with caplog.at_level(logging.WARNING, logger="investflow.test"):
        log_failure(logger, "notify: delivery pass failed", nats.errors.TimeoutError())
        log_failure(logger, "notify: delivery pass failed", KeyError("project_id"))
    slow, bug = caplog.records
    assert slow.levelname == "WARNING" and slow.exc_info is None
    assert "TimeoutError" in slow.getMessage()
    assert bug.levelname == "ERROR" and bug.exc_info is not None
