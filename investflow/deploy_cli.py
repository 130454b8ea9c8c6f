"""The deployment's credentials and schema: `investflow nats users`, `tokens`, `db init`.

`nats users` writes the nats-server authorization from the unit directory: one nkey user per
unit (招商单位 and the other reporting units), one per service, one for the Center's staff
tools and one for operations. Each may publish and subscribe only what its job needs (the
table below, and docs/operations.md). The server's file holds public keys only; the seeds go
to a directory outside the repository (`--secrets`), one file per identity, kept across runs
so adding a unit does not rotate everyone's key.

`tokens` issues and revokes the units' HTTP bearer tokens (intake's table); `db init`
creates every service's database and tables, for the compose file's one-shot init job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.settings import REPO_ROOT, Settings

from .services import SERVICES, ServiceSpec

RULES_BUCKET = "investflow_rulesets"  # shared.rules.published.BUCKET (imported lazily there)
KV_STREAM = f"KV_{RULES_BUCKET}"

# Until the services can be told an inbox prefix of their own (NATS_INBOX_PREFIX), they and the
# operators' tools receive replies on the default `_INBOX.>`. Units never get it: each has its
# own `_INBOX_<unit>.>`, so no unit can read another's replies or a service's pulled messages.
SHARED_INBOX = "_INBOX.>"


def unit_inbox(unit: str) -> str:
    """The inbox prefix a unit's client must connect with (nats-py: inbox_prefix=...)."""
    return f"_INBOX_{unit}"


@dataclass(frozen=True)
class ServiceAccess:
    """What a service's JetStream consumers read and what it emits."""

    consumes: tuple[str, ...]  # stream names; the durable consumer is the service's own
    publishes: tuple[str, ...]  # subjects (wildcards allowed)
    why: str = ""
    follows_rules: bool = False  # watches the published rulesets (shared/rules/published.py)


# Checked against the services' own FastStream brokers by tests/deploy/test_nats_auth.py:
# a service that starts reading or emitting something new fails that test until it is here.
SERVICE_ACCESS: dict[str, ServiceAccess] = {
    "intake": ServiceAccess(
        consumes=("INTAKE",),
        # intake.*.*: the HTTP gateway publishes a request onto the unit's subject after
        # checking that unit's bearer token; the stream stays the one write path.
        publishes=("project.*", "intake.rejected.*.*", "intake.*.*"),
        why="validates inbound events, emits project.* and rejections",
    ),
    "review": ServiceAccess(
        consumes=("PROJECT",),
        publishes=("review.*",),
        why="PROJECT → REVIEW (联审联批, 认定)",
        follows_rules=True,
    ),
    "scoring": ServiceAccess(
        consumes=("PROJECT", "REVIEW"),
        publishes=("score.*",),
        why="PROJECT + REVIEW → SCORE (考核计分)",
        follows_rules=True,
    ),
    "notify": ServiceAccess(
        consumes=("PROJECT", "REVIEW", "SCORE"),
        publishes=("notify.*",),
        why="PROJECT + REVIEW + SCORE → NOTIFY",
    ),
    "board": ServiceAccess(
        consumes=("PROJECT", "REVIEW", "SCORE", "NOTIFY"),
        publishes=(),
        why="PROJECT + REVIEW + SCORE + NOTIFY → the board's pages (挂图作战); reads rules.loaded.*",
        follows_rules=True,
    ),
}


@dataclass(frozen=True)
class Identity:
    name: str  # unit code, service name, `center` or `admin`
    role: str  # unit | service | ops
    description: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    @property
    def seed_file(self) -> str:
        """Relative to the secrets dir: nats/units/TS01.nk, nats/services/review.nk, nats/ops/admin.nk."""
        folder = {"unit": "units", "service": "services"}.get(self.role, "ops")
        return f"nats/{folder}/{self.name}.nk"


def consumer_api(stream: str, durable: str) -> tuple[str, ...]:
    """Create/look up one named durable on one stream, pull from it, ack it: nothing else.

    Plus reading the stream by sequence: a replica waiting its turn asks whether anything
    for its consumer lies below its messages (shared/messaging.py).
    """
    return (
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    )


# Following the published rulesets (shared/rules/published.py): look the bucket up (create it
# when nobody published yet), watch it through an ordered consumer, answer its flow control.
RULES_READ = (
    f"$JS.API.STREAM.INFO.{KV_STREAM}",
    f"$JS.API.STREAM.CREATE.{KV_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{KV_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{KV_STREAM}.>",
    f"$JS.API.CONSUMER.INFO.{KV_STREAM}.*",
    f"$JS.API.CONSUMER.DELETE.{KV_STREAM}.*",
    f"$JS.FC.{KV_STREAM}.>",
)


def unit_identity(code: str, description: str) -> Identity:
    return Identity(
        name=code,
        role="unit",
        description=description,
        publish=(f"intake.{code}.*",),
        subscribe=(f"intake.rejected.{code}.>", f"{unit_inbox(code)}.>"),
    )


def service_identity(spec: ServiceSpec) -> Identity:
    access = SERVICE_ACCESS.get(spec.name)
    if access is None:
        raise SystemExit(
            f"investflow nats users: no NATS permissions are defined for service {spec.name!r}; "
            f"add it to SERVICE_ACCESS in {__file__}"
        )
    durable = spec.durable or spec.name
    publish = [*access.publishes, f"dlq.{spec.name}.>"]
    for stream in access.consumes:
        publish += consumer_api(stream, durable)
    subscribe = [SHARED_INBOX]
    if spec.rules or access.follows_rules:
        publish += [*RULES_READ, f"rules.loaded.{spec.name}"]
        # Its own load announcements: scoring re-settles records a new version now covers.
        subscribe.append(f"rules.loaded.{spec.name}")
    return Identity(
        name=spec.name,
        role="service",
        description=f"service {spec.name}: {access.why}",
        publish=tuple(publish),
        subscribe=tuple(subscribe),
    )


CENTER_STAFF = Identity(
    name="center",
    role="ops",
    description="the Center's staff tools (项目建设服务中心): publish/roll back rulesets, read every stream",
    publish=(
        f"$KV.{RULES_BUCKET}.>",
        f"$JS.API.DIRECT.GET.{KV_STREAM}.>",
        f"$JS.API.STREAM.MSG.GET.{KV_STREAM}",
        f"$JS.API.STREAM.CREATE.{KV_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{KV_STREAM}.>",
        "$JS.API.INFO",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.MSG.GET.*",
        "$JS.API.CONSUMER.LIST.*",
        "$JS.API.CONSUMER.NAMES.*",
        "$JS.API.CONSUMER.INFO.*.*",
        # Read-only replays: ephemeral consumers only (no name, so no service's durable can be
        # redefined), with their flow control.
        "$JS.API.CONSUMER.CREATE.*",
        "$JS.FC.>",
    ),
    subscribe=(
        "rules.loaded.*",
        "project.>",
        "review.>",
        "score.>",
        "notify.>",
        "intake.rejected.>",
        "dlq.>",
        "_INBOX_center.>",
        SHARED_INBOX,
    ),
)

ADMIN = Identity(
    name="admin",
    role="ops",
    description="operations: `investflow nats init`, stream and consumer administration",
    publish=("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>"),
    subscribe=(SHARED_INBOX, "_INBOX_admin.>", "$JS.EVENT.>", "rules.loaded.*"),
)


def identities(units_file: Path, services: Iterable[ServiceSpec] = SERVICES) -> list[Identity]:
    from shared.directory import load_directory

    directory = load_directory(units_file)
    out = [
        unit_identity(code, f"unit {code} {entry.name_zh} ({entry.name_en})")
        for code, entry in directory.units.items()
    ]
    out += [service_identity(spec) for spec in services]
    out += [CENTER_STAFF, ADMIN]
    return out


# ---- nkeys and the server's file ---------------------------------------------------------------


def _nkeys():  # type: ignore[no-untyped-def]
    try:
        import nkeys
    except ImportError:
        raise SystemExit(
            "investflow nats users: the nkeys package is not installed (pip install nkeys); "
            "nats-py needs it to sign in with an nkey too"
        ) from None
    return nkeys


def public_key(seed: bytes) -> str:
    return _nkeys().from_seed(seed.strip()).public_key.decode()


def new_seed() -> bytes:
    nkeys = _nkeys()
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def inside_repo(path: Path) -> bool:
    try:
        path.resolve().relative_to(REPO_ROOT.resolve())
        return True
    except ValueError:
        return False


def ensure_seeds(
    secrets_dir: Path, people: list[Identity], rotate: set[str]
) -> tuple[dict[str, str], list[str]]:
    """Each identity's public key, creating missing seeds and replacing rotated ones (mode 0600)."""
    keys: dict[str, str] = {}
    report: list[str] = []
    for who in people:
        path = secrets_dir / who.seed_file
        if path.exists() and who.name not in rotate:
            keys[who.name] = public_key(path.read_bytes())
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        os.chmod(secrets_dir / "nats", 0o700)
        seed = new_seed()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seed + b"\n")
        os.replace(tmp, path)
        keys[who.name] = public_key(seed)
        report.append(f"{'rotated' if who.name in rotate else 'created'} {path}")
    return keys, report


def _quoted(items: Iterable[str]) -> str:
    # JSON strings are valid nats-server config strings; quoting keeps `$JS...` from being
    # read as a variable reference.
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def render_config(
    people: list[Identity],
    keys: dict[str, str],
    source: str,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> str:
    lines = [
        f"# Generated by `investflow nats users` from {source}; do not edit by hand.",
        "# Public keys only: each identity's seed is in the secrets dir given with --secrets.",
        "# Included by deploy/nats/nats-server.conf; reload with: docker compose kill -s HUP nats",
        "",
    ]
    if tls_cert and tls_key:
        lines += [
            "tls {",
            f"  cert_file: {json.dumps(tls_cert)}",
            f"  key_file: {json.dumps(tls_key)}",
            "  timeout: 5",
            "}",
            "",
        ]
    lines += ["authorization {", "  users = ["]
    for who in people:
        lines += [
            f"    # {who.description}",
            "    {",
            f"      nkey: {json.dumps(keys[who.name])}",
            "      permissions: {",
            f"        publish: {{ allow: {_quoted(who.publish)} }}",
            f"        subscribe: {{ allow: {_quoted(who.subscribe)} }}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _nats_users(args: argparse.Namespace) -> int:
    units = Path(args.units)
    secrets_dir = Path(args.secrets)
    if inside_repo(secrets_dir) and not args.allow_inside_repo:
        print(
            f"investflow nats users: {secrets_dir} is inside the repository; keep seeds outside it "
            "(e.g. /etc/investflow/secrets)",
            file=sys.stderr,
        )
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("investflow nats users: give --tls-cert and --tls-key together", file=sys.stderr)
        return 2
    people = identities(units)
    known = {p.name for p in people}
    unknown = sorted(set(args.rotate) - known)
    if unknown:
        print(
            f"investflow nats users: cannot rotate {', '.join(unknown)}: not a unit, service, "
            "center or admin",
            file=sys.stderr,
        )
        return 2
    secrets_dir.mkdir(parents=True, exist_ok=True)
    keys, report = ensure_seeds(secrets_dir, people, set(args.rotate))
    text = render_config(people, keys, str(args.units), args.tls_cert, args.tls_key)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        report.append(f"wrote {out} ({len(people)} users)")
    else:
        sys.stdout.write(text)
    for line in report:
        print(line, file=sys.stderr if not args.out else sys.stdout)
    return 0


# ---- HTTP tokens -------------------------------------------------------------------------------


def _token_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.intake import store
    from shared.db import create_tables, make_engine

    engine = make_engine(args.database_url or Settings.from_env().database_url_for("intake"))
    create_tables(engine, store.TABLES)
    return engine


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _tokens_issue(args: argparse.Namespace) -> int:
    from services.intake import tokens
    from shared.db import unit_of_work
    from shared.directory import load_directory

    directory = load_directory(Settings.from_env().units_file)
    if not directory.is_unit(args.unit):
        print(
            f"investflow tokens issue: {args.unit} is not a unit in the directory", file=sys.stderr
        )
        return 2
    with unit_of_work(_token_engine(args)) as session:
        row, token = tokens.issue(session, args.unit, args.label or "", _now())
    print(f"token {row.token_id} for {row.unit} (shown once; store it in the unit's system):")
    print(token)
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    from services.intake import tokens
    from shared.db import unit_of_work

    if bool(args.token_id) == bool(args.unit):
        print("investflow tokens revoke: give a TOKEN_ID or --unit UNIT", file=sys.stderr)
        return 2
    with unit_of_work(_token_engine(args)) as session:
        if args.unit:
            n = tokens.revoke_unit(session, args.unit, _now())
            print(f"revoked {n} token(s) of {args.unit}")
            return 0
        row = tokens.revoke(session, args.token_id, _now())
    if row is None:
        print(f"investflow tokens revoke: no token {args.token_id}", file=sys.stderr)
        return 1
    print(f"revoked {row.token_id} ({row.unit})")
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    from services.intake import tokens
    from shared.db import unit_of_work

    with unit_of_work(_token_engine(args)) as session:
        rows = tokens.list_tokens(session, args.unit)
    print(f"{'id':<10} {'unit':<10} {'created':<20} {'state':<28} label")
    for r in rows:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "live"
        print(
            f"{r.token_id:<10} {r.unit:<10} {r.created_at:%Y-%m-%d %H:%M:%S}  {state:<28} {r.label}"
        )
    return 0


# ---- database init -----------------------------------------------------------------------------


def _create_database_if_missing(url: str) -> str | None:
    """PostgreSQL: create the URL's database when the server lacks it. Returns what was done."""
    from sqlalchemy.engine import make_url

    from shared.db import normalise_url

    parsed = make_url(normalise_url(url))
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        return None
    import psycopg

    admin = parsed.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
        ).fetchone()
        if exists:
            return None
        conn.execute(f'CREATE DATABASE "{parsed.database}"')
    return f"created database {parsed.database}"


def db_init(services: Iterable[ServiceSpec] = SERVICES) -> list[str]:
    """Every service's database (PostgreSQL: created when missing) and tables; idempotent."""
    import importlib

    from shared.db import create_tables, make_engine

    settings = Settings.from_env()
    report = []
    for spec in services:
        url = settings.database_url_for(spec.name)
        created = _create_database_if_missing(url)
        if created:
            report.append(f"{spec.name}: {created}")
        store = importlib.import_module(f"{spec.module}.store")
        engine = make_engine(url)
        try:
            create_tables(engine, store.TABLES)
        finally:
            engine.dispose()
        report.append(f"{spec.name}: {len(store.TABLES)} tables ok")
    return report


def _db_init(_: argparse.Namespace) -> int:
    try:
        for line in db_init():
            print(line)
    except Exception as exc:
        print(f"investflow db init: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


# ---- registration ------------------------------------------------------------------------------


def register_nats(nats_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    users = nats_sub.add_parser(
        "users",
        help="write nats-server's users and permissions from the unit directory (nkeys)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    users.add_argument("--units", default=str(REPO_ROOT / "deploy" / "units.yaml"))
    users.add_argument(
        "--secrets",
        required=True,
        help="directory OUTSIDE the repo for the seeds (nats/units/<CODE>.nk, nats/services/…)",
    )
    users.add_argument("--out", default=None, help="the config file to write; default: stdout")
    users.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="NAME",
        help="new seed for this unit code / service / center / admin (repeatable)",
    )
    users.add_argument(
        "--tls-cert", default=None, help="server certificate path, as nats-server sees it"
    )
    users.add_argument("--tls-key", default=None, help="server key path, as nats-server sees it")
    users.add_argument("--allow-inside-repo", action="store_true", help=argparse.SUPPRESS)
    users.set_defaults(func=_nats_users)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tokens = sub.add_parser("tokens", help="the units' HTTP bearer tokens (intake)")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", default=None, help="default: INTAKE_DATABASE_URL / DATABASE_URL / SQLite"
    )
    issue = tsub.add_parser("issue", parents=[common], help="issue a token for UNIT; printed once")
    issue.add_argument("unit")
    issue.add_argument("--label", default="", help="what it is for, e.g. the unit's system")
    issue.set_defaults(func=_tokens_issue)
    revoke = tsub.add_parser(
        "revoke", parents=[common], help="revoke TOKEN_ID, or --unit UNIT's all"
    )
    revoke.add_argument("token_id", nargs="?")
    revoke.add_argument("--unit", default=None)
    revoke.set_defaults(func=_tokens_revoke)
    listing = tsub.add_parser("list", parents=[common], help="tokens (ids, never the tokens)")
    listing.add_argument("--unit", default=None)
    listing.set_defaults(func=_tokens_list)

    db = sub.add_parser("db", help="service databases")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    init = dbsub.add_parser(
        "init", help="create each service's database (PostgreSQL) and tables; idempotent"
    )
    init.set_defaults(func=_db_init)
