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
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.settings import REPO_ROOT, Settings

from .services import SERVICES, ServiceSpec

RULES_BUCKET = "investflow_rulesets"  # shared.rules.published.BUCKET (imported lazily there)
KV_STREAM = f"KV_{RULES_BUCKET}"

# The account that holds every stream. Only the admin signs in to it: a client can name any
# reply subject, and JetStream sends its acknowledgement (or a pulled message) there, so a
# client in the streams' account could get that stored in any stream. Every other identity
# has an account of its own and reaches the streams through imports of exactly what it
# needs; replies to it are routed back into its own account, where no stream is.
STREAMS_ACCOUNT = "INVESTFLOW"

# Each identity's reply subjects. Pulled messages, acks and API answers come back mapped to
# its account whatever the prefix; pushed deliveries (ordered consumers, KV watches) are
# exported to it on this prefix only, so nobody receives another's.
SHARED_INBOX = "_INBOX.>"


def unit_inbox(unit: str) -> str:
    """The inbox prefix a unit's client must connect with (nats-py: inbox_prefix=...)."""
    return f"_INBOX_{unit}"


def own_inbox(name: str) -> str:
    """The inbox prefix a service or the Center's tools connect with (NATS_INBOX_PREFIX)."""
    return f"_INBOX_{name}"


# The units' inboxes (shared/streams.py): one stream per unit, expanded from the directory.
UNIT_INBOXES = "INTAKE_<unit>"


@dataclass(frozen=True)
class ServiceAccess:
    """What a service's JetStream consumers read and what it emits."""

    consumes: tuple[str, ...]  # stream names; the durable consumer is the service's own
    publishes: tuple[str, ...]  # subjects (wildcards allowed)
    why: str = ""
    follows_rules: bool = False  # watches the published rulesets (shared/rules/published.py)
    hears_rules_loaded: bool = False  # hears every rules service's rules.loaded.<service>
    # Consumes through shared/partitions.py: one durable per partition, `<service>-<name>`,
    # and leases in the KV bucket; `partitions(units)` gives (name, stream, filter) of each.
    partitions: Callable[[Iterable[str]], tuple[tuple[str, str, str], ...]] | None = None
    # The keyed streams it reads by partition (shared/consumers.py): it looks up how each
    # is partitioned (STREAM.INFO).
    keyed: tuple[str, ...] = ()


def _inbox_partitions(units: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    from shared.streams import inbox_partitions

    return inbox_partitions(units)


def _keyed(
    *reads: tuple[str, str | None],
) -> Callable[[Iterable[str]], tuple[tuple[str, str, str], ...]]:
    """The durables of a service reading keyed streams: (stream, one event type or None), for
    INVESTFLOW_PARTITIONS partitions (generate the users again after changing it)."""

    def entries(units: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
        from shared.consumers import Reads, durables
        from shared.streams import partitions_setting

        del units
        n = partitions_setting()
        return tuple(e for stream, only in reads for e in durables(Reads(stream, "", only), n))

    return entries


# Checked against the services' own FastStream brokers by tests/deploy/test_nats_auth.py:
# a service that starts reading or emitting something new fails that test until it is here.
SERVICE_ACCESS: dict[str, ServiceAccess] = {
    "intake": ServiceAccess(
        consumes=("INTAKE", UNIT_INBOXES),
        # intake.*.*: the HTTP gateway publishes a request onto the unit's subject after
        # checking that unit's bearer token; the stream stays the one write path.
        publishes=("project.*.*", "intake.rejected.*.*", "intake.*.*"),
        why="validates inbound events, emits project.* and rejections",
        partitions=_inbox_partitions,
    ),
    "review": ServiceAccess(
        consumes=("PROJECT",),
        publishes=("review.*.*",),
        why="PROJECT → REVIEW (联审联批, 认定)",
        follows_rules=True,
        partitions=_keyed(("PROJECT", None)),
        keyed=("PROJECT",),
    ),
    "scoring": ServiceAccess(
        consumes=("PROJECT", "REVIEW"),
        publishes=("score.*.*",),
        why="PROJECT + REVIEW → SCORE (考核计分)",
        follows_rules=True,
        partitions=_keyed(("PROJECT", None), ("REVIEW", "review.recognition")),
        keyed=("PROJECT", "REVIEW"),
    ),
    "notify": ServiceAccess(
        consumes=("PROJECT", "REVIEW", "SCORE"),
        publishes=("notify.*.*",),
        why="PROJECT + REVIEW + SCORE → NOTIFY",
        follows_rules=True,  # its thresholds are the notify ruleset, published like the others
        partitions=_keyed(("PROJECT", None), ("REVIEW", None), ("SCORE", None)),
        keyed=("PROJECT", "REVIEW", "SCORE"),
    ),
    "board": ServiceAccess(
        consumes=("PROJECT", "REVIEW", "SCORE", "NOTIFY"),
        publishes=(),
        why="PROJECT + REVIEW + SCORE + NOTIFY → the board's pages (挂图作战); reads rules.loaded.*",
        hears_rules_loaded=True,
        partitions=_keyed(("PROJECT", None), ("REVIEW", None), ("SCORE", None), ("NOTIFY", None)),
        keyed=("PROJECT", "REVIEW", "SCORE", "NOTIFY"),
    ),
}


@dataclass(frozen=True)
class Identity:
    name: str  # unit code, service name, `center` or `admin`
    role: str  # unit | service | ops
    description: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # Of `subscribe`: live messages another identity publishes, as (subject, publisher): the
    # publisher's account exports them to this one (a message that entered the streams'
    # account through an import travels no further). The rest are its own reply subjects.
    delivered: tuple[tuple[str, str], ...] = ()
    # Requests it sends to another identity, as (subject, responder): the responder's account
    # exports them as a service, and the answer comes back to this account.
    requests: tuple[tuple[str, str], ...] = ()
    # It answers requests (`rules.live.<service>`): may publish to their reply subjects.
    responds: bool = False

    @property
    def seed_file(self) -> str:
        """Relative to the secrets dir: nats/units/TS01.nk, nats/services/review.nk, nats/ops/admin.nk."""
        folder = {"unit": "units", "service": "services"}.get(self.role, "ops")
        return f"nats/{folder}/{self.name}.nk"

    @property
    def account(self) -> str:
        if self.name == "admin":
            return STREAMS_ACCOUNT
        return {"unit": "UNIT", "service": "SVC"}.get(self.role, "OPS") + f"_{self.name}"


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
# Consumers on the bucket's stream only: no service's durable lives there.
RULES_READ = (
    f"$JS.API.STREAM.INFO.{KV_STREAM}",
    f"$JS.API.STREAM.CREATE.{KV_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{KV_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{KV_STREAM}.>",
    f"$JS.API.CONSUMER.INFO.{KV_STREAM}.*",
    f"$JS.API.CONSUMER.DELETE.{KV_STREAM}.*",
    f"$JS.FC.{KV_STREAM}.>",
)


LEASES_BUCKET = "investflow_leases"  # shared.partitions.DEFAULT_BUCKET
LEASES_STREAM = f"KV_{LEASES_BUCKET}"


def leases_api(service: str) -> tuple[str, ...]:
    """A partitioned service's leases (shared/partitions.py): create the bucket when it is the
    first, read it (get, list the keys through an ordered consumer), and write its own keys
    `<service>.>` only."""
    return (
        f"$JS.API.STREAM.INFO.{LEASES_STREAM}",
        f"$JS.API.STREAM.CREATE.{LEASES_STREAM}",
        f"$JS.API.DIRECT.GET.{LEASES_STREAM}.>",
        f"$JS.API.STREAM.MSG.GET.{LEASES_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{LEASES_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{LEASES_STREAM}.>",
        f"$JS.API.CONSUMER.INFO.{LEASES_STREAM}.*",
        f"$JS.API.CONSUMER.DELETE.{LEASES_STREAM}.*",
        f"$JS.FC.{LEASES_STREAM}.>",
        f"$KV.{LEASES_BUCKET}.{service}.>",
    )


def partition_consumers(spec: ServiceSpec, units: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(stream, durable) of every consumer the service runs."""
    access = SERVICE_ACCESS[spec.name]
    if access.partitions is not None:
        return [(stream, f"{spec.name}-{name}") for name, stream, _ in access.partitions(units)]
    return [(stream, spec.durable or spec.name) for stream in _streams(access, units)]


def unit_identity(code: str, description: str) -> Identity:
    return Identity(
        name=code,
        role="unit",
        description=description,
        publish=(f"intake.{code}.*",),
        subscribe=(f"intake.rejected.{code}.>", f"{unit_inbox(code)}.>"),
        delivered=((f"intake.rejected.{code}.>", "intake"),),
    )


def _streams(access: ServiceAccess, units: Iterable[str]) -> list[str]:
    from shared.streams import unit_stream_name

    out: list[str] = []
    for stream in access.consumes:
        out += [unit_stream_name(u) for u in sorted(units)] if stream == UNIT_INBOXES else [stream]
    return out


def service_identity(spec: ServiceSpec, units: Iterable[str] = ()) -> Identity:
    access = SERVICE_ACCESS.get(spec.name)
    if access is None:
        raise SystemExit(
            f"investflow nats users: no NATS permissions are defined for service {spec.name!r}; "
            f"add it to SERVICE_ACCESS in {__file__}"
        )
    durable = spec.durable or spec.name
    # $JS.API.INFO: importing it from the streams' account is what stops the server from
    # answering this account's JetStream requests itself ("JetStream not enabled for
    # account"; nats-server enableJetStreamInfoServiceImportOnly).
    publish = [*access.publishes, f"dlq.{spec.name}.>", "$JS.API.INFO"]
    publish += [f"$JS.API.STREAM.INFO.{stream}" for stream in access.keyed]
    for stream, name in partition_consumers(spec, units):
        publish += consumer_api(stream, name)
    if access.partitions is not None:
        for stream in sorted({stream for stream, _ in partition_consumers(spec, units)}):
            # The one durable per stream of earlier releases: its ack floor is where the
            # partition's consumer starts, then it is deleted (shared/partitions.py).
            publish += (
                f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
                f"$JS.API.CONSUMER.DELETE.{stream}.{durable}",
            )
        publish += leases_api(spec.name)
    subscribe = [SHARED_INBOX, f"{own_inbox(spec.name)}.>"]
    if spec.rules or access.follows_rules:
        # Its own load announcements come back within its account (scoring re-settles
        # records a new version now covers); the Center hears them through an export.
        publish += [*RULES_READ, f"rules.loaded.{spec.name}"]
        # And it says what it runs when `rules publish` asks (rules.live.<service>).
        subscribe += [f"rules.loaded.{spec.name}", f"rules.live.{spec.name}"]
    delivered: list[tuple[str, str]] = []
    if access.hears_rules_loaded:
        delivered = [
            (f"rules.loaded.{other.name}", other.name)
            for other in SERVICES
            if other.rules or SERVICE_ACCESS[other.name].follows_rules
        ]
        subscribe.append("rules.loaded.*")
    return Identity(
        name=spec.name,
        role="service",
        description=f"service {spec.name}: {access.why}",
        # Once each: the server refuses a config importing one subject twice (its durables
        # on one stream share STREAM.MSG.GET).
        publish=tuple(dict.fromkeys(publish)),
        subscribe=tuple(subscribe),
        delivered=tuple(delivered),
        responds=bool(spec.rules or access.follows_rules),
    )


def _family(subject: str) -> str:
    """`review.*.*` → `review.>`; `intake.rejected.*.*` → `intake.rejected.>`."""
    head = 2 if subject.startswith("intake.rejected.") else 1
    return ".".join(subject.split(".")[:head]) + ".>"


def center_staff(services: Iterable[ServiceSpec] = SERVICES) -> Identity:
    """The Center's tools hear every service's events live, from the service that emits them."""
    delivered: list[tuple[str, str]] = []
    requests: list[tuple[str, str]] = []
    for spec in services:
        access = SERVICE_ACCESS[spec.name]
        if spec.rules or access.follows_rules:
            requests.append((f"rules.live.{spec.name}", spec.name))
        delivered += [(p, spec.name) for p in access.publishes if not p.startswith("intake.*")]
        delivered.append((f"dlq.{spec.name}.>", spec.name))
        if spec.rules or access.follows_rules:
            delivered.append((f"rules.loaded.{spec.name}", spec.name))
    return Identity(
        name="center",
        role="ops",
        description="the Center's staff tools (项目建设服务中心): publish/roll back rulesets, read every stream",
        publish=(
            f"$KV.{RULES_BUCKET}.>",
            f"$JS.API.DIRECT.GET.{KV_STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{KV_STREAM}",
            f"$JS.API.STREAM.CREATE.{KV_STREAM}",
            f"$JS.API.CONSUMER.CREATE.{KV_STREAM}",
            f"$JS.API.CONSUMER.CREATE.{KV_STREAM}.>",
            f"$JS.FC.{KV_STREAM}.>",
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.INFO.*",
            # Reading any stream by sequence; no consumer on any stream but the rulesets
            # bucket's, so no service's durable consumer can be redefined from here.
            "$JS.API.STREAM.MSG.GET.*",
            "$JS.API.CONSUMER.LIST.*",
            "$JS.API.CONSUMER.NAMES.*",
            "$JS.API.CONSUMER.INFO.*.*",
        ),
        # Any subscription over what is delivered: `rules.loaded.*`, `project.>`, ...
        requests=tuple(requests),
        subscribe=(
            "rules.loaded.*",
            *sorted({_family(d[0]) for d in delivered if not d[0].startswith("rules.")}),
            f"{own_inbox('center')}.>",
            SHARED_INBOX,
        ),
        delivered=tuple(delivered),
    )


CENTER_STAFF = center_staff()

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
    out += [service_identity(spec, directory.units) for spec in services]
    out += [center_staff(services), ADMIN]
    return out


def _multi_response(subject: str) -> bool:
    """Pulls answer one request with many messages; everything else answers once."""
    return subject.startswith("$JS.API.CONSUMER.MSG.NEXT.")


def _pushes(who: Identity) -> list[str]:
    """The inbox prefix JetStream pushes to (ordered consumers, KV watches) for `who`."""
    if who.role == "unit":
        return []  # units read nothing through consumers
    inbox = own_inbox(who.name)
    return [f"{inbox}.>"] if any(s == f"{inbox}.>" for s in who.subscribe) else []


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
        # A fresh file of our own (O_EXCL, 0600 from the start): a leftover `<name>.tmp` or a
        # symlink planted there can neither lend the seed its mode nor receive it.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(seed + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
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
        f"# One account per identity; the streams live in {STREAMS_ACCOUNT}, which only the admin",
        "# signs in to (docs/operations.md, the trust model).",
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
    by_name = {who.name: who for who in people}
    # exports[account][(kind, subject)] = importing accounts; imports[account] = (kind, subject, from)
    exports: dict[str, dict[tuple[str, str], set[str]]] = {}
    imports: dict[str, list[tuple[str, str, str]]] = {}
    for who in people:
        if who.account == STREAMS_ACCOUNT:
            continue
        wanted = [("service", subject, STREAMS_ACCOUNT) for subject in who.publish]
        wanted += [("stream", subject, STREAMS_ACCOUNT) for subject in _pushes(who)]
        wanted += [("stream", subject, by_name[src].account) for subject, src in who.delivered]
        wanted += [("service", subject, by_name[src].account) for subject, src in who.requests]
        for kind, subject, source in wanted:
            exports.setdefault(source, {}).setdefault((kind, subject), set()).add(who.account)
            imports.setdefault(who.account, []).append((kind, subject, source))

    def export_lines(account: str) -> list[str]:
        out = ["    exports = ["]
        for (kind, subject), to in sorted(exports.get(account, {}).items()):
            multi = kind == "service" and _multi_response(subject)
            extra = ", response_type: stream" if multi else ""
            out.append(
                f"      {{ {kind}: {json.dumps(subject)}{extra}, accounts: {_quoted(sorted(to))} }}"
            )
        return [*out, "    ]"]

    def user(who: Identity) -> list[str]:
        return [
            f"      # {who.description}",
            "      {",
            f"        nkey: {json.dumps(keys[who.name])}",
            "        permissions: {",
            f"          publish: {{ allow: {_quoted([*who.publish, *(r[0] for r in who.requests)])} }}",
            f"          subscribe: {{ allow: {_quoted(who.subscribe)} }}",
            *(["          allow_responses: true"] if who.responds else []),
            "        }",
            "      }",
        ]

    lines += ["accounts {", f"  {STREAMS_ACCOUNT} {{", "    jetstream: enabled", "    users = ["]
    for who in people:
        if who.account == STREAMS_ACCOUNT:
            lines += user(who)
    lines += ["    ]", *export_lines(STREAMS_ACCOUNT), "  }"]
    for who in people:
        if who.account == STREAMS_ACCOUNT:
            continue
        lines += [f"  {who.account} {{", "    users = ["]
        lines += user(who)
        lines += ["    ]", *export_lines(who.account), "    imports = ["]
        for kind, subject, source in imports.get(who.account, []):
            lines.append(
                f"      {{ {kind}: {{ account: {source}, subject: {json.dumps(subject)} }} }}"
            )
        lines += ["    ]", "  }"]
    lines += ["}", ""]
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


# ---- the cluster's node configs ----------------------------------------------------------------

CLUSTER_DIR = REPO_ROOT / "deploy" / "nats" / "cluster"


def cluster_configs(size: int = 3, host: str = "nats-{n}") -> dict[str, str]:
    """{file name: text} of each node's config: `host` names node n as the others and the
    services reach it (compose: its service name). Same ports, JetStream limits and users
    (auth.conf beside it, from `investflow nats users`) as the single-node config."""
    from .nats_server import ClusterNode, render_node_config

    nodes = [ClusterNode(f"investflow-nats-{n}", host.format(n=n)) for n in range(1, size + 1)]
    header = (
        f"# Node {{n}} of {size} of the investflow JetStream cluster (docs/operations.md, single\n"
        f"# node vs cluster). Generated by `investflow nats cluster-config --nodes {size}`; do not\n"
        "# edit by hand. The route port (6222) belongs on the nodes' private network only."
    )
    return {
        f"nats-{n}.conf": render_node_config(node, nodes, header=header.format(n=n))
        for n, node in enumerate(nodes, 1)
    }


def _cluster_config(args: argparse.Namespace) -> int:
    if args.nodes < 3 or args.nodes % 2 == 0:
        print(
            "investflow nats cluster-config: give an odd number of nodes, 3 or more: a majority "
            "must survive the loss of one",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in cluster_configs(args.nodes, args.host).items():
        (out / name).write_text(text, encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


# ---- HTTP tokens -------------------------------------------------------------------------------


class TokenDbError(Exception):
    """The intake database the token command would use is not there: say where it looked."""


def _token_database_url(args: argparse.Namespace) -> str:
    """--database-url, else --data DIR's intake.db, else the service's own resolution."""
    if args.database_url:
        return args.database_url
    if args.data is not None:
        return f"sqlite:///{Path(args.data) / 'intake.db'}"
    settings = Settings.from_env()
    own = os.environ.get("INTAKE_DATABASE_URL") or settings.database_url
    return own or f"sqlite:///{settings.data_dir / 'intake.db'}"


def _token_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.intake import store
    from shared.db import create_tables, make_engine

    url = _token_database_url(args)
    # A token written to a database the running intake does not read is a token nobody honours:
    # never create the SQLite file here (investflow up / db init do).
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise TokenDbError(
            f"no intake database at {url.removeprefix('sqlite:///')}: pass the system's --data DIR "
            "(as given to investflow up) or --database-url / 未找到报送(intake)数据库，"
            "请用 --data 指定系统的数据目录"
        )
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        raise TokenDbError(f"cannot open the intake database {engine.url!r}: {exc}") from exc
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

    cluster = nats_sub.add_parser(
        "cluster-config",
        help="write each node's nats-server config for a JetStream cluster (deploy/nats/cluster)",
    )
    cluster.add_argument("--nodes", type=int, default=3)
    cluster.add_argument(
        "--host",
        default="nats-{n}",
        help="how the nodes reach node {n} (default nats-{n}, the compose service names)",
    )
    cluster.add_argument("--out", default=str(CLUSTER_DIR))
    cluster.set_defaults(func=_cluster_config)


def _token_command(fn):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except TokenDbError as exc:
            print(f"investflow tokens {args.tokens_command}: {exc}", file=sys.stderr)
            return 1

    return run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tokens = sub.add_parser("tokens", help="the units' HTTP bearer tokens (intake)")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", default=None, help="default: INTAKE_DATABASE_URL / DATABASE_URL / SQLite"
    )
    common.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the data dir the system runs with (investflow up --data): its intake.db",
    )
    issue = tsub.add_parser("issue", parents=[common], help="issue a token for UNIT; printed once")
    issue.add_argument("unit")
    issue.add_argument("--label", default="", help="what it is for, e.g. the unit's system")
    issue.set_defaults(func=_token_command(_tokens_issue))
    revoke = tsub.add_parser(
        "revoke", parents=[common], help="revoke TOKEN_ID, or --unit UNIT's all"
    )
    revoke.add_argument("token_id", nargs="?")
    revoke.add_argument("--unit", default=None)
    revoke.set_defaults(func=_token_command(_tokens_revoke))
    listing = tsub.add_parser("list", parents=[common], help="tokens (ids, never the tokens)")
    listing.add_argument("--unit", default=None)
    listing.set_defaults(func=_token_command(_tokens_list))

    db = sub.add_parser("db", help="service databases")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    init = dbsub.add_parser(
        "init", help="create each service's database (PostgreSQL) and tables; idempotent"
    )
    init.set_defaults(func=_db_init)
