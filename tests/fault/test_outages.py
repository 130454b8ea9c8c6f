"""Outages under load: nats-server restarted mid-stream; a service's database unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from investflow.nats_server import free_port
from investflow.runtime import running_system, wait_until_idle
from samples.workload import recognised_projects
from tests.conftest import PG_ADMIN_URL, PG_SKIP_REASON, fresh_pg_database
from tests.helpers import read_subject

pytestmark = pytest.mark.timeout(400)
ENV = {
    "INVESTFLOW_ACK_WAIT": "5",
    "NOTIFY_CLOCK": "business",
    "NOTIFY_DRY_RUN": "1",
    "NOTIFY_TICK_S": "3600",
}
LEADS, FUNDS = 30, 5


def messages(tag: str) -> list[tuple[str, str, bytes]]:
    return [
        m
        for lead, funds in recognised_projects(LEADS, FUNDS, tag, "1000.00")
        for m in (lead, *funds)
    ]


async def credited_pairs(system) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    events = await read_subject(system.js, "SCORE", "score.credited")
    pairs = [(e["project_id"], e["funds_id"]) for e in events]
    assert len(pairs) == len(set(pairs)), "a funds record was credited twice"
    return set(pairs)


async def publish_all(js, batch) -> None:  # type: ignore[no-untyped-def]
    for subject, key, body in batch:
        for _ in range(100):  # the client reconnects; a publish during the gap is retried
            try:
                await js.publish(subject, body, headers={"Nats-Msg-Id": key}, timeout=2)
                break
            except Exception:
                await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"could not publish {key}")


async def test_nats_server_restarted_mid_stream(tmp_path: Path) -> None:
    batch = messages("N")
    half = len(batch) // 2
    async with running_system(
        tmp_path,
        free_port(),
        free_port(),
        echo=bool(os.environ.get("INVESTFLOW_ECHO")),
        extra_env=ENV,
    ) as system:
        await publish_all(system.js, batch[:half])
        system.nats_server.stop()  # type: ignore[union-attr]
        await asyncio.sleep(2)
        system.nats_server.start()  # type: ignore[union-attr]  # same port, same store dir
        await publish_all(system.js, batch[half:])
        await wait_until_idle(system.js, timeout=300)
        assert len(await credited_pairs(system)) == LEADS * FUNDS
        assert all(
            c.restarts == 0 for c in system.supervisor.children.values()
        )  # reconnected, not restarted


@pytest.mark.skipif(PG_SKIP_REASON is not None, reason=PG_SKIP_REASON or "")
async def test_scoring_database_unreachable_for_ten_seconds(tmp_path: Path) -> None:
    import psycopg

    batch = messages("D")
    with contextlib.ExitStack() as stack:
        scoring_url = stack.enter_context(fresh_pg_database())
        env = ENV | {
            "DATABASE_URL": stack.enter_context(fresh_pg_database()),
            "SCORING_DATABASE_URL": scoring_url,
        }
        name = scoring_url.rsplit("/", 1)[1]
        async with running_system(
            tmp_path,
            free_port(),
            free_port(),
            echo=bool(os.environ.get("INVESTFLOW_ECHO")),
            extra_env=env,
        ) as system:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                try:
                    await publish_all(system.js, batch)
                    await asyncio.sleep(10)
                finally:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await wait_until_idle(system.js, timeout=300)
            assert len(await credited_pairs(system)) == LEADS * FUNDS
            assert not await read_subject(system.js, "DLQ", "dlq.>")
