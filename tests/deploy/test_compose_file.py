"""deploy/docker-compose.yml against the runtime's service list, and `docker compose config`.

The structure checks run everywhere; `docker compose config` of the file (and of the host
network override) where the compose plugin is installed. The stack itself is built and run on
a real Docker engine by `make compose-check` (tests/deploy/compose_check.py), outside the
default test run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
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


COMPOSE_REASON = _compose_reason()
HOSTNET_PORTS = (
    "NATS_PORT", "NATS_MONITOR_PORT", "POSTGRES_PORT", "INTAKE_PORT", "REVIEW_PORT", "NOTIFY_PORT", "BOARD_PORT",
)  # fmt: skip


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


@pytest.mark.skipif(COMPOSE_REASON is not None, reason=COMPOSE_REASON or "")
def test_the_host_network_override_validates_and_keeps_to_loopback(tmp_path: Path) -> None:
    """What `make compose-check` runs (the stack itself runs there, on a Docker engine, not here:
    a default compose network would be a bridge, which these machines must never create)."""
    env_file = tmp_path / "check.env"
    ports = {k: str(20000 + i) for i, k in enumerate(HOSTNET_PORTS)}
    env_file.write_text(
        f"INVESTFLOW_SECRETS={tmp_path}\nPOSTGRES_PASSWORD={'ef' * 12}\n"
        f"NATS_URL_INTERNAL=nats://127.0.0.1:{ports['NATS_PORT']}\n"
        f"POSTGRES_ADDR=127.0.0.1:{ports['POSTGRES_PORT']}\n"
        + "".join(f"{k}={v}\n" for k, v in ports.items())
    )
    out = subprocess.run(
        ["docker", "compose", "-f", str(compose.COMPOSE_FILE),
         "-f", str(DEPLOY / "docker-compose.hostnet.yml"), "--env-file", str(env_file),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    import json

    config = json.loads(out.stdout)
    running = {
        n: s for n, s in config["services"].items() if "gateway" not in s.get("profiles", [])
    }
    assert set(running) == {s.name for s in SERVICES} | {"nats", "postgres", "init"}
    for name, svc in running.items():
        assert svc.get("network_mode") == "host", name
        assert not svc.get("ports"), f"{name} publishes ports under host networking"
        for key, value in (svc.get("environment") or {}).items():
            if key.endswith("_HTTP_HOST"):
                assert value == "127.0.0.1", (name, key, value)
    assert "--addr" in running["nats"]["command"] and "127.0.0.1" in running["nats"]["command"]
    assert running["scoring"]["environment"]["SCORING_HTTP_PORT"] == "0"  # one port per replica
