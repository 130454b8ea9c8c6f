"""Faults on a three-node JetStream cluster (issue 17 item 3), on loopback only.

The workload and the exact counts are the fault tests' (tests/fault/test_kill_and_replicas.py):
every funds record credited exactly once, every correction standing once, no notification
twice. Here the services run on a three-node cluster with every stream on all three nodes,
and a node is killed -9 under them while that workload is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.aio.client
import nats.errors
import pytest

from investflow.nats_server import NatsCluster, free_port
from investflow.runtime import System, running_system, wait_until_idle
from shared.streams import STREAMS
from tests.cluster.routes import RouteForwarders
from tests.conftest import PG_SKIP_REASON, SLOW, fresh_pg_database
from tests.fault.test_kill_and_replicas import ENV, check_exact, workload

pytestmark = pytest.mark.timeout(600)

# The streams the workload flows through: the one whose leader dies matters most.
PIPELINE = ("PROJECT", "REVIEW", "SCORE", "NOTIFY")


@contextlib.asynccontextmanager
async def cluster_system(tmp_path: Path, backend: str) -> AsyncIterator[System]:
    with contextlib.ExitStack() as stack:
        env = dict(ENV)
        if backend == "postgresql":
            if PG_SKIP_REASON:
                pytest.skip(PG_SKIP_REASON)
            env["DATABASE_URL"] = stack.enter_context(fresh_pg_database())
        async with running_system(
            tmp_path,
            free_port(),
            free_port(),
            echo=bool(os.environ.get("INVESTFLOW_ECHO")),
            extra_env=env,
            cluster=3,
        ) as system:
            system.database_url = env.get("DATABASE_URL")  # type: ignore[attr-defined]
            yield system


def nodes(system: System) -> NatsCluster:
    assert system.nats_cluster is not None
    return system.nats_cluster


async def leader(js, stream: str) -> str | None:  # type: ignore[no-untyped-def]
    try:
        info = await js.stream_info(stream)
    except nats.errors.Error:  # no leader while the election runs: no answer, or an error
        return None
    return info.cluster.leader if info.cluster else None


async def publish_retrying(js, subject: str, key: str, body: bytes) -> int:  # type: ignore[no-untyped-def]
    """As a unit's client does: a publish the cluster did not confirm (its leader died, the
    election is running) is sent again under the same Nats-Msg-Id. Returns the tries."""
    for tries in range(1, 200):
        try:
            await js.publish(subject, body, headers={"Nats-Msg-Id": key}, timeout=2)
            return tries
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError(f"could not publish {key}")


async def wait_new_leader(js, stream: str, dead: str, timeout: float = 60) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        now = await leader(js, stream)
        if now and now != dead:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream} elected no new leader within {timeout}s")


async def caught_up(urls: list[str], name: str, timeout: float = 60) -> float:
    """Until every stream reports node `name` as a current replica, with no lag."""
    start = time.monotonic()
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        while time.monotonic() - start < timeout:
            behind = []
            for info in await js.streams_info():
                peers = {p.name: p for p in (info.cluster.replicas or [])} if info.cluster else {}
                here = info.cluster and info.cluster.leader == name
                peer = peers.get(name)
                if not here and (peer is None or not peer.current or (peer.lag or 0) > 0):
                    behind.append(info.config.name)
            if not behind:
                return time.monotonic() - start
            await asyncio.sleep(0.5)
        raise AssertionError(f"{name} did not catch up within {timeout}s: {behind}")
    finally:
        await nc.close()


async def messages_on_node(url: str, stream: str) -> int:
    """The stream's message count as that node's own copy holds it (a direct get would be
    served by any replica; the node's monitoring would need its http port): its /jsz."""
    import json
    import urllib.request

    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"{url}/jsz?streams=true", timeout=5).read()
    )
    for account in json.loads(body).get("account_details", []):
        for s in account.get("stream_detail", []):
            if s["name"] == stream:
                return int(s["state"]["messages"])
    raise AssertionError(f"{stream} not on {url}")


async def run_with_kill(system: System, tmp_path: Path, victim_of: str) -> dict[str, float]:
    """Publish the fault workload; a third of the way in, kill -9 a node (`leader`: the
    PROJECT stream's leader, `follower`: a node that leads none of the pipeline's streams,
    or one leading the fewest); restart it at two thirds. Returns the measured times."""
    cluster = nodes(system)
    messages = workload("C")
    kill_at, restart_at = len(messages) // 3, 2 * len(messages) // 3
    times: dict[str, float] = {}
    victim = ""
    killed_at = 0.0
    retried = 0
    for n, (subject, key, body) in enumerate(messages):
        if n == kill_at:
            leaders = {s: await leader(system.js, s) for s in PIPELINE}
            if victim_of == "leader":
                victim = leaders["PROJECT"] or ""
            else:
                counts = {s.name: list(leaders.values()).count(s.name) for s in cluster.servers}
                victim = min(counts, key=lambda name: counts[name])
            assert victim, leaders
            cluster.server(victim).kill()
            killed_at = time.monotonic()
            # Timed beside the publishing, which goes on (and retries) meanwhile.
            # Asked every 0.1 s with a short timeout: a request in the election gets no answer.
            quick = system.nc.jetstream(timeout=0.5)
            election = asyncio.create_task(wait_new_leader(quick, "PROJECT", victim))
        if n == restart_at:
            cluster.server(victim).start()
            restarted_at = time.monotonic()
            times["down_s"] = restarted_at - killed_at
        tries = await publish_retrying(system.js, subject, key, body)
        if n >= kill_at and "first_publish_after_kill_s" not in times:
            times["first_publish_after_kill_s"] = time.monotonic() - killed_at
        retried += tries - 1
    times["publishes_retried"] = retried
    if victim_of == "leader":
        times["election_s"] = await election
    else:
        election.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await election
    await wait_until_idle(system.js, timeout=400)
    times["drained_after_restart_s"] = time.monotonic() - restarted_at
    times["caught_up_s"] = await caught_up(cluster.urls, victim)
    await check_exact(system, tmp_path, system.database_url)  # type: ignore[attr-defined]
    # The restarted node's own copy comes to hold every message the others do (a follower
    # applies what the leader committed a moment later: notify's dispatcher still publishes).
    copies: dict[str, list[int]] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        copies = {
            stream: [
                await messages_on_node(f"http://127.0.0.1:{n.http_port}", stream)
                for n in cluster.nodes
            ]
            for stream in PIPELINE
        }
        if all(len(set(counts)) == 1 for counts in copies.values()):
            break
        await asyncio.sleep(0.5)
    assert all(len(set(counts)) == 1 for counts in copies.values()), copies
    assert all(c.restarts == 0 for c in system.supervisor.children.values()), {
        n: c.restarts for n, c in system.supervisor.children.items()
    }  # the services failed over to the other nodes; none had to be restarted
    print(f"\n{victim_of} {victim} killed: {times}", flush=True)
    return times


async def assert_three_copies(system: System) -> None:
    for spec in STREAMS:
        info = await system.js.stream_info(spec.name)
        assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
    for bucket in ("KV_investflow_rulesets", "KV_investflow_leases"):
        assert (await system.js.stream_info(bucket)).config.num_replicas == 3
    # The services were given all three nodes (NATS_URL), none of them 4222.
    urls = system.nats_url.split(",")
    assert len(urls) == 3 and not any(u.endswith(":4222") for u in urls)


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.skipif(not SLOW, reason="INVESTFLOW_SLOW")),
    ],
)
async def test_kill_9_the_stream_leader_loses_and_doubles_nothing(
    tmp_path: Path, backend: str
) -> None:
    async with cluster_system(tmp_path, backend) as system:
        await assert_three_copies(system)
        await run_with_kill(system, tmp_path, "leader")


@pytest.mark.skipif(not SLOW, reason="INVESTFLOW_SLOW: the follower's kill, on both backends")
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_kill_9_a_follower_loses_and_doubles_nothing(tmp_path: Path, backend: str) -> None:
    async with cluster_system(tmp_path, backend) as system:
        await run_with_kill(system, tmp_path, "follower")


@contextlib.asynccontextmanager
async def split_cluster(tmp_path: Path) -> AsyncIterator[tuple[System, RouteForwarders]]:
    """The system on a cluster whose routes all run through forwarders (tests/cluster/routes.py)."""
    ports = [free_port() for _ in range(3)]
    cluster = NatsCluster(3, tmp_path, route_ports=ports)
    forwarders = RouteForwarders(
        ports, [n.bind_cluster_port or 0 for n in cluster.nodes], [n.name for n in cluster.nodes]
    )
    await forwarders.start()
    try:
        async with running_system(
            tmp_path,
            free_port(),
            free_port(),
            echo=bool(os.environ.get("INVESTFLOW_ECHO")),
            extra_env=dict(ENV),
            cluster=cluster,
        ) as system:
            system.database_url = None  # type: ignore[attr-defined]
            yield system, forwarders
    finally:
        await forwarders.stop()


async def learn_server_ids(cluster: NatsCluster, forwarders: RouteForwarders) -> None:
    import json
    import urllib.request

    for node in cluster.nodes:
        url = f"http://127.0.0.1:{node.http_port}/varz"
        body = await asyncio.to_thread(lambda u=url: urllib.request.urlopen(u, timeout=5).read())
        forwarders.ids[json.loads(body)["server_id"]] = node.name


@pytest.mark.skipif(not SLOW, reason="INVESTFLOW_SLOW: the network split")
async def test_split_minority_refuses_writes_and_nothing_is_doubled_after_it_heals(
    tmp_path: Path,
) -> None:
    """A third of the way in, the PROJECT leader's node loses its routes (its clients stay
    connected to it): the two others elect leaders and go on; a unit's publish to the cut-off
    node is not acknowledged; the unit sends it again to the majority. At two thirds the
    routes come back. Exact counts after."""
    async with split_cluster(tmp_path) as (system, forwarders):
        cluster = nodes(system)
        await learn_server_ids(cluster, forwarders)
        majority = await nats.connect(cluster.urls)  # the unit's client, moved on the cut
        messages = workload("P")  # a credit-code letter: not S, I, O, V or Z
        cut_at, heal_at = len(messages) // 3, 2 * len(messages) // 3
        js = system.js
        minority: nats.aio.client.Client | None = None
        victim = ""
        times: dict[str, float] = {}
        try:
            for n, (subject, key, body) in enumerate(messages):
                if n == cut_at:
                    victim = await leader(js, "PROJECT") or ""
                    assert victim
                    forwarders.isolate(victim)
                    cut = time.monotonic()
                    assert not [
                        link
                        for link in forwarders.links
                        if victim in (forwarders.ids[link[0]], link[1])
                    ]
                    node = cluster.server(victim)
                    minority = await nats.connect(node.url, max_reconnect_attempts=0)
                    # A unit that reaches only the cut-off node: nothing it sends is confirmed.
                    with pytest.raises(nats.errors.Error):
                        await minority.jetstream().publish(
                            subject, body, headers={"Nats-Msg-Id": key}, timeout=3
                        )
                    others = [s.url for s in cluster.servers if s.name != victim]
                    await majority.close()
                    majority = await nats.connect(others)
                    js = majority.jetstream()
                    quick = majority.jetstream(timeout=0.5)
                    times["election_s"] = await wait_new_leader(quick, "PROJECT", victim)
                if n == heal_at:
                    forwarders.heal(victim)
                    times["split_s"] = time.monotonic() - cut
                await publish_retrying(js, subject, key, body)
            healed = time.monotonic()
            await wait_until_idle(majority.jetstream(), timeout=400)
            times["drained_after_heal_s"] = time.monotonic() - healed
            times["caught_up_s"] = await caught_up(cluster.urls, victim)
            await check_exact(system, tmp_path, None)
            print(
                f"\nsplit {victim}: {times}; restarts "
                f"{ {k: c.restarts for k, c in system.supervisor.children.items()} }",
                flush=True,
            )
        finally:
            await majority.close()
            if minority is not None:
                await minority.close()
