"""The compose healthcheck of an investflow service container (stdlib only, no imports of ours).

    python deploy/healthcheck.py http INTAKE_HTTP_PORT   # GET /health on the port that env var names: 200
    python deploy/healthcheck.py nats                    # a live TCP connection to NATS_URL's port

Every service serves /health now (`http`); `nats` remains for a process without HTTP: it is
healthy while it holds an established connection to NATS (the container has its own network
namespace, so /proc/net/tcp shows only its own sockets). A port of 0 means the service took a
free one and wrote it to INVESTFLOW_HTTP_PORT_FILE.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
import urllib.request

ESTABLISHED = "01"


def http_ok(port_env: str) -> bool:
    port = os.environ.get(port_env)
    if port == "0":
        # A free port of its own (replicas sharing the host's network): the service wrote
        # the one it got to INVESTFLOW_HTTP_PORT_FILE when it started listening.
        try:
            with open(os.environ.get("INVESTFLOW_HTTP_PORT_FILE", ""), encoding="ascii") as f:
                port = f.read().strip()
        except OSError as exc:
            print(f"{port_env}=0 and no port file: {exc}", file=sys.stderr)
            return False
    if not port:
        print(f"{port_env} is not set", file=sys.stderr)
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as resp:
            return resp.status == 200
    except Exception as exc:
        print(f"/health on {port}: {exc}", file=sys.stderr)
        return False


def nats_port() -> int:
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(",")[0]
    return urllib.parse.urlsplit(url).port or 4222


def connected_to(port: int) -> bool:
    """An ESTABLISHED socket whose remote port is `port` (IPv4 or IPv6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    remote, state = cols[2], cols[3]
                    if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


def main(argv: list[str]) -> int:
    if argv[:1] == ["http"] and len(argv) == 2:
        return 0 if http_ok(argv[1]) else 1
    if argv == ["nats"]:
        port = nats_port()
        if connected_to(port):
            return 0
        print(f"no established connection to NATS port {port}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
