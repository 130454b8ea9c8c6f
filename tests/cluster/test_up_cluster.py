"""`investflow up --cluster 3`: three nats-servers on free loopback ports, the services on all."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from investflow.nats_server import free_port
from shared.settings import REPO_ROOT
from tests.test_runtime import _read_until

pytestmark = pytest.mark.timeout(180)


def test_up_cluster_3_runs_three_loopback_nodes_as_one_cluster(tmp_path: Path) -> None:
    http_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "investflow.main",
            "up",
            "--cluster",
            "3",
            "--data",
            str(tmp_path),
            "--http-port",
            str(http_port),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        nats_line, _ = _read_until(proc, "NATS: ")
        urls = nats_line.removeprefix("NATS: ").split(",")
        assert len(urls) == 3 and all(u.startswith("nats://127.0.0.1:") for u in urls)
        ports = [int(u.rsplit(":", 1)[1]) for u in urls]
        assert 4222 not in ports and len(set(ports)) == 3
        _read_until(proc, "HTTP: ")
        health = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5).read()
        )
        assert health == {"status": "ok", "nats": True, "db": True}
        # Each node has its own store and config, routed to the other two.
        confs = sorted(tmp_path.glob("nats-n*/nats.conf"))
        assert len(confs) == 3
        for conf in confs:
            text = conf.read_text()
            assert text.count("nats://127.0.0.1:") == 3 and "0.0.0.0" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for port in (*ports, http_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
