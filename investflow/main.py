"""`investflow`: run the system, feed it, and the operators' and rule maintainers' tools."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

from shared.settings import REPO_ROOT, Settings

from .nats_server import free_port

DEFAULT_SAMPLES = REPO_ROOT / "samples" / "year-2022.jsonl"
# The HTTP services besides intake (--http-port): each takes --<name>-port; by default a free
# port, printed on start (a fixed one for a Prometheus scrape config: docs/operations.md).
OTHER_HTTP_SERVICES = ("scoring", "review", "notify", "board")


def _print_ready(system) -> None:  # type: ignore[no-untyped-def]
    print(f"NATS: {system.nats_url}", flush=True)
    print(f"HTTP: {system.http_url}", flush=True)
    for name, url in system.http_urls.items():
        if name not in ("intake", "board"):
            print(f"HTTP {name}: {url}", flush=True)
    if "board" in system.http_urls:
        print(f"BOARD: {system.http_urls['board']}/", flush=True)


async def _up(args: argparse.Namespace) -> int:
    from .runtime import StartupError, running_system

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = {name: getattr(args, f"{name}_port") for name in OTHER_HTTP_SERVICES}
        # A cluster's nodes take free loopback ports unless --nats-port names the first one's.
        nats_port = args.nats_port or (free_port() if args.cluster > 1 else 4222)
        async with running_system(
            Path(args.data), nats_port, args.http_port, http_ports=ports, cluster=args.cluster
        ) as system:
            _print_ready(system)
            await stop.wait()
            print("stopping …", flush=True)
    except StartupError as exc:
        print(f"investflow up: {exc}", file=sys.stderr)
        return 1
    return 0


# The sample year is 2022: notify judges deadlines by the latest event's date, not today's,
# and records what it would send instead of mailing the placeholder addresses.
DEMO_ENV = {
    "NOTIFY_CLOCK": "business",
    "NOTIFY_DRY_RUN": "1",
    "NOTIFY_TICK_S": "2",
    "REVIEW_CLOCK": "business",  # review dates a replayed document by the business date
    "BOARD_CLOCK": "business",  # the board's lights count days on the same business clock
}


async def _settle_notify(data: Path, settle_s: float = 600.0) -> dict[str, dict[str, int]]:
    """The scheduler and the deliveries run beside the consumers: wait until the scheduler
    has planned up to the year's last business day and the last deliveries are recorded."""
    from services.notify.summary import counts_by_cause, scheduler_caught_up

    notify_db = Settings.from_env().database_url or f"sqlite:///{data / 'notify.db'}"
    deadline = time.monotonic() + settle_s
    counts = counts_by_cause(notify_db)
    while time.monotonic() < deadline and (
        not scheduler_caught_up(notify_db)
        or any(by.get("pending") or by.get("sending") for by in counts.values())
    ):
        await asyncio.sleep(1)
        counts = counts_by_cause(notify_db)
    if not scheduler_caught_up(notify_db):
        print("  (notify's scheduler had not caught up; its counts are partial)", flush=True)
    return counts


async def _print_service_summaries(
    data: Path, counts: dict[str, dict[str, int]], stream_sent: int
) -> None:
    """Each service's own account of the year, read from its own database."""
    from services.notify.summary import render_counts
    from services.scoring.scoreboard import render_for_demo

    from .summary import notify_consistency

    print("\nScoreboard 2022 / 考核计分:", flush=True)
    print(render_for_demo(data_dir=data, year=2022), flush=True)
    print("\n" + render_counts(counts), flush=True)
    print(notify_consistency(stream_sent, counts), flush=True)


async def _keep_running(system) -> None:  # type: ignore[no-untyped-def]
    """`demo --keep`: leave the system up for a look at the board, until Ctrl-C."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"\nThe system stays up (--keep). BOARD: {system.http_urls.get('board', '')}/\n"
        "Ctrl-C stops it / 按 Ctrl-C 停止.",
        flush=True,
    )
    await stop.wait()
    print("stopping …", flush=True)


async def _demo(args: argparse.Namespace) -> int:
    from .feed import feed_file
    from .runtime import StartupError, running_system, wait_until_idle
    from .summary import (
        amendments_summary,
        caused_by_claims,
        committee_summary,
        rejection_reasons,
        render,
        subject_counts,
    )

    samples = Path(args.samples)
    if not samples.exists():
        print(
            f"investflow demo: {samples} not found (regenerate with: python -m samples.generate)",
            file=sys.stderr,
        )
        return 1
    with tempfile.TemporaryDirectory(prefix="investflow-demo-") as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        try:
            async with running_system(data, free_port(), free_port(), extra_env=DEMO_ENV) as system:
                _print_ready(system)
                print(f"Feeding {samples.name} …", flush=True)
                fed = await feed_file(system.js, samples)
                print(
                    f"Fed {fed.published} messages in {fed.seconds:.1f}s "
                    f"({fed.dropped_as_duplicate} re-sends dropped by JetStream's duplicate window)",
                    flush=True,
                )
                started = time.monotonic()
                await wait_until_idle(system.js, timeout=args.timeout, progress=True)
                print(f"All services drained in {time.monotonic() - started:.1f}s.", flush=True)
                # Both notify counts after the same drain: deliveries settled, their
                # notify.sent events published, the stream read, then the table read again;
                # a late scheduler row (seen: the table read 28 while the stream held 30)
                # means another round, so the two counts describe one moment.
                notify_counts = await _settle_notify(data)
                for _ in range(10):
                    await wait_until_idle(system.js, timeout=args.timeout, progress=False)
                    counts = await subject_counts(system.js)
                    again = await _settle_notify(data)
                    if again == notify_counts:
                        break
                    notify_counts = again
                print(
                    render(
                        counts,
                        await rejection_reasons(system.js),
                        await caused_by_claims(system.js),
                    ),
                    flush=True,
                )
                print(await committee_summary(system.js), flush=True)
                print(await amendments_summary(system.js), flush=True)
                await _print_service_summaries(data, notify_counts, counts.get("notify.sent", 0))
                if args.keep:
                    await _keep_running(system)
        except StartupError as exc:
            print(f"investflow demo: {exc}", file=sys.stderr)
            return 1
    print("\nDemo finished; everything stopped.", flush=True)
    return 0


async def _nats_init(args: argparse.Namespace) -> int:
    from shared.settings import connect_nats
    from shared.streams import ensure_streams

    settings = Settings.from_env()
    url = args.url or settings.nats_url
    try:
        nc = await connect_nats(settings, url, max_reconnect_attempts=1)
    except Exception as exc:
        print(f"investflow nats init: cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    try:
        # The buckets are made here too, by the admin user, with the streams' replicas (so
        # services only read and watch the rulesets); the leases bucket's TTL is the
        # services' ack wait (shared/partitions.py).
        for line in await ensure_streams(
            nc.jetstream(), settings.duplicate_window_s, lease_s=settings.ack_wait_s
        ):
            print(line)
    finally:
        await nc.close()
    return 0


async def _feed(args: argparse.Namespace) -> int:
    from shared.settings import connect_nats

    from .feed import feed_file

    nc = await connect_nats(Settings.from_env(), args.url, max_reconnect_attempts=1)
    try:
        fed = await feed_file(nc.jetstream(), Path(args.file))
        print(
            f"published {fed.published} ({fed.dropped_as_duplicate} dropped as duplicates) in {fed.seconds:.1f}s"
        )
    finally:
        await nc.close()
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    from .asyncapi import write_asyncapi

    path = write_asyncapi(Path(args.out))
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="investflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run NATS and every service until stopped (Ctrl-C)")
    up.add_argument(
        "--data",
        default=str(REPO_ROOT / "data"),
        help="data dir: JetStream store, SQLite files, logs",
    )
    up.add_argument(
        "--nats-port",
        type=int,
        default=None,
        help="default 4222; with --cluster, the first node's (default: free ports)",
    )
    up.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="N nats-servers on loopback as one JetStream cluster, streams kept on 3 "
        "(docs/operations.md, single node vs cluster)",
    )
    up.add_argument("--http-port", type=int, default=8080, help="intake's HTTP port (the units')")
    # Every service's /health and /metrics (and scoring's scoreboard) on a port of its own.
    for name in OTHER_HTTP_SERVICES:
        up.add_argument(
            f"--{name}-port",
            type=int,
            default=0,
            help=f"{name}'s HTTP port (/health, /metrics); default: a free one, printed",
        )
    up.set_defaults(func=lambda a: asyncio.run(_up(a)))

    demo = sub.add_parser(
        "demo", help="up on free ports + feed the sample year + print the outcome + stop"
    )
    demo.add_argument("--samples", default=str(DEFAULT_SAMPLES))
    demo.add_argument("--data", default=None, help="keep the data here instead of a temporary dir")
    demo.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the services to drain"
    )
    demo.add_argument(
        "--keep", action="store_true", help="leave the system up after the summary (Ctrl-C stops)"
    )
    demo.set_defaults(func=lambda a: asyncio.run(_demo(a)))

    nats_cmd = sub.add_parser("nats", help="NATS administration")
    nats_sub = nats_cmd.add_subparsers(dest="nats_command", required=True)
    init = nats_sub.add_parser("init", help="create or update the JetStream streams (idempotent)")
    init.add_argument("--url", default=None, help="default: $NATS_URL")
    init.set_defaults(func=lambda a: asyncio.run(_nats_init(a)))
    from . import deploy_cli

    deploy_cli.register_nats(nats_sub)

    feed = sub.add_parser("feed", help="publish a JSON Lines file of inbound messages")
    feed.add_argument("file")
    feed.add_argument("--url", default=None, help="default: $NATS_URL")
    feed.set_defaults(func=lambda a: asyncio.run(_feed(a)))

    api = sub.add_parser("asyncapi", help="write the AsyncAPI document generated from the services")
    api.add_argument("--out", default=str(REPO_ROOT / "docs" / "asyncapi.yaml"))
    api.set_defaults(func=_asyncapi)

    # The rules tools live in their own module; a broken one must fail loudly, not vanish.
    if (Path(__file__).parent / "rules_cli.py").exists():
        from . import rules_cli

        rules_cli.register(sub)
    from . import notify_cli

    notify_cli.register(sub)
    from . import scoring_cli

    scoring_cli.register(sub)
    deploy_cli.register(sub)
    from . import claims_cli

    claims_cli.register(sub)
    from . import dlq_cli

    dlq_cli.register(sub)
    from services.board import cli as board_cli

    board_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
