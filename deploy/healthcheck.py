"""The compose healthcheck of an investflow service container (stdlib only, no imports of ours).

    python deploy/healthcheck.py http INTAKE_HTTP_PORT   # GET /health on the port that env var names: 200
    python deploy/healthcheck.py nats                    # a live TCP connection to NATS_URL's port

Services without HTTP (review, notify) are healthy while their process holds an established
connection to NATS: the container has its own network namespace, so /proc/net/tcp shows
only its own sockets. FastStream reconnects forever, so a lost connection is worth a restart
only after the healthcheck's retries.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
import urllib.request

ESTABLISHED = "01"


def http_ok(port_env: str) -> bool:
    port = os.environ.get(port_env)
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
