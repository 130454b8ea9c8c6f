"""The same intake path against a containerised NATS, where a Docker engine answers.

These machines run no Docker engine: the test skips with the reason. Everywhere else it
proves nothing in intake assumes the embedded nats-server.
"""

from __future__ import annotations

import asyncio

import pytest


def _docker_reason() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as exc:
        return f"no Docker engine answers: {type(exc).__name__}"


DOCKER_REASON = _docker_reason()


@pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_REASON or "")
def test_streams_are_created_on_a_containerised_nats() -> None:
    import nats
    from testcontainers.community.nats import NatsContainer

    from shared.streams import STREAMS, ensure_streams

    with NatsContainer(image="nats:2.11").with_command("-js") as container:
        url = container.nats_uri()

        async def run() -> list[str]:
            nc = await nats.connect(url)
            try:
                return await ensure_streams(nc.jetstream(), 60)
            finally:
                await nc.close()

        report = asyncio.run(run())
    assert len(report) == len(STREAMS)
