"""`investflow claims list|resolve`: held duplicate claims (一个项目一个认领) and the Center's
resolution of one.

`list` reads intake's database, as `investflow tokens` does (the held claims are intake's: a
later report of a project is held there and goes nowhere else). `resolve` publishes the
Center's `intake.CENTER.claim` message, so intake checks and records it like any other
message (a refusal comes back on `intake.rejected.CENTER.claim`); resolving the same claim
again changes nothing (one idempotency key per claim).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    claims = sub.add_parser(
        "claims", help="held duplicate claims (重复认领): list them, resolve one as the Center"
    )
    csub = claims.add_subparsers(dest="claims_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", default=None, help="default: INTAKE_DATABASE_URL / DATABASE_URL / SQLite"
    )
    common.add_argument(
        "--data", type=Path, default=None, help="the data dir the system runs with: its intake.db"
    )
    listing = csub.add_parser("list", parents=[common], help="the held claims and what they hold")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(func=cmd_list)
    resolve = csub.add_parser(
        "resolve",
        help="resolve a held claim as the Center: --assign PROJECT_ID (the claim that stands) "
        "or --distinct (two projects after all)",
    )
    resolve.add_argument("project_id", help="the held report's project id")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--assign", metavar="PROJECT_ID", default=None)
    how.add_argument("--distinct", action="store_true")
    resolve.add_argument("--reason", required=True, help="why (kept with the resolution)")
    resolve.add_argument("--url", default=None, help="NATS server (default: $NATS_URL)")
    resolve.set_defaults(func=cmd_resolve)


def held(engine: Any) -> list[dict[str, Any]]:
    from services.intake import store
    from shared.db import unit_of_work

    with unit_of_work(engine) as session:
        out = []
        for p in store.held_claims(session):
            first = store.get_project(session, p.duplicate_of or "")
            out.append(
                {
                    "project_id": p.project_id,
                    "unit": p.attracting_unit,
                    "title": p.title,
                    "investor": p.investor_name,
                    "duplicate_of": p.duplicate_of,
                    "first_unit": first.attracting_unit if first else None,
                    "reported_on": p.reported_on.isoformat(),
                }
            )
        return out


def cmd_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from investflow.deploy_cli import TokenDbError, _token_engine

    out = out or sys.stdout
    try:
        engine = _token_engine(args)
    except TokenDbError as exc:
        print(f"investflow claims list: {exc}", file=sys.stderr)
        return 1
    try:
        rows = held(engine)
    finally:
        engine.dispose()
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=2), file=out)
        return 0
    if not rows:
        print("no held duplicate claims / 无待认定的重复认领", file=out)
        return 0
    print(
        "held / 待认定            unit     duplicate of / 疑似重复        first unit  title",
        file=out,
    )
    for r in rows:
        print(
            f"{r['project_id']:<24}{r['unit']:<9}{r['duplicate_of']:<30}{r['first_unit'] or '':<12}"
            f"{r['title']}",
            file=out,
        )
    print(
        f"{len(rows)} held; resolve one: investflow claims resolve PROJECT_ID "
        "(--assign PROJECT_ID | --distinct) --reason TEXT",
        file=out,
    )
    return 0


def claim_message(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": args.project_id,
        "resolution": "distinct" if args.distinct else "assign",
        "reason": args.reason,
    }
    if args.assign:
        body["assign_to"] = args.assign
    return body


def cmd_resolve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shared.contract import Claim
    from shared.settings import Settings

    out = out or sys.stdout
    body = claim_message(args)
    try:
        Claim.model_validate(body)
    except Exception as exc:
        print(f"investflow claims resolve: {exc}", file=sys.stderr)
        return 2
    url = args.url or Settings.from_env().nats_url
    try:
        duplicate = asyncio.run(_publish(url, body))
    except Exception as exc:
        print(f"investflow claims resolve: cannot publish to {url}: {exc}", file=sys.stderr)
        return 1
    state = "already sent / 已发送过" if duplicate else "sent / 已发送"
    print(f"intake.CENTER.claim {args.project_id}: {body['resolution']} ({state})", file=out)
    return 0


async def _publish(url: str, body: dict[str, Any]) -> bool:
    import hashlib

    from shared.settings import Settings, connect_nats

    data = json.dumps(body, ensure_ascii=False, sort_keys=True).encode()
    # The same resolution sent twice is a re-send; a different one after a refusal is new.
    key = f"claim:{body['project_id']}:{hashlib.sha256(data).hexdigest()[:16]}"
    nc = await connect_nats(Settings.from_env(), url, max_reconnect_attempts=1)
    try:
        ack = await nc.jetstream().publish(
            "intake.CENTER.claim", data, headers={"Nats-Msg-Id": key}
        )
        return bool(ack.duplicate)
    finally:
        await nc.close()
