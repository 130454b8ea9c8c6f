"""`investflow up` as operators run it: ready lines, busy ports, clean stop, crash restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from investflow.nats_server import free_port
from shared.settings import REPO_ROOT
from tests.helpers import count_rows, http_post, idle, lead, publish, read_subject

pytestmark = pytest.mark.timeout(180)
# The kill -9 restart on PostgreSQL is tests/fault's default; both here under INVESTFLOW_SLOW.
SYSTEM_BACKEND = "sqlite"


def _start_up(tmp_path: Path, nats_port: int, http_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "investflow.main",
            "up",
            "--data",
            str(tmp_path),
            "--nats-port",
            str(nats_port),
            "--http-port",
            str(http_port),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def _read_until(
    proc: subprocess.Popen[str], prefix: str, timeout: float = 60
) -> tuple[str, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith(prefix):
            return line.strip(), seen
    raise AssertionError(f"no {prefix!r} line; got {seen}")


def test_up_prints_ready_lines_serves_and_stops_cleanly(tmp_path: Path) -> None:
    nats_port, http_port = free_port(), free_port()
    proc = _start_up(tmp_path, nats_port, http_port)
    try:
        nats_line, _ = _read_until(proc, "NATS: ")
        http_line, _ = _read_until(proc, "HTTP: ")
        assert nats_line == f"NATS: nats://127.0.0.1:{nats_port}"
        assert http_line == f"HTTP: http://127.0.0.1:{http_port}"
        import urllib.request

        health = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5).read()
        )
        assert health == {"status": "ok", "nats": True, "db": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing left listening after a clean stop.
    for port in (nats_port, http_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_up_refuses_a_taken_port_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = _start_up(tmp_path, taken, free_port())
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"port {taken} is already in use" in out and "--nats-port" in out


async def test_a_killed_service_is_restarted_and_loses_nothing(system) -> None:
    """kill -9 intake with messages in flight: the supervisor restarts it and every one lands."""
    leads = [lead("TS08") for _ in range(60)]
    for i, data in enumerate(leads):
        await publish(system.js, "intake.TS08.lead", data)
        if i == 20:
            system.supervisor.kill("intake")
    await idle(system.js)
    from services.intake.store import Project

    ids = [f"TS08-{d['lead_id']}" for d in leads]
    assert count_rows(system.database_url, Project, Project.project_id.in_(ids)) == len(ids)  # type: ignore[attr-defined]
    assert system.supervisor.children["intake"].restarts >= 1
    emitted = [
        e["project_id"]
        for e in await read_subject(system.js, "PROJECT", "project.lead")
        if e["project_id"] in ids
    ]
    assert sorted(emitted) == sorted(ids)  # each exactly once: none lost, none doubled
    # HTTP comes back with it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, _ = await http_post(
                f"{system.http_url}/v1/units/TS08/lead",
                json.dumps(lead("TS08")).encode(),
                "after-restart",
            )
            if status == 202:
                break
        except OSError:
            time.sleep(0.5)
    else:
        raise AssertionError("HTTP did not come back after the restart")


def test_nats_init_creates_streams_once_and_is_idempotent(tmp_path: Path) -> None:
    from investflow.nats_server import NatsServer
    from shared.directory import load_directory
    from shared.settings import Settings
    from shared.streams import all_streams

    with NatsServer(free_port(), tmp_path / "js") as server:
        run = lambda: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "investflow.main", "nats", "init", "--url", server.url],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        first, second = run(), run()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    streams = lambda out: [line.split()[0] for line in out.splitlines() if " KV " not in line]  # noqa: E731
    every = all_streams(load_directory(Settings.from_env().units_file).units)  # + an inbox per unit
    assert streams(first.stdout) == ["created"] * len(every)
    assert streams(second.stdout) == ["ok"] * len(every)
    assert "ok KV investflow_rulesets" in second.stdout


def test_nats_init_says_when_it_cannot_connect() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "investflow.main",
            "nats",
            "init",
            "--url",
            f"nats://127.0.0.1:{free_port()}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"INVESTFLOW_CONNECT_TIMEOUT": "2"},
    )
    assert proc.returncode == 1 and "cannot connect" in proc.stderr


async def test_openapi_page_and_metrics_are_served(system) -> None:
    import urllib.request

    def get(path: str) -> str:
        with urllib.request.urlopen(system.http_url + path, timeout=5) as resp:
            return resp.read().decode()

    spec = json.loads(get("/openapi.json"))
    assert "/v1/units/{unit}/lead" in spec["paths"]  # one route per kind (issue 16.4)
    assert "/openapi.json" in get("/docs")  # a local page that draws the spec, no CDN
    await publish(system.js, "intake.TS01.lead", lead("TS01"))
    await idle(system.js)
    assert 'investflow_intake_messages_total{kind="lead",outcome="stored"}' in get("/metrics")
