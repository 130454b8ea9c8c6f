"""A service's keyed-stream consumers (shared/consumers.py) on a real nats-server: the
upgrade from the one-durable layout before keys, and a fresh start."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from investflow.nats_server import NatsServer, free_port
from shared import subjects
from shared.consumers import Reads, ServiceConsumers
from shared.settings import Settings
from shared.streams import ensure_streams

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def js(tmp_path: Path) -> AsyncIterator[object]:
    with NatsServer(free_port(), tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        try:
            yield nc.jetstream()
        finally:
            await nc.close()


def settings() -> Settings:
    values = {"ack_wait_s": 3, "max_deliver": 3, "batch_size": 16}
    return dataclasses.replace(Settings.from_env(), **values)  # type: ignore[arg-type]


async def until(predicate, timeout: float = 30, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []  # (project, subject, n)

    async def __call__(self, msgs: list[Msg]) -> None:
        for m in msgs:
            body = json.loads(m.data)
            self.seen.append((body["project_id"], m.subject, body["n"]))


async def consume(js, recorder: Recorder) -> tuple[ServiceConsumers, asyncio.Task[None]]:  # type: ignore[no-untyped-def]
    consumers = ServiceConsumers(
        js,
        NatsBroker(),  # never started: nothing here is dead-lettered
        "svc",
        [Reads("PROJECT", "")],
        handler=recorder,
        settings=settings(),
    )
    await consumers.start()
    return consumers, asyncio.create_task(consumers.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def event(pid: str, n: int) -> bytes:
    return json.dumps({"project_id": pid, "n": n}).encode()


async def test_an_old_layout_is_upgraded_and_its_messages_go_first_once(js) -> None:  # type: ignore[no-untyped-def]
    """Issue 12 item 1: a data dir from before keys (PROJECT on `project.>`, one durable per
    service) is upgraded on start: what the old durable acked is not handled again, what it
    had not is handled first and in stream order, then the keyed partitions go on."""
    await js.add_stream(StreamConfig(name="PROJECT", subjects=["project.>"]))
    for n in range(6):
        await js.publish("project.lead", event(f"TS01-P{n % 3}", n))
    old = await js.pull_subscribe_bind(
        durable=(
            await js.add_consumer(
                "PROJECT",
                config=ConsumerConfig(
                    durable_name="svc", filter_subject="project.>", ack_policy=AckPolicy.EXPLICIT
                ),
            )
        ).name,
        stream="PROJECT",
    )
    for m in await old.fetch(2, timeout=5):
        await m.ack()  # the old service settled n = 0, 1
    await old.unsubscribe()

    report = await ensure_streams(js, 60, units=[])
    assert any(line.startswith("upgraded PROJECT") for line in report), report
    for n in range(6, 12):
        pid = f"TS01-P{n % 3}"
        await js.publish(subjects.keyed("project.lead", pid), event(pid, n))

    recorder = Recorder()
    _, task = await consume(js, recorder)
    try:
        await until(lambda: len(recorder.seen) >= 10, what="the ten unsettled events")
        await asyncio.sleep(1.0)  # nothing more comes
    finally:
        await stop(task)
    numbers = [n for _, _, n in recorder.seen]
    assert sorted(numbers) == list(range(2, 12))  # nothing lost, nothing twice
    assert numbers[:4] == [2, 3, 4, 5]  # the old layout's, first and in order
    for pid in {p for p, _, _ in recorder.seen}:
        mine = [n for p, _, n in recorder.seen if p == pid]
        assert mine == sorted(mine), pid  # each project in order
    names = {c.name for c in await js.consumers_info("PROJECT")}
    assert "svc" not in names  # the old durable is gone
    assert {"svc-legacy", "svc-p0", "svc-p3"} <= names

    # A restart handles nothing again.
    again = Recorder()
    _, task = await consume(js, again)
    await asyncio.sleep(2.0)
    await stop(task)
    assert again.seen == []


async def test_a_fresh_stream_has_no_legacy_durable_and_each_partition_in_order(js) -> None:  # type: ignore[no-untyped-def]
    await ensure_streams(js, 60, units=[])
    recorder = Recorder()
    _, task = await consume(js, recorder)
    try:
        for n in range(40):
            pid = f"TS02-P{n % 7}"
            await js.publish(subjects.keyed("project.funds", pid), event(pid, n))
        await until(lambda: len(recorder.seen) >= 40, what="forty events")
    finally:
        await stop(task)
    assert sorted(n for _, _, n in recorder.seen) == list(range(40))
    for pid in {p for p, _, _ in recorder.seen}:
        mine = [n for p, _, n in recorder.seen if p == pid]
        assert mine == sorted(mine), pid
    names = {c.name for c in await js.consumers_info("PROJECT")}
    assert "svc-legacy" not in names
    assert len([n for n in names if n.startswith("svc-p")]) == 4
    stored = {s.split(".")[2] for _, s, _ in recorder.seen}
    assert stored <= {"0", "1", "2", "3"}  # project.funds.<p>.<key>


async def test_consuming_that_ends_stops_the_service_so_it_is_started_again() -> None:
    """The consumers' task never ends on its own; when it did (the 100,000-lead soak's
    notify), the service ran on consuming nothing. Now it stops itself (SIGTERM: its
    shutdown finishes the batches in hand) and its supervisor starts it again; not when
    the service itself is closing them."""
    import signal
    import types

    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))
    try:

        async def fails() -> None:
            raise RuntimeError("a lease round failed in a way nobody foresaw")

        task = asyncio.create_task(fails(), name="notify-consumers")
        with contextlib.suppress(RuntimeError):
            await task
        ServiceConsumers.ended(types.SimpleNamespace(closing=True), task)  # type: ignore[arg-type]
        cancelled = asyncio.create_task(asyncio.sleep(10))
        cancelled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancelled
        ServiceConsumers.ended(types.SimpleNamespace(closing=False), cancelled)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert got == []
        ServiceConsumers.ended(types.SimpleNamespace(closing=False), task)  # type: ignore[arg-type]
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
