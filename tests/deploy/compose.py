"""Reading deploy/docker-compose.yml the way `docker compose` would, to run it without Docker.

`load()` interpolates `${VAR}`, `${VAR:-default}`, `${VAR:?message}` from a given environment
and resolves YAML merge keys. `LocalMapping` turns a service's compose command, environment
and healthcheck into what runs on this machine: compose host names become 127.0.0.1, ports the
test's free ports, `/run/secrets/<name>` the secret's file, `/app/...` the repository.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from shared.settings import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "deploy" / "docker-compose.yml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\$")


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if unset else value  # type: ignore[return-value]
        if op in ("?", ":?"):
            if unset:
                raise InterpolationError(f"{name}: {arg or 'required'}")
            return value  # type: ignore[return-value]
        return value or ""

    return _VAR.sub(one, text)


def load(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose model after interpolation (values interpolated line by line, like compose)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip()
        lines.append(line if stripped.startswith("#") else interpolate(line, env))
    return yaml.safe_load("\n".join(lines))


def raw() -> dict[str, Any]:
    """The compose model without interpolation (for structure checks)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@dataclass
class LocalMapping:
    """How compose's names and paths map onto this machine."""

    model: dict[str, Any]
    nats_port: int
    pg_admin_url: str  # postgresql://user@host:port/db of the local server
    db_prefix: str  # compose database `intake` becomes `<db_prefix>_intake`
    http_ports: dict[str, int] = field(default_factory=dict)  # env var name → free port

    def secret_file(self, name: str) -> Path:
        return Path(self.model["secrets"][name]["file"])

    def value(self, key: str, value: Any) -> str | None:
        text = "" if value is None else str(value)
        if text == "":
            return None  # compose passes it empty; our settings read empty as unset
        if text.startswith("/run/secrets/"):
            return str(self.secret_file(text.removeprefix("/run/secrets/")))
        if text.startswith("/app/"):
            return str(REPO_ROOT / text.removeprefix("/app/"))
        if key.endswith("DATABASE_URL"):
            return self.database_url(text)
        if key == "NATS_URL":
            parts = urlsplit(text)
            assert parts.hostname == "nats", f"NATS_URL {text} does not name the nats service"
            return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.nats_port}"))
        if key in self.http_ports:
            return str(self.http_ports[key])
        if key.endswith("_HTTP_HOST"):
            return "127.0.0.1"  # compose listens on 0.0.0.0 inside its network; here: loopback
        return text

    def database_url(self, url: str) -> str:
        parts = urlsplit(url)
        assert parts.hostname == "postgres", f"{url} does not name the postgres service"
        local = urlsplit(self.pg_admin_url)
        name = f"{self.db_prefix}_{parts.path.lstrip('/')}"
        return urlunsplit(local._replace(path=f"/{name}"))

    def environment(self, service: str) -> dict[str, str]:
        env = self.model["services"][service].get("environment") or {}
        assert isinstance(env, dict), f"{service}: environment must be a mapping"
        out = {}
        for key, value in env.items():
            mapped = self.value(key, value)
            if mapped is not None:
                out[key] = mapped
        return out

    def command(self, argv: list[str]) -> list[str]:
        out = []
        for arg in argv:
            if arg == "python":
                out.append(sys.executable)
            elif arg.startswith("/app/"):
                out.append(str(REPO_ROOT / arg.removeprefix("/app/")))
            else:
                out.append(arg)
        return out

    def service_command(self, service: str) -> list[str]:
        return self.command(list(self.model["services"][service]["command"]))

    def healthcheck(self, service: str) -> list[str]:
        test = list(self.model["services"][service]["healthcheck"]["test"])
        assert test[0] == "CMD", f"{service}: healthcheck should be an exec form ([CMD, ...])"
        return self.command(test[1:])

    def mounts(self, service: str) -> list[tuple[Path, str]]:
        """Bind mounts as (host path, container path); named volumes are left out."""
        out = []
        for spec in self.model["services"][service].get("volumes", []):
            source, target = str(spec).split(":")[:2]
            if source.startswith((".", "/")):
                host = (
                    (COMPOSE_FILE.parent / source).resolve()
                    if source.startswith(".")
                    else Path(source)
                )
                out.append((host, target))
        return out
