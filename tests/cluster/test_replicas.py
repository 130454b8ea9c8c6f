"""ensure_streams keeps each stream and bucket on as many nodes as the server can hold."""

from __future__ import annotations

import contextlib
from pathlib import Path

import nats
import nats.js.errors
import pytest

from investflow.nats_server import NatsCluster, NatsServer, free_port, wait_for_jetstream
from shared.streams import PROBE_STREAM, all_streams, ensure_streams, replicas_available

pytestmark = pytest.mark.timeout(180)
UNITS = ["TS01", "TS02"]


async def replica_counts(js) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """By name: a cluster's stream list may leave out one whose leader is busy."""
    names = [s.name for s in all_streams(UNITS)] + [
        "KV_investflow_rulesets",
        "KV_investflow_leases",
    ]
    out = {n: (await js.stream_info(n)).config.num_replicas for n in names}
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.stream_info(PROBE_STREAM)
        out[PROBE_STREAM] = 0
    return out


async def test_a_single_server_keeps_one_copy(tmp_path: Path) -> None:
    with NatsServer(free_port(), tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            assert await replicas_available(js) == 1
            report = await ensure_streams(js, 60, units=UNITS, lease_s=5)
            counts = await replica_counts(js)
            assert PROBE_STREAM not in counts and set(counts.values()) == {1}
            assert {"KV_investflow_rulesets", "KV_investflow_leases"} <= set(counts)
            assert (await (await js.key_value("investflow_leases")).status()).ttl == 5
            assert "created KV investflow_rulesets (replicas 1)" in report
        finally:
            await nc.close()


async def test_a_cluster_scales_one_copy_streams_and_buckets_to_three(tmp_path: Path) -> None:
    cluster = NatsCluster(3, tmp_path)
    cluster.start()
    try:
        await wait_for_jetstream(cluster.urls, timeout=60)
        nc = await nats.connect(cluster.urls)
        try:
            js = nc.jetstream()
            # As a deployment that ran on one node: every stream and bucket with one copy.
            await ensure_streams(js, 60, units=UNITS, replicas=1, lease_s=5)
            assert set((await replica_counts(js)).values()) == {1}
            report = await ensure_streams(js, 60, units=UNITS, lease_s=5)
            counts = await replica_counts(js)
            assert PROBE_STREAM not in counts and set(counts.values()) == {3}, counts
            assert sum(line.startswith("updated ") for line in report) == len(counts) - 2
            assert "scaled KV investflow_leases to replicas 3" in report
            again = await ensure_streams(js, 60, units=UNITS, lease_s=5)
            assert all(line.startswith("ok ") for line in again), again
        finally:
            await nc.close()
    finally:
        cluster.stop()
