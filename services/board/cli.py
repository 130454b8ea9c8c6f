"""`investflow board token ROLE [CODE]`: issue a board token (needs BOARD_TOKEN_SECRET)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from . import access


def _token(args: argparse.Namespace) -> int:
    secret = access.secret_from_env()
    if secret is None:
        print(
            f"investflow board token: set {access.SECRET_ENV} (or {access.SECRET_ENV}_FILE), "
            "the secret the board checks tokens with / 须先设置令牌密钥",
            file=sys.stderr,
        )
        return 1
    if args.role in ("unit", "leader"):
        from shared.directory import load_directory
        from shared.settings import Settings

        directory = load_directory(Settings.from_env().units_file)
        known = (
            directory.is_unit(args.code or "")
            if args.role == "unit"
            else directory.is_leader(args.code or "")
        )
        if not known:
            print(
                f"investflow board token: {args.code!r} is not a {args.role} in the directory / 目录中无此代码",
                file=sys.stderr,
            )
            return 1
    try:
        token_id, tok = access.issue(
            secret, args.role, args.code, dt.date.today() + dt.timedelta(days=args.days)
        )
    except access.TokenError as exc:
        print(f"investflow board token: {exc}", file=sys.stderr)
        return 1
    print(
        f"board token {token_id} for {args.role}{':' + args.code if args.code else ''}, valid {args.days} days "
        f"(shown once; revoke by adding {token_id} to $BOARD_REVOKED_FILE):"
    )
    print(tok)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    board = sub.add_parser("board", help="the board (挂图作战): issue access tokens")
    bsub = board.add_subparsers(dest="board_command", required=True)
    token = bsub.add_parser(
        "token",
        help="a signed token: unit CODE | leader CODE | center | admin | metrics (Prometheus)",
    )
    token.add_argument("role", choices=access.ROLES)
    token.add_argument("code", nargs="?", default=None, help="the unit's or leader's code")
    token.add_argument(
        "--days", type=int, default=365, help="valid for this many days (default 365)"
    )
    token.set_defaults(func=_token)
