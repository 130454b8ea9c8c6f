"""Scoring's commands: the scoreboard, exchange rates from CSV, and the what-if.

    investflow scoreboard --year 2022 [--quarter Q2] [--format table|csv|json]
    investflow rates load FILE.csv [--url nats://...] [--dry-run]
    investflow whatif FILE.yaml --year 2022 [--against live|DIR] [--set NAME=VALUE ...]

`whatif` is `investflow rules whatif` (investflow/rules_cli.py, docs/rules.md). `scoreboard`
and `whatif` read scoring's own database (this is scoring's admin tool), found as the service
finds it: --database-url, else $SCORING_DATABASE_URL, else $DATABASE_URL, else scoring.db in
--data (default $INVESTFLOW_DATA_DIR, else ./data). Neither writes anything.
`rates load` publishes the Center's rates events; the running system takes it from there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    board = subparsers.add_parser(
        "scoreboard",
        help="points, RMB counted, projects and rank per assessed subject; signing targets",
        description="The assessment scoreboard (招商引资考核计分) from scoring's database.",
    )
    board.add_argument("--year", type=int, required=True)
    board.add_argument("--quarter", default=None, help="Q1..Q4 (default: the whole year)")
    board.add_argument("--format", choices=["table", "csv", "json"], default="table")
    add_database_arguments(board)
    board.set_defaults(func=cmd_scoreboard)

    rates = subparsers.add_parser("rates", help="exchange rates (汇率) for scoring")
    rates_sub = rates.add_subparsers(dest="rates_command", required=True)
    load = rates_sub.add_parser(
        "load",
        help="publish rates from a CSV file (columns date, currency, cny_per_unit) as the Center",
        description="Checks the whole file first (errors name line and column) and publishes "
        "nothing unless it is clean; then one intake.CENTER.rates event per day. Loading the "
        "same file again changes nothing.",
    )
    load.add_argument("file", type=Path, metavar="FILE.csv")
    load.add_argument("--url", default=None, help="NATS server (default: $NATS_URL)")
    load.add_argument("--dry-run", action="store_true", help="check the file, publish nothing")
    load.set_defaults(func=cmd_rates_load)

    # `investflow whatif` is `investflow rules whatif` (one command, one code path).
    from .rules_cli import add_whatif_parser

    add_whatif_parser(subparsers)


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="scoring's database (default: $SCORING_DATABASE_URL, $DATABASE_URL, or DATA/scoring.db)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the data dir the system runs with (investflow up --data)",
    )


class CliError(Exception):
    pass


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect

    from services.scoring.scoreboard import scoring_database_url
    from shared.db import make_engine

    url = args.database_url or (
        scoring_database_url(args.data)
        if args.data is not None
        else os.environ.get("SCORING_DATABASE_URL") or os.environ.get("DATABASE_URL")
    )
    if url is None:
        from shared.settings import REPO_ROOT

        data = Path(os.environ.get("INVESTFLOW_DATA_DIR", REPO_ROOT / "data"))
        url = f"sqlite:///{data / 'scoring.db'}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise CliError(
            f"no scoring database at {url.removeprefix('sqlite:///')}: pass the system's --data DIR "
            "or --database-url / 未找到计分数据库"
        )
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table("scoring_funds"):
            raise CliError(
                f"{_safe(url)} has no scoring tables: has the scoring service run on it?"
            )
    except CliError:
        engine.dispose()
        raise
    except Exception as exc:
        engine.dispose()
        raise CliError(f"cannot open {_safe(url)}: {exc}") from exc
    return engine


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _directory():  # type: ignore[no-untyped-def]
    from services.scoring.scoreboard import default_directory

    return default_directory()


def cmd_scoreboard(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from services.scoring import scoreboard
    from shared.rules import default_registry

    out = out or sys.stdout
    try:
        quarter = scoreboard.parse_quarter(args.quarter)
        engine = _engine(args)
    except (ValueError, CliError) as exc:
        print(f"investflow scoreboard: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            rules: Any = default_registry()
        except Exception:  # no rulesets: show the board without the plan
            rules = None
        board = scoreboard.build(engine, args.year, quarter, directory=_directory(), rules=rules)
        print(scoreboard.render(board, args.format), file=out)
    finally:
        engine.dispose()
    return 0


def cmd_rates_load(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from services.scoring import rates_csv

    out = out or sys.stdout
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"investflow rates load: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    days, problems = rates_csv.parse(text)
    if problems:
        for p in problems:
            print(f"{args.file}: {p}", file=sys.stderr)
        print(f"{len(problems)} problem(s); nothing published / 未发布", file=sys.stderr)
        return 1
    count = sum(len(d.rates.rates) for d in days)
    if args.dry_run:
        print(f"{args.file}: {count} rates on {len(days)} days, all valid (dry run)", file=out)
        return 0
    from shared.settings import Settings

    settings = Settings.from_env()
    url = args.url or settings.nats_url
    try:
        published, duplicates = asyncio.run(_publish_rates(url, days))
    except Exception as exc:
        print(f"investflow rates load: cannot publish to {url}: {exc}", file=sys.stderr)
        return 1
    print(
        f"published {count} rates on {len(days)} days to {days[0].subject if days else 'intake.CENTER.rates'} "
        f"({published} new, {duplicates} already sent)",
        file=out,
    )
    return 0


async def _publish_rates(url: str, days: list[Any]) -> tuple[int, int]:
    from shared.settings import Settings, connect_nats

    nc = await connect_nats(Settings.from_env(), url, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        new = dup = 0
        for day in days:
            ack = await js.publish(day.subject, day.body(), headers={"Nats-Msg-Id": day.msg_id})
            dup += int(bool(ack.duplicate))
            new += int(not ack.duplicate)
        return new, dup
    finally:
        await nc.close()


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--set {pair!r}: expected NAME=VALUE, e.g. foreign_multiplier=4")
        try:
            out[name.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise CliError(f"--set {pair!r}: {exc}") from exc
    return out
