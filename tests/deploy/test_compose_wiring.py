"""deploy/docker-compose.yml, run without Docker: its commands, environment and secrets, for real.

A local nats-server starts with the compose file's config files (deploy/nats/nats-server.conf
and the auth.conf `investflow nats users` generates: auth on, nkeys); local PostgreSQL stands
in for the postgres service. The init job and each service run as compose says (command and
environment; host names mapped to 127.0.0.1, ports to free ones, /run/secrets to the seed
files). Then a unit reports a project with its own credentials, over NATS and over HTTP with
its token, and the scoreboard counts it; and what each identity may not do is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from investflow.deploy_cli import unit_inbox
from investflow.nats_server import NatsServer, free_port
from investflow.services import SERVICES
from shared.settings import REPO_ROOT
from tests.conftest import PG_ADMIN_URL, PG_SKIP_REASON
from tests.deploy import compose
from tests.helpers import lead, uid

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(PG_SKIP_REASON is not None, reason=PG_SKIP_REASON or ""),
    pytest.mark.skipif(
        not shutil.which("sh"), reason="the init job's command runs under sh, not found here"
    ),
]
nkeys = pytest.importorskip(
    "nkeys", reason="nkeys is not installed (pip install nkeys): the deployment signs in with nkeys"
)

PROOFS_NEW_LAND = [
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
    "progress_images",
    "land_use_certificate",
]


@dataclass
class Deployment:
    nats_url: str
    secrets: Path
    mapping: compose.LocalMapping
    http: dict[str, str]  # service → base URL
    logs: Path
    monitor_port: int

    def seed(self, kind: str, name: str) -> str:
        return str(self.secrets / "nats" / kind / f"{name}.nk")

    def database(self, service: str) -> str:
        return self.mapping.environment(service)["DATABASE_URL"]


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def base_env(tmp: Path) -> dict[str, str]:
    """What a container starts from: no credentials or settings leaking in from the test's shell."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "INVESTFLOW_"))}
    keep = {k: v for k, v in keep.items() if not k.endswith(("DATABASE_URL", "_HTTP_PORT"))}
    venv_bin = str(Path(sys.executable).parent)
    return keep | {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "INVESTFLOW_DATA_DIR": str(tmp / "data"),
        "NOTIFY_DRY_RUN": "1",
    }


def drop_databases(prefix: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
            )
        ]
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def wait_ready(
    logs: Path, names: list[str], procs: dict[str, subprocess.Popen], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if f"investflow: {name} ready" in (logs / f"{name}.log").read_text(errors="replace"):
                pending.remove(name)
            elif procs[name].poll() is not None:
                raise AssertionError(
                    f"{name} exited with {procs[name].returncode}:\n"
                    + (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                )
        await asyncio.sleep(0.2)
    assert not pending, f"not ready within {timeout:.0f}s: {pending}"


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    tmp = tmp_path_factory.mktemp("compose")
    secrets = tmp / "secrets"
    logs = tmp / "logs"
    logs.mkdir()
    env = base_env(tmp)

    # 1. Credentials, as docs/operations.md has the operator make them.
    made = run(
        [
            sys.executable, "-m", "investflow.main", "nats", "users",
            "--units", str(REPO_ROOT / "deploy" / "units.yaml"),
            "--secrets", str(secrets), "--out", str(secrets / "nats" / "auth.conf"),
        ],
        env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    # 2. The compose model, interpolated as `docker compose --env-file ...` would.
    compose_env = {
        "INVESTFLOW_SECRETS": str(secrets),
        "POSTGRES_PASSWORD": "not-used-here",
        "NOTIFY_DRY_RUN": "1",
    }
    model = compose.load(compose_env)
    prefix = f"ift_{uuid.uuid4().hex[:8]}"
    mapping = compose.LocalMapping(
        model,
        nats_port=free_port(),
        pg_admin_url=PG_ADMIN_URL,
        db_prefix=prefix,
        http_ports={s.http_port_env: free_port() for s in SERVICES if s.http},
    )

    # 3. nats-server with the files compose mounts into /etc/nats, at the paths it mounts them.
    etc = tmp / "etc-nats"
    for host, target in mapping.mounts("nats"):
        if target.startswith("/etc/nats/") and host.is_file():
            dest = etc / target.removeprefix("/etc/nats/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(host, dest)
    conf = etc / "nats-server.conf"
    monitor_port = free_port()
    conf.write_text(re.sub(r"(?m)^http_port: \d+", f"http_port: {monitor_port}", conf.read_text()))
    command = model["services"]["nats"]["command"]
    assert "/etc/nats/nats-server.conf" in command and "--jetstream" in command
    server = NatsServer(
        mapping.nats_port, tmp / "jetstream", config=conf, log_file=logs / "nats.log"
    )
    server.start()
    procs: dict[str, subprocess.Popen] = {}
    try:
        # 4. The one-shot init job: streams as admin, then databases and tables.
        init = run(mapping.service_command("init"), env | mapping.environment("init"), timeout=120)
        assert init.returncode == 0, init.stdout + init.stderr
        assert "INTAKE" in init.stdout and "intake: created database" in init.stdout, init.stdout
        again = run(mapping.service_command("init"), env | mapping.environment("init"), timeout=120)
        assert again.returncode == 0 and "created" not in again.stdout, again.stdout  # idempotent

        # 5. The four services, each with its compose command and environment.
        for spec in SERVICES:
            service_env = env | mapping.environment(spec.name)
            out = (logs / f"{spec.name}.log").open("w")
            procs[spec.name] = subprocess.Popen(
                mapping.service_command(spec.name),
                env=service_env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await wait_ready(logs, [s.name for s in SERVICES], procs, timeout=90)
        http = {
            s.name: f"http://127.0.0.1:{mapping.http_ports[s.http_port_env]}"
            for s in SERVICES
            if s.http
        }
        yield Deployment(server.url, secrets, mapping, http, logs, monitor_port)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        drop_databases(prefix)


@dataclass
class Session:
    nc: Client
    errors: list[str]

    async def violation(self, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.errors:
                if "permissions violation" in e.lower():
                    return e
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permissions violation reported; errors: {self.errors}")


@contextlib.asynccontextmanager
async def connect(url: str, seed: str, inbox: str | None = None) -> AsyncIterator[Session]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    options: dict[str, Any] = {
        "nkeys_seed": seed,
        "error_cb": on_error,
        "max_reconnect_attempts": 1,
    }
    if inbox:
        options["inbox_prefix"] = inbox
    nc = await nats.connect(url, **options)
    try:
        yield Session(nc, errors)
    finally:
        await nc.close()


def as_unit(d: Deployment, unit: str):  # type: ignore[no-untyped-def]
    return connect(d.nats_url, d.seed("units", unit), unit_inbox(unit))


async def stream_count(d: Deployment, unit: str) -> int:
    """Messages ever stored in a unit's inbox (a work queue: processed ones are gone)."""
    async with connect(d.nats_url, d.seed("ops", "admin")) as s:
        info = await s.nc.jetstream().stream_info(f"INTAKE_{unit}")
        return int(info.state.last_seq)


async def last_seqs(d: Deployment) -> dict[str, int]:
    """Every stream's last sequence: anything stored anywhere moves one."""
    async with connect(d.nats_url, d.seed("ops", "admin")) as s:
        return {
            info.config.name: int(info.state.last_seq)
            for info in await s.nc.jetstream().streams_info()
        }


def http_json(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(
        url, data=data, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"} | (headers or {}),
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


async def wait_for(predicate, timeout: float = 60.0, every: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not within {timeout:.0f}s; last: {last!r}")


async def recognised(d: Deployment, project_id: str, timeout: float = 30) -> None:
    """Wait for review.recognition(recognized) of a project, read as the Center's staff user
    (by sequence: the Center may create no consumer on the event streams)."""
    async with connect(d.nats_url, d.seed("ops", "center")) as center:
        js = center.nc.jetstream()
        deadline = time.monotonic() + timeout
        seq = 1
        while time.monotonic() < deadline:
            try:
                msg = await js.get_msg(
                    "REVIEW", seq=seq, subject="review.recognition.*.*", next=True
                )
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.3)
                continue
            assert msg.seq is not None
            seq = msg.seq + 1
            event = json.loads(msg.data or b"{}")
            if event.get("project_id") == project_id and event.get("recognized"):
                return
        raise AssertionError(f"{project_id} not recognised within {timeout:.0f}s: {center.errors}")


async def diagnose(d: Deployment, project_id: str) -> str:
    """What every stream holds about a project: the message for a test that timed out."""
    lines = []
    async with connect(d.nats_url, d.seed("ops", "admin")) as s:
        js = s.nc.jetstream()
        for stream in ("INTAKE", "PROJECT", "REVIEW", "SCORE", "DLQ"):  # inboxes drain
            sub = await js.subscribe(">", stream=stream, ordered_consumer=True)
            info = await js.stream_info(stream)
            for _ in range(info.state.messages):
                msg = await sub.next_msg(timeout=5)
                if project_id in msg.data.decode(errors="replace"):
                    lines.append(f"{stream} {msg.subject}: {msg.data.decode()[:300]}")
            await sub.unsubscribe()
    return "\n".join(lines)


def subject_points(board: dict[str, Any], subject: str) -> Decimal:
    for row in board.get("subjects", []):
        if row["subject"] == subject:
            return Decimal(row["points"])
    return Decimal(0)


# ---- the system works end to end with auth on ---------------------------------------------------


async def test_healthchecks_of_the_compose_file_pass(deployment: Deployment) -> None:
    for spec in SERVICES:
        check = run(
            deployment.mapping.healthcheck(spec.name),
            base_env(deployment.logs) | deployment.mapping.environment(spec.name),
            timeout=20,
        )
        assert check.returncode == 0, f"{spec.name}: {check.stdout}{check.stderr}"
    with urllib.request.urlopen(
        f"http://127.0.0.1:{deployment.monitor_port}/healthz?js-enabled-only=true", timeout=5
    ) as resp:
        assert resp.status == 200


async def test_a_unit_reports_over_nats_and_http_and_the_scoreboard_counts_it(
    deployment: Deployment,
) -> None:
    d = deployment
    scoreboard = f"{d.http['scoring']}/v1/scoreboard?year=2022"
    before = subject_points(http_json(scoreboard)[1], "TS05")

    data = lead("TS05", planned_investment="50000000", land="new_land", landing_area="TS05")
    pid = f"TS05-{data['lead_id']}"
    async with as_unit(d, "TS05") as unit:
        js = unit.nc.jetstream()
        ack = await js.publish(
            "intake.TS05.lead", json.dumps(data).encode(), headers={"Nats-Msg-Id": uid()}
        )
        assert ack.stream == "INTAKE_TS05"  # the unit's own inbox
        for doc in PROOFS_NEW_LAND[:-1]:
            await js.publish(
                "intake.TS05.document",
                json.dumps({"project_id": pid, "type": doc, "ref": f"{doc}-1"}).encode(),
                headers={"Nats-Msg-Id": uid()},
            )
        assert unit.errors == []

    # The last proof and the funds come over HTTP, with the unit's token.
    issued = run(
        [sys.executable, "-m", "investflow.main", "tokens", "issue", "TS05", "--label", "e2e"],
        base_env(d.logs) | d.mapping.environment("intake"),
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    doc = {"project_id": pid, "type": PROOFS_NEW_LAND[-1], "ref": "land-1"}
    status, body = http_json(
        f"{d.http['intake']}/v1/units/TS05/document", doc, auth | {"Idempotency-Key": uid()}
    )
    assert status == 202, body
    funds = {
        "project_id": pid,
        "funds_id": "F1",
        "amount": "12000000",
        "currency": "CNY",
        "arrived_on": "2022-05-10",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": f"BR-{uid()}"},
    }
    status, body = http_json(
        f"{d.http['intake']}/v1/units/TS05/funds", funds, auth | {"Idempotency-Key": uid()}
    )
    assert status == 202, body

    await recognised(d, pid)  # read by the Center's staff user, as its tools would

    def credited() -> Decimal:
        return subject_points(http_json(scoreboard)[1], "TS05") - before

    # Domestic, from outside the province: no multiplier applies (×1).
    try:
        points = await wait_for(credited, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await diagnose(d, pid)}") from None
    assert points == Decimal("12000000")


async def test_published_rulesets_reach_the_services_through_the_center_user(
    deployment: Deployment,
) -> None:
    """The Center's staff user puts a ruleset version in the KV bucket; review and scoring,
    each with only its own permissions, load it and say so on rules.loaded.<service>."""
    d = deployment
    text = (REPO_ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8")
    async with connect(d.nats_url, d.seed("ops", "center")) as center:
        sub = await center.nc.subscribe("rules.loaded.*")
        kv = await center.nc.jetstream().key_value("investflow_rulesets")
        revision = await kv.put("review.2022.1", text.encode())
        heard: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while {"notify", "review", "scoring"} - set(heard) and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                msg = await sub.next_msg(timeout=1)
                status = json.loads(msg.data)
                if status.get("revision") == revision:
                    heard[msg.subject.rsplit(".", 1)[-1]] = status
        assert center.errors == []
    assert {"notify", "review", "scoring"} <= set(heard), heard


async def test_the_center_explains_a_project_from_its_decision_records(
    deployment: Deployment,
) -> None:
    """Issue 14.8 under auth: `rules explain --project` as the Center's staff reads the
    decision records from the streams by sequence and asks the services what they run —
    within its permissions (the next test finds no violation)."""
    d = deployment
    async with connect(d.nats_url, d.seed("ops", "center"), "_INBOX_center") as center:
        last = await center.nc.jetstream().get_msg("SCORE", subject="score.credited.>")
        assert center.errors == []
    pid = json.loads(last.data)["project_id"]
    env = base_env(d.logs) | {
        "NATS_NKEY_SEED_FILE": d.seed("ops", "center"),
        "NATS_INBOX_PREFIX": "_INBOX_center",
    }
    done = run(
        [sys.executable, "-m", "investflow.main", "rules", "explain", "--project", pid,
         "--url", d.nats_url],
        env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "score.credited" in done.stdout and "review.recognition" in done.stdout
    assert "✓ 同一决定 the same decision and record" in done.stdout
    assert "live in " in done.stdout  # the versions came from the running services


async def test_so_far_nobody_was_refused_anything(deployment: Deployment) -> None:
    """Init, four services, a unit's reports and a publication: all within their permissions.
    (Runs before the tests below, which provoke refusals on purpose.)"""
    log = (deployment.logs / "nats.log").read_text(errors="replace")
    assert [line for line in log.splitlines() if "Violation" in line] == []


# ---- what each identity may not do --------------------------------------------------------------


async def test_a_unit_cannot_publish_as_another_unit_and_nothing_is_stored(
    deployment: Deployment,
) -> None:
    from services.intake.store import InboundEvent
    from tests.helpers import count_rows

    d = deployment
    before = await stream_count(d, "TS02")
    data = lead("TS02")
    async with as_unit(d, "TS01") as a:
        # Core publish: NATS drops it and says so on the error callback.
        await a.nc.publish("intake.TS02.lead", json.dumps(data).encode())
        assert "intake.ts02.lead" in (await a.violation()).lower()
        # JetStream publish: no acknowledgement ever comes.
        with pytest.raises(nats.errors.TimeoutError):
            await a.nc.jetstream().publish(
                "intake.TS02.lead", json.dumps(data).encode(), timeout=1.5,
                headers={"Nats-Msg-Id": uid()},
            )  # fmt: skip
    await asyncio.sleep(1)
    assert await stream_count(d, "TS02") == before
    assert count_rows(d.database("intake"), InboundEvent, InboundEvent.unit == "TS02") == 0


async def test_a_unit_reads_its_own_rejections_and_nobody_elses(deployment: Deployment) -> None:
    d = deployment
    async with as_unit(d, "TS03") as a:
        own = await a.nc.subscribe("intake.rejected.TS03.>")
        await a.nc.jetstream().publish(
            "intake.TS03.lead", b'{"lead_id": "bad"}', headers={"Nats-Msg-Id": uid()}
        )
        rejected = json.loads((await own.next_msg(timeout=20)).data)
        assert rejected["unit"] == "TS03" and rejected["errors"]
        assert a.errors == []

        for forbidden in ("intake.rejected.TS04.>", "review.>", "project.>", "_INBOX.>"):
            a.errors.clear()
            await a.nc.subscribe(forbidden)
            violation = await a.violation()
            assert forbidden.lower() in violation.lower(), violation


async def test_a_unit_without_its_own_inbox_prefix_gets_no_acks(deployment: Deployment) -> None:
    """Replies go to `_INBOX_<unit>.>` only, so no unit can read another's (or a service's)."""
    async with connect(deployment.nats_url, deployment.seed("units", "TS06")) as a:
        with pytest.raises(nats.errors.TimeoutError):
            await a.nc.jetstream().publish(
                "intake.TS06.lead", json.dumps(lead("TS06")).encode(), timeout=1.5,
                headers={"Nats-Msg-Id": uid()},
            )  # fmt: skip
        assert any("permissions violation" in e.lower() for e in a.errors)


@pytest.mark.parametrize("service", ["review", "scoring", "notify"])
async def test_a_service_cannot_publish_as_a_unit(deployment: Deployment, service: str) -> None:
    d = deployment
    before = await stream_count(d, "TS07")
    async with connect(d.nats_url, d.seed("services", service)) as s:
        await s.nc.publish("intake.TS07.lead", json.dumps(lead("TS07")).encode())
        assert "intake.ts07.lead" in (await s.violation()).lower()
        s.errors.clear()
        # Nor write another service's output, nor read a stream it does not consume.
        await s.nc.publish("project.lead.00000000", b"{}")
        await s.violation()
    await asyncio.sleep(0.5)
    assert await stream_count(d, "TS07") == before


async def test_http_intake_asks_for_the_units_own_token(deployment: Deployment) -> None:
    d = deployment
    url = f"{d.http['intake']}/v1/units/TS08/lead"
    body = lead("TS08")
    status, reply = http_json(url, body, {"Idempotency-Key": uid()})
    assert status == 401, reply
    issued = run(
        [sys.executable, "-m", "investflow.main", "tokens", "issue", "TS01"],
        base_env(d.logs) | d.mapping.environment("intake"),
    )
    other = issued.stdout.strip().splitlines()[-1]
    status, reply = http_json(
        url, body, {"Idempotency-Key": uid(), "Authorization": f"Bearer {other}"}
    )
    assert status == 403, reply
    assert (await stream_count(d, "TS08")) == 0


# ---- reply subjects: nobody gets anything stored in a stream it does not publish to ----------


FORGED_REPLIES = [
    "project.lead",
    "review.decided",
    "score.credited",
    "dlq.review.PROJECT",
    "intake.TS02.lead",
    "intake.rejected.TS02.lead",
    "$KV.investflow_rulesets.scoring.2022.1",
    "$KV.investflow_leases.intake.p.TS01",
]
# Intake's replicas renew their inbox leases in this bucket all the time (shared/partitions.py).
LEASES = "KV_investflow_leases"


async def test_a_unit_naming_an_internal_subject_as_reply_stores_nothing_there(
    deployment: Deployment,
) -> None:
    """JetStream sends its acknowledgement to the reply subject a publisher names; the unit's
    own account is where that lands, and it holds no stream (issue 11, item 4)."""
    d = deployment
    before = await last_seqs(d)
    async with as_unit(d, "TS01") as a:
        for reply in FORGED_REPLIES:
            await a.nc.publish("intake.TS01.lead", b"{}", reply=reply)
        await a.nc.flush()
    await asyncio.sleep(2)  # the forged messages are rejected; nothing else may move
    after = await last_seqs(d)
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    moved.pop(LEASES, None)  # renewals; what a forged ack would write there is checked below
    assert set(moved) <= {"INTAKE_TS01", "INTAKE"}, moved  # its own inbox, its rejections
    assert moved.get("INTAKE_TS01") == len(FORGED_REPLIES)
    async with connect(d.nats_url, d.seed("ops", "admin")) as s:
        kv = await s.nc.jetstream().key_value("investflow_rulesets")
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            entry = await kv.get("scoring.2022.1")
            assert b'"stream"' not in (entry.value or b"")
        leases = await s.nc.jetstream().stream_info(LEASES, subjects_filter=">")
        for subject in leases.state.subjects or {}:
            entry = await s.nc.jetstream().get_last_msg(LEASES, subject)
            assert b'"stream"' not in (entry.data or b""), (subject, entry.data)


@pytest.mark.parametrize(
    ("service", "subject", "reply"),
    [
        # Subjects each may publish, replies naming another stream's (keyed) subjects.
        ("notify", "notify.x.00000000", "score.credited.00000000"),
        ("intake", "project.x.00000000", "review.decided.00000000"),
        ("scoring", "score.x.00000000", "project.lead.00000000"),
        ("review", "review.x.00000000", "$KV.investflow_rulesets.review.2022.1"),
    ],
)
async def test_a_service_naming_another_stream_as_reply_stores_nothing_there(
    deployment: Deployment, service: str, subject: str, reply: str
) -> None:
    d = deployment
    target = {
        "score": "SCORE",
        "review": "REVIEW",
        "project": "PROJECT",
        "$KV": "KV_investflow_rulesets",
    }[reply.split(".")[0]]
    before = await last_seqs(d)
    async with connect(d.nats_url, d.seed("services", service), f"_INBOX_{service}") as s:
        await s.nc.publish(subject, b"{}", reply=reply)
        await s.nc.flush()
    await asyncio.sleep(1)
    after = await last_seqs(d)
    assert after.get(target, 0) == before.get(target, 0), (service, reply)


async def test_the_center_cannot_redefine_a_services_consumer(deployment: Deployment) -> None:
    """Item 5: the Center reads streams by sequence and creates no consumer on them."""
    d = deployment
    hijack = {
        "stream_name": "PROJECT",
        "config": {"name": "review-p0", "durable_name": "review-p0",
                   "filter_subject": "project.none", "ack_policy": "explicit",
                   "deliver_policy": "all"},
    }  # fmt: skip
    async with connect(d.nats_url, d.seed("ops", "center"), "_INBOX_center") as center:
        for subject in (
            "$JS.API.CONSUMER.CREATE.PROJECT",
            "$JS.API.CONSUMER.CREATE.PROJECT.review-p0",
            "$JS.API.CONSUMER.CREATE.PROJECT.review-p0.project.none",
            "$JS.API.CONSUMER.DURABLE.CREATE.PROJECT.review-p0",
        ):
            center.errors.clear()
            with contextlib.suppress(Exception):
                await center.nc.request(subject, json.dumps(hijack).encode(), timeout=1)
            assert "permissions violation" in (await center.violation()).lower(), subject
    async with connect(d.nats_url, d.seed("ops", "admin")) as s:
        info = await s.nc.jetstream().consumer_info("PROJECT", "review-p0")
        assert info.config.filter_subject == "project.*.0.*"


@pytest.mark.parametrize(
    "who", [("services", "review"), ("services", "scoring"), ("units", "TS01")]
)
async def test_only_the_center_writes_the_rulesets_bucket(
    deployment: Deployment, who: tuple[str, str]
) -> None:
    d = deployment
    inbox = f"_INBOX_{who[1]}"
    async with connect(d.nats_url, d.seed(*who), inbox) as s:
        await s.nc.publish("$KV.investflow_rulesets.scoring.2022.9", b"x")
        assert "$kv.investflow_rulesets" in (await s.violation()).lower()


async def test_rules_publish_as_the_center_under_auth_goes_live(deployment: Deployment) -> None:
    """Issues 11.10 / 14.2: `rules publish` signs in with the Center's nkey and inbox, asks
    each rules service what it runs (rules.live.<service>, exported by each service's own
    account) and waits for both to confirm."""
    d = deployment
    env = base_env(d.logs) | {
        "NATS_NKEY_SEED_FILE": d.seed("ops", "center"),
        "NATS_INBOX_PREFIX": "_INBOX_center",
    }
    done = run(
        [sys.executable, "-m", "investflow.main", "rules", "publish",
         str(REPO_ROOT / "rulesets" / "review-2022.1.yaml"), "--url", d.nats_url],
        env, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "live in / 已生效: notify, review, scoring" in done.stdout, done.stdout
