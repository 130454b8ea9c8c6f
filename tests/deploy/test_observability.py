"""Every service is observable: /health and /metrics on a port the operator sets and sees.

One `investflow up` runs for the module with every port given on the command line; a unit's
lead flows through, and then each service's /metrics must pass `promtool check metrics`
(Debian's prometheus package, unpacked; skipped with the reason where it cannot be had),
carry the shared message, consumer and HTTP metrics, and keep every label value bounded
however bad the input. A second `up` on the same data dir is refused while the first runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from investflow.nats_server import free_port
from shared import metrics
from shared.settings import REPO_ROOT
from tests.deploy.tools import promtool, promtool_check_metrics
from tests.helpers import lead

pytestmark = pytest.mark.timeout(240)

SERVICES = ("intake", "scoring", "review", "notify")
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "investflow-dashboard.json"


@dataclass
class Up:
    proc: subprocess.Popen[str]
    data: Path
    nats_url: str
    ports: dict[str, int]
    lines: list[str]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


def _up_command(data: Path, nats_port: int, ports: dict[str, int]) -> list[str]:
    cmd = [sys.executable, "-m", "investflow.main", "up", "--data", str(data)]
    cmd += ["--nats-port", str(nats_port), "--http-port", str(ports["intake"])]
    for name in ("scoring", "review", "notify"):
        cmd += [f"--{name}-port", str(ports[name])]
    return cmd


def _start(data: Path, nats_port: int, ports: dict[str, int]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _up_command(data, nats_port, ports),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1", "INVESTFLOW_ACK_WAIT": "5"},
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("observed")
    nats_port = free_port()
    ports = {name: free_port() for name in SERVICES}
    proc = _start(data, nats_port, ports)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline and not any(
            line.startswith("HTTP notify:") for line in lines
        ):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
        assert any(line.startswith("HTTP notify:") for line in lines), lines
        yield Up(proc, data, f"nats://127.0.0.1:{nats_port}", ports, lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def post(url: str, body: bytes, key: str) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Idempotency-Key": key}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def samples(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of metric `name` in an exposition text."""
    out = []
    pattern = rf'^{re.escape(name)}\{{((?:[^"}}]|"(?:[^"\\]|\\.)*")*)\}} '
    for m in re.finditer(pattern, text, re.MULTILINE):
        out.append(dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))))
    return out


async def _publish_lead_and_wait(up: Up) -> None:
    nc = await nats.connect(up.nats_url)
    try:
        js = nc.jetstream()
        await js.publish("intake.TS01.lead", json.dumps(lead("TS01")).encode())
        # Bad input on NATS too: an unknown unit and kind must not become label values.
        # (An unknown unit has no inbox: the server refuses it at once, storing nothing.)
        with contextlib.suppress(
            nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError
        ):
            await js.publish("intake.NOSUCHUNIT.weird_kind_1", b"{}", timeout=2)
        await js.publish("intake.TS01.another-weird-kind", b"not json")
    finally:
        await nc.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = get(up.url("notify") + "/metrics")[2]
        review = get(up.url("review") + "/metrics")[2]
        if any(
            s["service"] == "notify" for s in samples(text, "investflow_messages_total")
        ) and any(s["service"] == "review" for s in samples(review, "investflow_messages_total")):
            return
        time.sleep(0.5)
    raise AssertionError("review and notify never counted a settled message")


def test_up_listens_on_every_port_it_was_given_and_prints_it(up: Up) -> None:
    assert f"HTTP: {up.url('intake')}" in up.lines
    for name in ("scoring", "review", "notify"):
        assert f"HTTP {name}: {up.url(name)}" in up.lines, up.lines
    for name in SERVICES:
        status, _, body = get(up.url(name) + "/health")
        assert status == 200, (name, body)
        assert json.loads(body) == {"status": "ok", "nats": True, "db": True}


async def test_every_service_exports_metrics_promtool_accepts_with_bounded_labels(up: Up) -> None:
    await _publish_lead_and_wait(up)
    # HTTP traffic with made-up units, kinds and paths: 401/404/422 all counted, none a label.
    for i in range(5):
        post(f"{up.url('intake')}/v1/units/XX{i}/kind{i}", b"{}", f"k{i}")
        get(f"{up.url('scoring')}/no/such/path/{i}")
    tool, why = promtool()
    if tool is None:
        pytest.skip(why)
    for name in SERVICES:
        status, content_type, text = get(up.url(name) + "/metrics")
        assert status == 200 and content_type.startswith("text/plain"), (name, content_type)
        checked = promtool_check_metrics(text)
        assert checked.returncode == 0 and not checked.stdout.strip(), (name, checked)
        for metric in (
            "investflow_messages_total",
            "investflow_message_processing_seconds_count",
            "investflow_consumer_pending_messages",
            "investflow_consumer_ack_pending_messages",
            "investflow_consumer_redelivered_messages",
            "investflow_service_up",
        ):
            found = [s for s in samples(text, metric) if s.get("service") == name]
            assert found, f"{name} has no {metric}"
        assert samples(text, "investflow_service_up") == [{"service": name}]
        assert re.search(rf'^investflow_service_up\{{service="{name}"\}} 1\.0$', text, re.M)
        for s in samples(text, "investflow_messages_total"):
            assert s["subject"] in metrics.SUBJECT_LABELS, s
            assert s["outcome"] in metrics.OUTCOMES, s
        for s in samples(text, "investflow_http_requests_total"):
            assert "XX" not in s["route"] and "/no/such" not in s["route"], s
            assert s["route"].startswith("/") or s["route"] == "unmatched", s
    intake = get(up.url("intake") + "/metrics")[2]
    routes = {s["route"] for s in samples(intake, "investflow_http_requests_total")}
    assert "/v1/units/{unit}/{kind}" in routes  # the template, once for all five units
    scoring = get(up.url("scoring") + "/metrics")[2]
    assert {"route": "unmatched", "status": "404", "method": "GET", "service": "scoring"} in (
        samples(scoring, "investflow_http_requests_total")
    )
    subjects = {s["subject"] for s in samples(intake, "investflow_messages_total")}
    assert "intake.*.lead" in subjects and "intake.*.*" in subjects, subjects
    backlog = samples(intake, "investflow_outbox_backlog")
    assert backlog == [{"service": "intake"}]


def test_a_second_up_on_the_same_data_dir_is_refused(up: Up) -> None:
    """Two nats-servers on one JetStream store corrupt it: the second is told, and stops."""
    other = {name: free_port() for name in SERVICES}
    second_nats = free_port()
    second = _start(up.data, second_nats, other)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 1, out
    assert f"{up.data} is already in use" in out and f"pid {up.proc.pid}" in out, out
    assert "数据目录" in out
    assert "NATS:" not in out  # it stopped before starting a nats-server on the store
    assert not (up.data / "nats-server.log").read_text(errors="replace").count(f":{second_nats}"), (
        "a second nats-server wrote to the first one's log"
    )
    # ... and the first one is untouched.
    assert up.proc.poll() is None
    assert get(up.url("intake") + "/health")[0] == 200


def test_subject_labels_are_a_fixed_set_whatever_the_subject() -> None:
    odd = [
        "intake.TS01.lead",
        "intake.ZZ99.lead",
        "intake.TS01.x" * 5,
        "intake.rejected.ANY.thing",
        "project.lead",
        "project.who-knows",
        "review.decided",
        "score.credited",
        "dlq.scoring.PROJECT",
        "dlq.evil.STREAM",
        "",
        "a.b.c.d.e.f",
        "\u9879\u76ee.\u6d4b\u8bd5",
    ]
    seen = {metrics.subject_label(s) for s in odd}
    assert seen <= metrics.SUBJECT_LABELS
    assert metrics.subject_label("intake.TS01.lead") == metrics.subject_label("intake.X.lead")
    assert len(metrics.SUBJECT_LABELS) < 100


def test_the_prometheus_config_and_dashboard_cover_every_service() -> None:
    import yaml

    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = {
        (n, sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for n in sd["names"]
    }
    compose_ports = {
        "intake": 8080, "scoring": 8082, "review": 8083, "notify": 8084, "board": 8090
    }  # fmt: skip
    assert targets == set(compose_ports.items())  # the ports deploy/docker-compose.yml sets
    [board] = [job for job in config["scrape_configs"] if job["job_name"] == "investflow-board"]
    assert board["authorization"]["type"] == "Bearer"  # its /metrics needs a `metrics` token
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    for metric in (
        "investflow_messages_total",
        "investflow_message_processing_seconds_bucket",
        "investflow_consumer_pending_messages",
        "investflow_consumer_redelivered_messages",
        "investflow_dead_letters_total",
        "investflow_outbox_backlog",
        "investflow_http_requests_total",
    ):
        assert metric in exprs, metric
    tool, why = promtool()
    if tool is None:
        pytest.skip(why)
    checked = subprocess.run(
        [tool, "check", "config", "--syntax-only", str(PROMETHEUS)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
