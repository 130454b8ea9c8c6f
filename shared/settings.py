"""Settings every service reads from its environment (12-factor; no config files to forget)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from exc


@dataclass(frozen=True)
class Settings:
    nats_url: str
    database_url: str | None
    data_dir: Path
    units_file: Path
    rulesets_dir: Path
    duplicate_window_s: int
    max_deliver: int
    max_payload_bytes: int
    connect_timeout_s: int
    ack_wait_s: int

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            nats_url=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
            database_url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(os.environ.get("INVESTFLOW_DATA_DIR", REPO_ROOT / "data")),
            units_file=Path(
                os.environ.get("INVESTFLOW_UNITS", REPO_ROOT / "deploy" / "units.yaml")
            ),
            rulesets_dir=Path(os.environ.get("INVESTFLOW_RULESETS", REPO_ROOT / "rulesets")),
            # JetStream drops a re-sent Nats-Msg-Id inside this window; the tables catch the rest.
            duplicate_window_s=_int("INVESTFLOW_DUPLICATE_WINDOW", 600),
            max_deliver=_int("INVESTFLOW_MAX_DELIVER", 8),
            max_payload_bytes=_int("INVESTFLOW_MAX_PAYLOAD", 64 * 1024),
            connect_timeout_s=_int("INVESTFLOW_CONNECT_TIMEOUT", 10),
            # How long a message a dead consumer held stays invisible before redelivery.
            ack_wait_s=_int("INVESTFLOW_ACK_WAIT", 30),
        )

    def database_url_for(self, service: str) -> str:
        """`<SERVICE>_DATABASE_URL`, else `DATABASE_URL`, else a SQLite file of the service's own."""
        own = os.environ.get(f"{service.upper()}_DATABASE_URL")
        if own:
            return own
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / (service + '.db')}"
