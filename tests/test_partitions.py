"""Partitioned consumers (shared/partitions.py) on a real nats-server.

The replicas of (b) and (c) are processes of their own (tests/partition_replica.py), so a
kill -9 is a real one; they record every handling into SQLite, where the order of the rows
is the order of the handling.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from investflow.nats_server import NatsServer, free_port
from shared.messaging import Retry
from shared.partitions import (
    PartitionConsumer,
    PartitionLeases,
    partition_of,
    partitioning,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ["project.*.*"]
N = 8
KEYS = [f"P-{i:03d}" for i in range(100)]
PER_KEY = 20  # 2,000 messages


@pytest.fixture
async def nats_js(tmp_path: Path) -> AsyncIterator[tuple[str, JetStreamContext]]:
    with NatsServer(free_port(), tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        try:
            yield server.url, nc.jetstream()
        finally:
            await nc.close()


async def add_stream(js: JetStreamContext, name: str = "PROJECT", subjects=SUBJECTS, **kw):  # type: ignore[no-untyped-def]
    parts = partitioning(subjects, kw.pop("partitions", N), **kw)
    await js.add_stream(
        StreamConfig(name=name, subjects=subjects, subject_transform=parts.transform())
    )
    return parts


async def until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        await asyncio.sleep(0.05)


async def publish_all(js: JetStreamContext, pause: float = 0.0) -> None:
    """seq 0..PER_KEY-1 of every key, ten keys at a time (a key's next message waits for
    the one before, so its order is sure), with `pause` between, for a steady stream."""
    for seq in range(PER_KEY):
        for i in range(0, len(KEYS), 10):
            await asyncio.gather(
                *(
                    js.publish(f"project.lead.{k}", json.dumps({"key": k, "seq": seq}).encode())
                    for k in KEYS[i : i + 10]
                )
            )
            if pause:
                await asyncio.sleep(pause)


# --- (a) the partition number ---------------------------------------------------------------


async def test_partition_of_matches_the_servers_transform(nats_js) -> None:  # type: ignore[no-untyped-def]
    _, js = nats_js
    parts = await add_stream(js)
    assert parts.transform().dest == "project.{{wildcard(1)}}.{{partition(8,2)}}.{{wildcard(2)}}"
    rng = random.Random(12)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_项目甲乙丙"
    keys = ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(200)]
    for key in keys:
        await js.publish(f"project.lead.{key}", b"{}")
    seen = set()
    for seq, key in enumerate(keys, start=1):
        stored = (await js.get_msg("PROJECT", seq=seq)).subject
        p = partition_of(key, N)
        assert stored == f"project.lead.{p}.{key}"
        assert parts.partition_of_subject(f"project.lead.{key}") == p
        assert stored.split(".")[2] == parts.filter_subject(p).split(".")[2]
        seen.add(p)
    assert seen == set(range(N))

    # Several key tokens are hashed as one string, the partition token before the first.
    units = await add_stream(js, "UNITS", ["intake.*.*"], partitions=5, key=(1, 2))
    assert units.filter_subject(3) == "intake.3.*.*"
    pairs = [(f"U{rng.randint(0, 999)}", rng.choice(["lead", "funds", "visit"])) for _ in range(40)]
    for unit, kind in pairs:
        await js.publish(f"intake.{unit}.{kind}", b"{}")
    for seq, (unit, kind) in enumerate(pairs, start=1):
        stored = (await js.get_msg("UNITS", seq=seq)).subject
        assert stored == f"intake.{partition_of([unit, kind], 5)}.{unit}.{kind}"


def test_partitioning_refuses_what_it_cannot_split() -> None:
    for subjects in (["project.>"], ["a.*", "b.*"], ["project.lead"]):
        with pytest.raises(ValueError):
            partitioning(subjects, N)
    with pytest.raises(ValueError):
        partitioning(["project.*.*"], N, key=(3,))


# --- leases ---------------------------------------------------------------------------------


async def test_three_members_hold_a_fair_share_each_and_all_partitions(nats_js) -> None:  # type: ignore[no-untyped-def]
    _, js = nats_js
    members = [PartitionLeases(js, "svc", N, 3.0, member=m) for m in "xyz"]
    for m in members:
        await m.open()
    for _ in range(4):  # everyone registers, then the extras go back and are taken
        for m in members:
            changes = await m.tick()
            for p in changes.extra:
                await m.release(p)
    held = [set(m.held) for m in members]
    assert sorted(len(h) for h in held) == [2, 3, 3]
    assert set().union(*held) == set(range(N))
    assert sum(len(h) for h in held) == N  # nobody holds another's
    # A lease deleted behind its holder's back is lost at the next renewal.
    x = members[0]
    p = next(iter(x.held))
    kv = await js.key_value("investflow_leases")
    await kv.delete(f"svc.p.{p}")
    assert p in (await x.tick()).lost
    # A lease bucket of another lease time is refused, not silently shared.
    with pytest.raises(ValueError):
        await PartitionLeases(js, "svc", N, 5.0).open()


# --- (b) and (c): replicas in processes of their own ---------------------------------------


def make_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    cols = "key TEXT, seq INT, member TEXT, partition INT, delivered INT, at REAL"
    db.execute(f"CREATE TABLE handled ({cols}, UNIQUE (key, seq))")
    db.execute(f"CREATE TABLE deliveries ({cols})")
    db.commit()
    db.close()


def query(path: Path, sql: str, *args: object) -> list[tuple]:
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def count(path: Path) -> int:
    return int(query(path, "SELECT COUNT(*) FROM handled")[0][0])


def replica(url: str, db: Path, member: str, logs: Path, **options: object) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "partition_replica.py")]
    cmd += ["--url", url, "--db", str(db), "--member", member]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    log = open(logs / f"replica-{member}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


async def holders(js: JetStreamContext) -> dict[int, str | None]:
    try:
        kv = await js.key_value("investflow_leases")
    except nats.js.errors.BucketNotFoundError:
        return dict.fromkeys(range(N))
    out: dict[int, str | None] = {}
    for p in range(N):
        try:
            out[p] = (await kv.get(f"worker.p.{p}")).value.decode()  # type: ignore[union-attr]
        except nats.js.errors.NotFoundError:
            out[p] = None
    return out


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def assert_in_order_and_complete(db: Path) -> None:
    """Every (key, seq) handled, and each key's first handlings in increasing seq."""
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, seq in query(db, "SELECT key, seq FROM handled ORDER BY rowid"):
        per_key[key].append(seq)
    assert sorted(per_key) == KEYS
    wrong = {k: s for k, s in per_key.items() if s != list(range(PER_KEY))}
    assert not wrong, f"out of order or missing: {dict(list(wrong.items())[:3])}"


async def test_two_replicas_share_the_partitions_and_hand_over_without_repeats(
    nats_js, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url, js = nats_js
    await add_stream(js)
    db = tmp_path / "handled.db"
    make_db(db)
    go = tmp_path / "go"
    opts = {"ack_wait": 1.5, "lease": 1.5, "batch": 10, "work": 0.025}
    a = replica(url, db, "A", tmp_path, **opts)
    b = replica(url, db, "B", tmp_path, wait_file=go, **opts)
    try:
        await until(lambda: _all_held_by(js, {"A"}), what="A holding every partition")
        await publish_all(js)
        await until(lambda: count(db) >= 100, what="A under way")
        go.touch()  # B joins while A has batches in hand: A gives half back gracefully
        joined = time.monotonic()
        await until(lambda: _split(js, {"A": N // 2, "B": N // 2}), what="a 4/4 split")
        balanced_s = time.monotonic() - joined
        await until(lambda: count(db) >= len(KEYS) * PER_KEY, timeout=40, what="all")
    finally:
        stop(a, b)
    total = len(KEYS) * PER_KEY
    n, distinct = query(db, "SELECT COUNT(*), COUNT(DISTINCT key || '/' || seq) FROM deliveries")[0]
    assert (n, distinct) == (total, total), "every message handled exactly once"
    shares = dict(query(db, "SELECT member, COUNT(*) FROM handled GROUP BY member"))
    print(f"\nshares {shares} of {total}; balanced {balanced_s:.2f}s after B joined")
    assert min(shares.get("A", 0), shares.get("B", 0)) >= 0.3 * total
    assert_in_order_and_complete(db)


async def _all_held_by(js: JetStreamContext, members: set[str]) -> bool:
    now = set((await holders(js)).values())
    return None not in now and now <= members


async def _split(js: JetStreamContext, wanted: dict[str, int]) -> bool:
    got: dict[str | None, int] = defaultdict(int)
    for holder in (await holders(js)).values():
        got[holder] += 1
    return dict(got) == wanted


async def test_a_killed_replicas_partitions_are_taken_over_in_order(
    nats_js, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url, js = nats_js
    await add_stream(js)
    db = tmp_path / "handled.db"
    make_db(db)
    # The lease no longer than ack_wait (the least allowed), and messages still arriving:
    # B can take a partition before A's unacked messages are due, and be handed newer ones.
    ack_wait, lease = 2.0, 2.0
    opts = {"ack_wait": ack_wait, "lease": lease, "batch": 10, "work": 0.02}
    a = replica(url, db, "A", tmp_path, **opts)
    b = replica(url, db, "B", tmp_path, **opts)
    publishing = None
    try:
        await until(lambda: _split(js, {"A": N // 2, "B": N // 2}), what="a 4/4 split")
        publishing = asyncio.create_task(publish_all(js, pause=0.035))
        await until(
            lambda: query(db, "SELECT COUNT(*) FROM handled WHERE member = 'A'")[0][0] >= 150,
            what="A under way",
        )
        of_a = [p for p, h in (await holders(js)).items() if h == "A"]

        async def a_has_messages_in_hand() -> bool:
            for p in of_a:
                if (await js.consumer_info("PROJECT", f"worker-p{p}")).num_ack_pending:
                    return True
            return False

        await until(a_has_messages_in_hand, what="A with messages in hand")
        a.send_signal(signal.SIGKILL)
        killed = time.time()
        a.wait()
        # What A held when it died, as the server still counts it (until ack_wait): the check
        # above can race A's ack of its last batch, and then there is nothing to redeliver.
        held_at_death = 0
        for p in of_a:
            held_at_death += (await js.consumer_info("PROJECT", f"worker-p{p}")).num_ack_pending
        await until(lambda: _all_held_by(js, {"B"}), timeout=lease + ack_wait + 5, what="B")
        leases_s = time.time() - killed
        await publishing
        await until(lambda: count(db) >= len(KEYS) * PER_KEY, timeout=40, what="all handled")
    finally:
        if publishing is not None:
            publishing.cancel()
        stop(a, b)
    marks = ",".join("?" * len(of_a))
    first_b = query(
        db,
        f"SELECT MIN(at) FROM deliveries WHERE member = 'B' AND at > ? AND partition IN ({marks})",
        killed,
        *of_a,
    )[0][0]
    takeover_s = first_b - killed
    print(
        f"\nB took A's partitions {of_a}: leases {leases_s:.2f}s, first message {takeover_s:.2f}s"
    )
    assert takeover_s <= lease + ack_wait + 1.0
    assert_in_order_and_complete(db)
    # The kill landed with messages in hand: B had them redelivered.
    redelivered = query(
        db,
        f"SELECT COUNT(*) FROM deliveries WHERE member = 'B' AND delivered > 1 "
        f"AND partition IN ({marks})",
        *of_a,
    )[0][0]
    assert redelivered >= 1 or held_at_death == 0, (redelivered, held_at_death)
    # Handled twice only what A had handled (committed) just before it died.
    twice = query(
        db,
        "SELECT d.key, d.seq, h.member, COUNT(*) FROM deliveries d JOIN handled h "
        "ON d.key = h.key AND d.seq = h.seq GROUP BY d.key, d.seq HAVING COUNT(*) > 1",
    )
    assert all(member == "A" and n == 2 for _, _, member, n in twice), twice
    assert len(twice) <= len(of_a) * 10


async def test_a_takeover_settles_the_dead_holders_messages_before_newer_ones(nats_js) -> None:  # type: ignore[no-untyped-def]
    """Deterministic: a holder took 3 messages and died (room left under max_ack_pending),
    so the server hands the next holder newer ones first; it must not handle them first."""
    _, js = nats_js
    parts = await add_stream(js)
    key = key_in(2)

    async def send(seqs: range) -> None:
        for seq in seqs:
            await js.publish(f"project.lead.{key}", json.dumps({"seq": seq}).encode())

    await send(range(3))
    config = ConsumerConfig(
        durable_name="solo-p2",
        filter_subject=parts.filter_subject(2),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=1.0,
        max_ack_pending=10,
        max_deliver=-1,
    )
    await js.add_consumer("PROJECT", config=config)
    dead = await js.pull_subscribe_bind(durable="solo-p2", stream="PROJECT")
    assert len(await dead.fetch(3, timeout=2)) == 3
    await dead.unsubscribe()
    await send(range(3, 6))
    order: list[int] = []

    async def handler(msgs: list[Msg]) -> None:
        order.extend(json.loads(m.data)["seq"] for m in msgs)

    async def dead_letter(msg: Msg, exc: BaseException) -> None:
        raise AssertionError(exc)

    consumer = PartitionConsumer(
        js,
        service="solo",
        stream="PROJECT",
        partitioning=parts,
        handler=handler,
        dead_letter=dead_letter,
        ack_wait_s=1.0,
        batch=10,
        fetch_timeout_s=0.5,
    )
    task = asyncio.create_task(consumer.run())
    try:
        with contextlib.suppress(AssertionError):  # the order says what went wrong
            await until(lambda: len(order) >= 6, timeout=10, what="six handled")
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert order == list(range(6))


# --- (d) failures stay in their partition ---------------------------------------------------


def key_in(p: int, skip: int = 0) -> str:
    found = [k for k in (f"k{i}" for i in range(10_000)) if partition_of(k, N) == p]
    return found[skip]


async def test_poison_and_retry_hold_up_only_their_own_partition(nats_js) -> None:  # type: ignore[no-untyped-def]
    _, js = nats_js
    await add_stream(js)
    handled: dict[str, float] = {}
    calls: dict[str, int] = defaultdict(int)
    dead: list[tuple[str, str]] = []
    poison, after_poison = key_in(0), key_in(0, 1)
    flaky, after_flaky = key_in(1), key_in(1, 1)
    other, other2 = key_in(5), key_in(5, 1)

    async def handler(msgs: list[Msg]) -> None:
        for m in msgs:
            key = m.subject.split(".")[-1]
            calls[key] += 1
            if key == poison:
                raise ValueError("cannot parse")
            if key == flaky and calls[key] <= 2:  # the batch and then the single try
                raise Retry("its lead has not arrived yet")
        for m in msgs:
            handled[m.subject.split(".")[-1]] = time.monotonic()

    async def dead_letter(msg: Msg, exc: BaseException) -> None:
        dead.append((msg.subject, repr(exc)))

    consumer = PartitionConsumer(
        js,
        service="solo",
        stream="PROJECT",
        partitioning=partitioning(SUBJECTS, N),
        handler=handler,
        dead_letter=dead_letter,
        ack_wait_s=2.0,
        lease_s=2.0,
        batch=10,
        fetch_timeout_s=0.5,
        retry_delay_s=lambda _n: 2.0,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.held == set(range(N)), what="all partitions held")
        for key in (poison, after_poison):
            await js.publish(f"project.lead.{key}", b"{}")
        sent = time.monotonic()
        await js.publish(f"project.lead.{other}", b"{}")
        await until(lambda: other in handled and after_poison in handled, timeout=10)
        assert handled[other] - sent < 1.0
        assert dead == [(f"project.lead.0.{poison}", "ValueError('cannot parse')")]
        assert poison not in handled

        for key in (flaky, after_flaky):
            await js.publish(f"project.lead.{key}", b"{}")
        sent = time.monotonic()
        await js.publish(f"project.lead.{other2}", b"{}")
        await until(lambda: other2 in handled, timeout=10)
        assert handled[other2] - sent < 1.0, "a retry in partition 1 held up partition 5"
        assert flaky not in handled
        await until(lambda: after_flaky in handled, timeout=15)
        assert handled[flaky] - sent >= 1.5  # it waited its retry delay
        assert handled[flaky] <= handled[after_flaky], "order in the partition kept"
        info = await js.consumer_info("PROJECT", "solo-p0")
        assert info.num_ack_pending == 0  # the poison was terminated, not left to come back
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert consumer.held == set()  # given back on the way out
    assert (await holders_of(js, "solo")) == {}


async def test_a_message_that_keeps_failing_transiently_is_dead_lettered_at_max_deliver(
    nats_js,
) -> None:  # type: ignore[no-untyped-def]
    _, js = nats_js
    await add_stream(js)
    tries: list[int] = []
    dead: list[str] = []

    async def handler(msgs: list[Msg]) -> None:
        tries.append(msgs[0].metadata.num_delivered)
        raise Retry("never arrives")

    async def dead_letter(msg: Msg, exc: BaseException) -> None:
        dead.append(f"{msg.metadata.num_delivered}: {exc!r}")

    consumer = PartitionConsumer(
        js,
        service="solo",
        stream="PROJECT",
        partitioning=partitioning(SUBJECTS, N),
        handler=handler,
        dead_letter=dead_letter,
        ack_wait_s=2.0,
        batch=10,
        fetch_timeout_s=0.5,
        max_deliver=3,
        retry_delay_s=lambda _n: 0.2,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.held == set(range(N)), what="all partitions held")
        await js.publish("project.lead.P-1", b"{}")
        await until(lambda: dead, timeout=10, what="dead-lettered")
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert dead == ["3: Retry('never arrives')"]
    assert max(tries) == 3  # terminated then, not delivered again


async def holders_of(js: JetStreamContext, service: str) -> dict[str, bytes]:
    kv = await js.key_value("investflow_leases")
    out = {}
    for key in [f"{service}.p.{p}" for p in range(N)]:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            out[key] = (await kv.get(key)).value
    return out


async def test_a_partition_whose_lease_was_taken_stops_at_once(nats_js) -> None:  # type: ignore[no-untyped-def]
    _, js = nats_js
    await add_stream(js)
    handled: list[str] = []

    async def handler(msgs: list[Msg]) -> None:
        handled.extend(m.subject.split(".")[-1] for m in msgs)

    async def dead_letter(msg: Msg, exc: BaseException) -> None:
        raise AssertionError(exc)

    consumer = PartitionConsumer(
        js,
        service="solo",
        stream="PROJECT",
        partitioning=partitioning(SUBJECTS, N),
        handler=handler,
        dead_letter=dead_letter,
        ack_wait_s=1.5,
        batch=10,
        fetch_timeout_s=0.5,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.held == set(range(N)), what="all partitions held")
        kv = await js.key_value("investflow_leases")
        await kv.delete("solo.p.3")
        await kv.create("solo.p.3", b"someone-else")

        async def renew() -> None:  # the other holder stays alive (the lease TTL is 1.5 s)
            while True:
                await asyncio.sleep(0.3)
                await kv.put("solo.p.3", b"someone-else")

        other = asyncio.create_task(renew())
        await until(lambda: 3 not in consumer.held, timeout=5, what="partition 3 let go")
        await js.publish(f"project.lead.{key_in(3)}", b"{}")
        await js.publish(f"project.lead.{key_in(4)}", b"{}")
        await until(lambda: key_in(4) in handled, timeout=5)
        await asyncio.sleep(1.0)
        assert key_in(3) not in handled  # its new holder's, not ours
        assert (await kv.get("solo.p.3")).value == b"someone-else"
        other.cancel()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- (5) public APIs only -------------------------------------------------------------------


def private_accesses(source: str) -> list[str]:
    """`x._name` on anything but self/cls, and getattr/setattr/hasattr(x, "_name")."""
    found = []
    for node in ast.walk(ast.parse(source)):
        dunder = node.attr.startswith("__") if isinstance(node, ast.Attribute) else False
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not dunder:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
        ):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_partitions_touch_no_private_attribute_of_nats_or_faststream() -> None:
    source = (ROOT / "shared" / "partitions.py").read_text()
    assert private_accesses(source) == []


# Private attributes of other libraries that services/ and shared/ may touch, each with its
# reason where it is used: durable_rules has no public way to drop a ruleset (engine.py),
# argparse's subparser type has no public name, and the registry's own evaluation.
ALLOWED_PRIVATE = {
    ("services/board/cli.py", "._SubParsersAction"),
    ("shared/rules/engine.py", "._handle"),
    ("shared/rules/engine.py", "._ruleset_list"),
    ("shared/rules/engine.py", "._ruleset_directory"),
    ("shared/rules/registry.py", "._evaluate"),
}


def test_services_and_shared_touch_no_private_attribute_of_nats_or_faststream() -> None:
    """Issue 12 item 2: every service consumes through shared/partitions.py on nats-py's
    public pull API; nothing in services/ or shared/ reaches into nats-py or FastStream
    (`psub._nc`, `getattr(subscriber, "subscription")`, ...) any more."""
    found = set()
    for path in sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for hit in private_accesses(path.read_text()):
            found.add((rel, hit.split(": ", 1)[1]))
    assert found - ALLOWED_PRIVATE == set()
    source = (ROOT / "shared" / "http_ops.py").read_text()
    assert '"subscription"' not in source  # FastStream's subscriber internals: not read


def test_the_private_attribute_scan_catches_what_messaging_did() -> None:
    sample = "await psub._nc.publish(psub._nms)\ngetattr(sub, '_sub')\nself._x = cls._y\n"
    assert len(private_accesses(sample)) == 3


async def test_a_partition_durable_redefined_with_another_filter_is_put_back_and_logged(
    nats_js, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """Issue 11 item 5 on partitioned consumers: whoever redefined the durable, the service
    puts its own filter back on start and says so; what arrived meanwhile is still pending."""
    import logging

    _, js = nats_js
    await add_stream(js)
    parts = partitioning(SUBJECTS, N)

    async def nothing(msgs: list[Msg]) -> None:
        return None

    consumer = PartitionConsumer(
        js, service="solo", stream="PROJECT", partitioning=parts, handler=nothing,
        dead_letter=nothing,  # type: ignore[arg-type]
    )  # fmt: skip
    await consumer.ensure(2)
    config = (await js.consumer_info("PROJECT", "solo-p2")).config
    config.filter_subject = "project.none"
    await js.add_consumer("PROJECT", config=config)
    await js.publish(f"project.lead.{key_in(2)}", b"{}")
    with caplog.at_level(logging.WARNING, logger="investflow.partitions"):
        await consumer.ensure(2)
    info = await js.consumer_info("PROJECT", "solo-p2")
    assert info.config.filter_subject == parts.filter_subject(2)
    assert (info.num_pending or 0) == 1
    assert any("project.none" in r.getMessage() for r in caplog.records)


async def test_a_lease_round_that_fails_unexpectedly_is_retried_not_the_end(nats_js) -> None:  # type: ignore[no-untyped-def]
    """Found by the 100,000-lead soak: notify's consumer loop left on an error of a lease
    round that was not a NATS one, gave every lease back, and the service ran on for good
    consuming nothing (200,000 messages pending)."""
    _, js = nats_js
    await add_stream(js, partitions=2)
    handled: list[str] = []

    async def handler(msgs: list[Msg]) -> None:
        handled.extend(m.subject for m in msgs)

    async def dead_letter(msg: Msg, exc: BaseException) -> None:
        raise AssertionError(f"nothing is dead-lettered here: {msg.subject} {exc!r}")

    consumer = PartitionConsumer(
        js,
        service="solo",
        stream="PROJECT",
        partitioning=partitioning(SUBJECTS, 2),
        handler=handler,
        dead_letter=dead_letter,
        ack_wait_s=2.0,
        lease_s=2.0,
        batch=10,
        fetch_timeout_s=0.5,
    )
    leases_tick = consumer.leases.tick
    failed = 0

    async def tick_failing_once(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        nonlocal failed
        if consumer.held and not failed:  # a round after the first, holding partitions
            failed += 1
            raise RuntimeError("a round failed in a way nobody foresaw")
        return await leases_tick(*args, **kwargs)  # type: ignore[arg-type]

    consumer.leases.tick = tick_failing_once  # type: ignore[method-assign]
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: failed == 1, what="the failing round")
        await until(lambda: consumer.held == {0, 1}, what="both partitions held after it")
        for i in range(20):
            await js.publish(f"project.lead.K{i}", b"{}")
        await until(lambda: len(handled) == 20, what="all 20 handled after the failed round")
        assert not task.done()
        assert set(await holders_of(js, "solo")) >= {"solo.p.0", "solo.p.1"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
