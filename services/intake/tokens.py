"""Per-unit bearer tokens for the HTTP intake (接口令牌): issue, revoke, check.

A token reads `ifk_<token_id>_<secret>`. Only its SHA-256 is stored; the token id finds the
row and the digests are compared in constant time. A token speaks for exactly one unit:
on another unit's path it gets 403, a missing, unknown or revoked one 401.

Whether the routes ask for tokens at all is `INTAKE_HTTP_AUTH`: `1` in production (the
compose file sets it), off when unset so the embedded `investflow up`/`demo` and the tests
that post as any unit keep working on a laptop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session, select

from shared.db import unit_of_work

from .store import ApiToken

PREFIX = "ifk"
AUTH_ENV = "INTAKE_HTTP_AUTH"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def auth_enabled(env: dict[str, str] | None = None) -> bool:
    raw = (env if env is not None else os.environ).get(AUTH_ENV, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise SystemExit(f"{AUTH_ENV}={raw!r}: say 1 (tokens required) or 0 (open, local only)")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue(session: Session, unit: str, label: str, now: dt.datetime) -> tuple[ApiToken, str]:
    """A new token for `unit`; the plain token is returned here and never again."""
    token_id = secrets.token_hex(4)
    while session.get(ApiToken, token_id) is not None:  # 2^32 ids: a clash is rare, not impossible
        token_id = secrets.token_hex(4)
    token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    row = ApiToken(token_id=token_id, unit=unit, sha256=digest(token), label=label, created_at=now)
    session.add(row)
    return row, token


def revoke(session: Session, token_id: str, now: dt.datetime) -> ApiToken | None:
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
    return row


def revoke_unit(session: Session, unit: str, now: dt.datetime) -> int:
    rows = session.exec(
        select(ApiToken).where(ApiToken.unit == unit, ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
    ).all()
    for row in rows:
        row.revoked_at = now
        session.add(row)
    return len(rows)


def list_tokens(session: Session, unit: str | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.unit, ApiToken.created_at)  # type: ignore[arg-type]
    if unit:
        query = query.where(ApiToken.unit == unit)
    return list(session.exec(query).all())


def token_unit(session: Session, token: str) -> str | None:
    """The unit a live token speaks for, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    row = session.get(ApiToken, parts[1])
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.sha256, digest(token)):
        return None
    return row.unit


# ---- the FastAPI side ------------------------------------------------------------------------


class AuthError(Exception):
    def __init__(self, status: int, problem: str) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem


async def auth_error_response(_: Request, exc: Exception) -> JSONResponse:
    """The API's usual error shape, with the challenge a 401 must carry."""
    assert isinstance(exc, AuthError)
    headers = (
        {"WWW-Authenticate": 'Bearer realm="investflow intake"'} if exc.status == 401 else None
    )
    return JSONResponse(
        {"errors": [{"field": "Authorization", "problem": exc.problem}]},
        status_code=exc.status,
        headers=headers,
    )


_bearer = HTTPBearer(
    auto_error=False,
    description="The unit's token from `investflow tokens issue UNIT` (Authorization: Bearer …)",
)


class TokenUnit:
    """Dependency: the unit the bearer token speaks for; None when auth is off."""

    def __init__(self, engine: Callable[[], Engine], enabled: bool) -> None:
        self.engine = engine
        self.enabled = enabled

    async def __call__(
        self,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> str | None:
        if not self.enabled:
            return None
        if credentials is None:
            raise AuthError(401, "bearer token required / 须提供单位令牌")

        def lookup() -> str | None:
            with unit_of_work(self.engine()) as session:
                return token_unit(session, credentials.credentials)

        unit = await asyncio.to_thread(lookup)
        if unit is None:
            raise AuthError(401, "unknown or revoked token / 令牌无效或已吊销")
        return unit


class UnitToken(TokenUnit):
    """Dependency: the bearer token must belong to the unit in the path."""

    async def __call__(  # type: ignore[override]
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> None:
        unit = await super().__call__(credentials)
        path_unit: Any = request.path_params.get("unit")
        if unit is not None and unit != path_unit:
            raise AuthError(403, f"this token reports for {unit} only / 令牌仅限本单位使用")
