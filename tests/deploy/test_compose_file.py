"""deploy/docker-compose.yml against the runtime's service list, and under Docker where it exists.

No Docker engine or compose plugin runs on these machines: `docker compose config` and the
testcontainers run of the real file skip here with the reason, and run wherever they answer.
The structure checks below run everywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from investflow import deploy_cli
from investflow.services import SERVICES
from shared.settings import REPO_ROOT
from tests.deploy import compose

DEPLOY = REPO_ROOT / "deploy"
INFRA = {"nats", "postgres", "init", "gateway"}
ENV = {"INVESTFLOW_SECRETS": "/etc/investflow/secrets", "POSTGRES_PASSWORD": "x" * 16}


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return compose.load(ENV)


def test_every_runtime_service_is_in_the_compose_file_with_its_command(model) -> None:
    services = model["services"]
    assert {s.name for s in SERVICES} | INFRA == set(services)
    for spec in SERVICES:
        assert services[spec.name]["command"] == ["python", "-m", spec.module], spec.name


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_a_service_scales_restarts_and_reports_its_health(model, name: str) -> None:
    svc = model["services"][name]
    assert "container_name" not in svc and "ports" not in svc, "would stop --scale"
    assert svc["restart"] == "unless-stopped"
    assert int(svc["deploy"]["replicas"]) == 1  # ${NAME_REPLICAS:-1}
    assert svc["image"] == model["services"]["init"]["image"], "one image for every service"
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    check = svc["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "/app/deploy/healthcheck.py"]
    spec = next(s for s in SERVICES if s.name == name)
    if spec.http:
        assert check[3:] == ["http", spec.http_port_env]
        env = svc["environment"]
        assert env[f"{name.upper()}_HTTP_HOST"] == "0.0.0.0"
        assert svc["expose"] == [env[spec.http_port_env]]
    else:
        assert check[3:] == ["nats"]
    assert svc["depends_on"]["init"] == {"condition": "service_completed_successfully"}


def test_the_unit_directory_is_read_in_place_where_settings_look_for_it(model) -> None:
    """Adding a unit is an edit of deploy/units.yaml and a restart, not a new image."""
    for name in [s.name for s in SERVICES] + ["init"]:
        volumes = model["services"][name]["volumes"]
        assert "./units.yaml:/app/deploy/units.yaml:ro" in volumes, name
    # In the image the code is at /app, so shared.settings.REPO_ROOT/deploy/units.yaml is this.
    assert "WORKDIR /app" in (DEPLOY / "Dockerfile").read_text()


def test_replicas_are_set_from_the_env_file() -> None:
    model = compose.load(ENV | {"SCORING_REPLICAS": "3"})
    assert int(model["services"]["scoring"]["deploy"]["replicas"]) == 3


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_a_service_signs_in_as_itself_and_uses_its_own_database(model, name: str) -> None:
    svc = model["services"][name]
    env = svc["environment"]
    assert env["NATS_URL"] == "nats://nats:4222"
    secret = env["NATS_NKEY_SEED_FILE"].removeprefix("/run/secrets/")
    assert svc["secrets"] == [secret]
    # The file compose mounts is the seed `investflow nats users` wrote for this service.
    identity = deploy_cli.service_identity(next(s for s in SERVICES if s.name == name))
    assert model["secrets"][secret]["file"] == f"{ENV['INVESTFLOW_SECRETS']}/{identity.seed_file}"
    assert re.fullmatch(rf"postgresql://investflow:x+@postgres:5432/{name}", env["DATABASE_URL"])
    init_env = model["services"]["init"]["environment"]
    assert init_env[f"{name.upper()}_DATABASE_URL"] == env["DATABASE_URL"]


def test_production_intake_asks_for_tokens(model) -> None:
    assert model["services"]["intake"]["environment"]["INTAKE_HTTP_AUTH"] == "1"


def test_the_init_job_makes_streams_as_admin_then_databases(model) -> None:
    init = model["services"]["init"]
    assert init["restart"] == "no"
    assert init["command"] == ["sh", "-c", "investflow nats init && investflow db init"]
    assert init["environment"]["NATS_NKEY_SEED_FILE"] == "/run/secrets/nats_admin"
    assert model["secrets"]["nats_admin"]["file"].endswith(f"/{deploy_cli.ADMIN.seed_file}")
    assert init["depends_on"] == {
        "nats": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }


def test_nats_runs_jetstream_with_the_committed_config_and_the_generated_users(model) -> None:
    nats = model["services"]["nats"]
    assert nats["image"].startswith("nats:2.")
    assert "--jetstream" in nats["command"] and "--store_dir" in nats["command"]
    mounts = dict(reversed(v.split(":")[:2]) for v in nats["volumes"])
    assert mounts["/etc/nats/nats-server.conf"] == "./nats/nats-server.conf"
    assert mounts["/etc/nats/auth.conf"] == f"{ENV['INVESTFLOW_SECRETS']}/nats/auth.conf"
    assert mounts["/data"] == "nats-data"
    conf = (DEPLOY / "nats" / "nats-server.conf").read_text()
    assert 'include "auth.conf"' in conf
    assert "http_port: 8222" in conf and "8222/healthz" in " ".join(nats["healthcheck"]["test"])
    assert {"nats-data", "pg-data"} <= set(model["volumes"])


def test_postgres_keeps_its_data_and_reports_readiness(model) -> None:
    pg = model["services"]["postgres"]
    assert "pg-data:/var/lib/postgresql/data" in pg["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_no_secret_is_committed() -> None:
    text = compose.COMPOSE_FILE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|TOKEN)\w*:\s*\S", line) and "${" not in line:
            pytest.fail(f"a literal secret in docker-compose.yml: {line.strip()}")
    example = (DEPLOY / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M), ".env.example must leave it empty"
    # Everything compose insists on (${VAR:?...}) is explained in .env.example.
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert required <= documented, required - documented
    tracked = subprocess.run(
        ["git", "ls-files", "deploy"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert not [f for f in tracked if f.endswith((".nk", ".creds", ".pem", ".key", "auth.conf"))]


def test_missing_required_settings_are_named() -> None:
    with pytest.raises(compose.InterpolationError, match="INVESTFLOW_SECRETS"):
        compose.load({"POSTGRES_PASSWORD": "x"})
    with pytest.raises(compose.InterpolationError, match="POSTGRES_PASSWORD"):
        compose.load({"INVESTFLOW_SECRETS": "/s"})


def test_the_image_holds_what_the_containers_run() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for path in ("shared", "services", "investflow", "rulesets"):
        assert f"COPY {path} ./{path}" in dockerfile
        assert f"!{path}/" in ignore
    assert "deploy/healthcheck.py" in dockerfile and "!deploy/healthcheck.py" in ignore
    assert re.search(r"^USER 10001", dockerfile, re.M), "services run as a non-root user"
    assert "requirements.lock" in dockerfile


def test_the_gateway_fronts_intake_and_scoring_by_service_name(model) -> None:
    conf = (DEPLOY / "nginx" / "gateway.conf").read_text()
    assert "http://intake:8080" in conf and "http://scoring:8082" in conf
    assert model["services"]["intake"]["environment"]["INTAKE_HTTP_PORT"] == "8080"
    assert model["services"]["scoring"]["environment"]["SCORING_HTTP_PORT"] == "8082"
    assert "/metrics" not in conf, "metrics are scraped inside the network, not published"


# ---- where Docker exists ---------------------------------------------------------------------


def _compose_reason() -> str | None:
    docker = shutil.which("docker")
    if not docker:
        return "docker is not installed"
    try:
        out = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose version: {exc}"
    if out.returncode != 0:
        said = " ".join((out.stderr or out.stdout).split())[:120]
        return f"no compose plugin here (docker compose version: {said})"
    return None


def _engine_reason() -> str | None:
    reason = _compose_reason()
    if reason:
        return reason
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as exc:
        return f"no Docker engine answers: {type(exc).__name__}"


COMPOSE_REASON = _compose_reason()


@pytest.mark.skipif(COMPOSE_REASON is not None, reason=COMPOSE_REASON or "")
def test_docker_compose_config_validates(tmp_path: Path) -> None:
    env_file = tmp_path / "investflow.env"
    env_file.write_text(
        (DEPLOY / ".env.example").read_text()
        .replace("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=" + "ab" * 12)
        .replace("INVESTFLOW_SECRETS=/etc/investflow/secrets", f"INVESTFLOW_SECRETS={tmp_path}")
    )  # fmt: skip
    out = subprocess.run(
        ["docker", "compose", "-f", str(compose.COMPOSE_FILE), "--env-file", str(env_file),
         "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(_engine_reason() is not None, reason=_engine_reason() or "")
@pytest.mark.timeout(900)
def test_the_real_compose_file_runs_under_docker(tmp_path: Path) -> None:
    """Build the image, bring everything up, report a lead as a unit, read it back."""
    from testcontainers.compose import DockerCompose

    secrets = tmp_path / "secrets"
    made = subprocess.run(
        [sys.executable, "-m", "investflow.main", "nats", "users", "--secrets", str(secrets),
         "--out", str(secrets / "nats" / "auth.conf")],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    for path in secrets.rglob("*"):  # the containers run as uid 10001
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (secrets / "tls").mkdir(exist_ok=True)
    env_file = tmp_path / "investflow.env"
    env_file.write_text(
        f"INVESTFLOW_SECRETS={secrets}\nPOSTGRES_PASSWORD={'cd' * 12}\nNOTIFY_DRY_RUN=1\n"
        "HTTP_PORT=0\nNATS_PORT=0\nNATS_MONITOR_PORT=0\nSCOREBOARD_PORT=0\n"
    )
    with DockerCompose(
        DEPLOY,
        compose_file_name="docker-compose.yml",
        env_file=str(env_file),
        build=True,
        wait=True,
    ) as stack:
        host, port = stack.get_service_host_and_port("gateway", 8081)
        with urllib.request.urlopen(
            f"http://{host}:{port}/v1/scoreboard?year=2022", timeout=10
        ) as r:
            assert r.status == 200
        host, port = stack.get_service_host_and_port("gateway", 8080)
        req = urllib.request.Request(
            f"http://{host}:{port}/v1/units/TS01/lead", data=b"{}", method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": "k1"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401  # tokens are on in production
