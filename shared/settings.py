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


def _secret(name: str) -> str | None:
    """`NAME`, or the contents of the file `NAME_FILE` (docker secrets), never a default."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get(name) or None


def nats_servers(raw: str) -> str | list[str]:
    """NATS_URL: one server, or a cluster's as a comma-separated list (nats-py and FastStream
    take a list, and fail over between its servers; a comma in one string they cannot parse)."""
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    return urls if len(urls) > 1 else (urls[0] if urls else raw)


def server_list(url: str | list[str]) -> list[str]:
    """Every server of a NATS_URL or a Settings.nats_url, as a list."""
    found = nats_servers(url) if isinstance(url, str) else url
    return [found] if isinstance(found, str) else list(found)


@dataclass(frozen=True)
class Settings:
    # One URL, or the cluster's URLs when NATS_URL lists several (nats_servers).
    nats_url: str | list[str]
    database_url: str | None
    data_dir: Path
    units_file: Path
    rulesets_dir: Path
    duplicate_window_s: int
    max_deliver: int
    max_payload_bytes: int
    connect_timeout_s: int
    ack_wait_s: int
    # Messages a consumer takes and settles per round, in order (max_ack_pending).
    batch_size: int = 64
    # NATS credentials (deploy/nats: one user per service and unit); all optional locally.
    nats_user: str | None = None
    nats_password: str | None = None
    nats_nkey_seed_file: str | None = None
    nats_creds_file: str | None = None
    nats_tls_ca_file: str | None = None
    nats_inbox_prefix: str | None = None  # per-user reply subjects, e.g. _INBOX_review

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            nats_url=nats_servers(os.environ.get("NATS_URL", "nats://127.0.0.1:4222")),
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
            batch_size=max(1, _int("INVESTFLOW_BATCH", 64)),
            nats_user=os.environ.get("NATS_USER") or None,
            nats_password=_secret("NATS_PASSWORD"),
            nats_nkey_seed_file=os.environ.get("NATS_NKEY_SEED_FILE") or None,
            nats_creds_file=os.environ.get("NATS_CREDS_FILE") or None,
            nats_tls_ca_file=os.environ.get("NATS_TLS_CA_FILE") or None,
            nats_inbox_prefix=os.environ.get("NATS_INBOX_PREFIX") or None,
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

    def nats_options(self) -> dict[str, object]:
        """Authentication and TLS keyword arguments for nats.connect / NatsBroker."""
        options: dict[str, object] = {}
        if self.nats_creds_file:
            options["user_credentials"] = self.nats_creds_file
        elif self.nats_nkey_seed_file:
            options["nkeys_seed"] = self.nats_nkey_seed_file
        elif self.nats_user:
            options["user"] = self.nats_user
            options["password"] = self.nats_password or ""
        if self.nats_inbox_prefix:
            # Replies come back only on this user's own prefix, which permissions can scope.
            options["inbox_prefix"] = self.nats_inbox_prefix
        if self.nats_tls_ca_file:
            import ssl

            options["tls"] = ssl.create_default_context(cafile=self.nats_tls_ca_file)
        return options


async def connect_nats(  # type: ignore[no-untyped-def]
    settings: Settings, url: str | list[str] | None = None, **kwargs: object
):
    """A nats-py connection with this process's credentials: the one way tools connect.
    `url` may list a cluster's servers, as a list or comma-separated (a --url a,b,c)."""
    import nats

    options: dict[str, object] = (
        {"connect_timeout": settings.connect_timeout_s} | settings.nats_options() | kwargs
    )
    servers = nats_servers(url) if isinstance(url, str) else url
    return await nats.connect(servers or settings.nats_url, **options)  # type: ignore[arg-type]
