"""The embedded runtime: nats-server + streams + every service, as one context manager.

`investflow up`, `investflow demo` and the end-to-end tests all start the system this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.settings import Settings
from shared.streams import ensure_streams

from .nats_server import (
    NatsCluster,
    NatsServer,
    NatsServerError,
    free_port,
    port_taken,
    wait_for_jetstream,
)
from .services import SERVICES, ServiceSpec, with_replicas
from .supervisor import Supervisor


class StartupError(RuntimeError):
    """The system could not start; the message says why in words an operator can act on."""


@dataclass
class System:
    nats_url: str  # the cluster's URLs comma-separated, as the services' NATS_URL
    http_url: str  # intake's: the units' HTTP entry point
    data_dir: Path
    supervisor: Supervisor
    nc: Client
    js: JetStreamContext
    http_urls: dict[str, str]  # every HTTP-serving service by name
    nats_server: NatsServer | None = None  # for fault tests: stop and start it under the services
    nats_cluster: NatsCluster | None = None  # `cluster=3`: its nodes, to kill one under them


async def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url + "/health", timeout=2).status
            )
            if code == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise StartupError(f"{url}/health did not answer 200 within {timeout:.0f}s")


LOCK_FILE = "investflow.lock"


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold DATA/investflow.lock for the run: two systems on one JetStream store corrupt it.

    flock, not a pid file: the kernel drops it when the process dies, so a crash never leaves
    a stale lock behind that an operator must delete by hand.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise StartupError(
                f"{data_dir} is already in use by a running investflow (pid {holder}); stop it "
                f"first or give another --data / 数据目录已被另一个 investflow 使用"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def running_system(
    data_dir: Path,
    nats_port: int,
    http_port: int,
    *,
    services: tuple[ServiceSpec, ...] = SERVICES,
    echo: bool = True,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
    replicas: dict[str, int] | None = None,
    http_ports: dict[str, int] | None = None,
    cluster: int | NatsCluster = 1,
) -> AsyncIterator[System]:
    """`http_port` is intake's; `http_ports` sets other services' (e.g. {"scoring": 8082}),
    and every HTTP process not named there gets a free port. The lock comes first: a second
    `up` on the same data dir is told so, not that some port is taken. `cluster=3`: three
    nats-servers on loopback as one JetStream cluster, the first on `nats_port`, the others
    on free ports; the services are given all three. Or a NatsCluster the caller built."""
    with data_dir_lock(data_dir):
        wanted = {"intake": http_port} | {k: v for k, v in (http_ports or {}).items() if v}
        for port, flag in [(nats_port, "--nats-port")] + [
            (p, "--http-port" if name == "intake" else f"--{name}-port")
            for name, p in wanted.items()
        ]:
            if port_taken(port):
                raise StartupError(f"port {port} is already in use; pick another with {flag}")
        async with _running_system(
            data_dir,
            nats_port,
            services=services,
            echo=echo,
            extra_env=extra_env,
            ready_timeout=ready_timeout,
            replicas=replicas,
            wanted=wanted,
            cluster=cluster,
        ) as system:
            yield system


@contextlib.asynccontextmanager
async def _running_system(
    data_dir: Path,
    nats_port: int,
    *,
    services: tuple[ServiceSpec, ...],
    echo: bool,
    extra_env: dict[str, str] | None,
    ready_timeout: float,
    replicas: dict[str, int] | None,
    wanted: dict[str, int],
    cluster: int | NatsCluster = 1,
) -> AsyncIterator[System]:
    nodes: NatsCluster | None = None
    if isinstance(cluster, NatsCluster):
        nodes = cluster
    elif cluster > 1:
        nodes = NatsCluster(cluster, data_dir, first_port=nats_port)
    if nodes:
        server: NatsServer = nodes.servers[0]
        urls = nodes.urls
    else:
        server = NatsServer(nats_port, data_dir / "nats", log_file=data_dir / "nats-server.log")
        urls = [server.url]
    try:
        if nodes:
            nodes.start()
        else:
            server.start()
    except NatsServerError as exc:
        raise StartupError(str(exc)) from exc
    supervisor: Supervisor | None = None
    nc: Client | None = None
    try:
        # A cluster answers once its nodes have elected a meta leader (~10 s here).
        await wait_for_jetstream(urls, timeout=60 if nodes else 15)
        settings = Settings.from_env()
        window = (extra_env or {}).get("INVESTFLOW_DUPLICATE_WINDOW")
        ack_wait = (extra_env or {}).get("INVESTFLOW_ACK_WAIT")
        nc = await nats.connect(urls, max_reconnect_attempts=-1)
        js = nc.jetstream()
        await ensure_streams(
            js,
            int(window) if window else settings.duplicate_window_s,
            lease_s=float(ack_wait) if ack_wait else settings.ack_wait_s,
        )
        # Each service's first replica gets the operator's port (--http-port, --scoring-port,
        # ...); every other HTTP process a free port of its own, in its <SERVICE>_HTTP_PORT.
        services = with_replicas(services, replicas or {})
        ports = {s.key: wanted.get(s.key) or free_port() for s in services if s.http}
        env = (
            dict(os.environ)
            | {"NATS_URL": ",".join(urls), "INVESTFLOW_DATA_DIR": str(data_dir)}
            | (extra_env or {})
        )
        child_env = {
            key: {spec.http_port_env: str(port)}
            for spec in services
            for key, port in ports.items()
            if spec.key == key
        }
        supervisor = Supervisor(services, env, echo=echo, child_env=child_env)
        await supervisor.start()
        await supervisor.wait_ready(ready_timeout)
        http_urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for url in http_urls.values():
            await _wait_http(url, ready_timeout)
        yield System(
            ",".join(urls),
            http_urls.get("intake", ""),
            data_dir,
            supervisor,
            nc,
            js,
            http_urls,
            None if nodes else server,
            nodes,
        )
    finally:
        if supervisor is not None:
            await supervisor.stop()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if nodes:
            nodes.stop()
        else:
            server.stop()


async def backlogs(js: JetStreamContext) -> dict[str, int]:
    """Messages pending or unacknowledged per durable consumer (`stream/durable`)."""
    out: dict[str, int] = {}
    for stream in await js.streams_info():
        for info in await js.consumers_info(stream.config.name):
            if not info.config.durable_name:
                continue  # someone's ephemeral reader (a test, an operator's tail), not a service
            out[f"{stream.config.name}/{info.config.durable_name}"] = int(
                info.num_pending or 0
            ) + int(info.num_ack_pending or 0)
    return out


async def consumers_idle(js: JetStreamContext) -> tuple[bool, int]:
    """True when every durable consumer has nothing pending or unacknowledged; and the backlog."""
    backlog = sum((await backlogs(js)).values())
    return backlog == 0, backlog


async def wait_until_idle(js: JetStreamContext, timeout: float, progress: bool = False) -> None:
    """Wait until every consumer has drained and stayed drained for a moment."""
    deadline = time.monotonic() + timeout
    calm = 0
    last_print = 0.0
    while time.monotonic() < deadline:
        per = await backlogs(js)
        idle = not any(per.values())
        calm = calm + 1 if idle else 0
        if calm >= 3:
            return
        if progress and not idle and time.monotonic() - last_print > 2:
            busy = ", ".join(f"{name} {n}" for name, n in per.items() if n)
            print(f"  … {sum(per.values())} messages still being processed ({busy})", flush=True)
            last_print = time.monotonic()
        await asyncio.sleep(0.3)
    raise TimeoutError(f"the services did not drain within {timeout:.0f}s")
