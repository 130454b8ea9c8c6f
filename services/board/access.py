"""Who may see what on the board (看板访问): signed bearer tokens, checked without a lookup.

A board token reads `ifb.<payload>.<signature>`: the payload is base64url JSON
`{"r": role, "c": code, "i": token id, "x": expiry date}` and the signature its
HMAC-SHA256 under `BOARD_TOKEN_SECRET` (or the file in `BOARD_TOKEN_SECRET_FILE`), a secret
the operator shares with whoever issues tokens (`investflow board token`). So the board
verifies a token by itself and never reads intake's token table; a token is withdrawn by
listing its id in `BOARD_REVOKED_FILE` (one id a line, re-read when it changes), all at
once by rotating the secret, and each ends on its expiry date.

Roles: `unit` (its own projects and its own rank), `leader` (the projects it sponsors,
包保), `center` and `admin` (everything, and the ops pages). With `BOARD_HTTP_AUTH=1`
nothing but /health answers without a valid token; unset, the board is open (laptop demo).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

PREFIX = "ifb"
AUTH_ENV = "BOARD_HTTP_AUTH"
SECRET_ENV = "BOARD_TOKEN_SECRET"
REVOKED_ENV = "BOARD_REVOKED_FILE"
# metrics: a scraper (Prometheus) that may read /metrics and nothing else.
ROLES = ("unit", "leader", "center", "admin", "metrics")
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


class TokenError(ValueError):
    """Why a token is refused, in Chinese and English."""


@dataclass(frozen=True)
class Viewer:
    """Whoever is looking: what the queries filter by."""

    role: str  # unit | leader | center | admin | metrics | open (auth off)
    code: str | None = None
    token_id: str | None = None

    @property
    def sees_all(self) -> bool:
        return self.role in ("center", "admin", "open")

    @property
    def ops(self) -> bool:
        return self.role in ("center", "admin", "open")

    def label(self) -> str:
        return self.role if self.code is None else f"{self.role}:{self.code}"


OPEN = Viewer("open")


def auth_enabled(env: dict[str, str] | None = None) -> bool:
    raw = (env if env is not None else os.environ).get(AUTH_ENV, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise SystemExit(f"{AUTH_ENV}={raw!r}: say 1 (tokens required) or 0 (open, local only)")


def secret_from_env(env: dict[str, str] | None = None) -> bytes | None:
    env = env if env is not None else dict(os.environ)
    path = env.get(f"{SECRET_ENV}_FILE")
    raw = Path(path).read_text(encoding="utf-8").strip() if path else env.get(SECRET_ENV, "")
    return raw.encode() if raw else None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest())


def issue(
    secret: bytes, role: str, code: str | None, expires: dt.date, token_id: str | None = None
) -> tuple[str, str]:
    """(token id, token). The token is shown once; only its id is worth writing down."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)} / 角色无效")
    if role in ("unit", "leader") and not code:
        raise TokenError(f"a {role} token names its code / 单位或领导令牌须指定代码")
    token_id = token_id or secrets.token_hex(4)
    body = {"r": role, "c": code, "i": token_id, "x": expires.isoformat()}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return token_id, f"{PREFIX}.{payload}.{_sign(secret, payload)}"


class Verifier:
    """Checks tokens against the secret, the expiry and the revocation file."""

    def __init__(self, secret: bytes | None, revoked_file: Path | None = None) -> None:
        self.secret = secret
        self.revoked_file = revoked_file
        self._revoked: frozenset[str] = frozenset()
        self._mtime: float | None = None

    @classmethod
    def from_env(cls) -> Verifier:
        revoked = os.environ.get(REVOKED_ENV)
        return cls(secret_from_env(), Path(revoked) if revoked else None)

    def revoked(self) -> frozenset[str]:
        if self.revoked_file is None:
            return frozenset()
        try:
            mtime = self.revoked_file.stat().st_mtime
        except FileNotFoundError:
            return frozenset()
        if mtime != self._mtime:
            lines = self.revoked_file.read_text(encoding="utf-8").splitlines()
            self._revoked = frozenset(
                line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()
            )
            self._mtime = mtime
        return self._revoked

    def verify(self, token: str, today: dt.date | None = None) -> Viewer:
        if self.secret is None:
            raise TokenError(
                f"the board has no {SECRET_ENV}; it cannot check tokens / 未配置令牌密钥"
            )
        parts = token.strip().split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise TokenError("not a board token (ifb.…) / 不是看板令牌")
        _, payload, signature = parts
        if not hmac.compare_digest(_sign(self.secret, payload), signature):
            raise TokenError("token signature does not match / 令牌签名无效")
        try:
            body = json.loads(_unb64(payload))
            role, code, token_id = body["r"], body["c"], str(body["i"])
            expires = dt.date.fromisoformat(body["x"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenError("token payload unreadable / 令牌内容无法读取") from exc
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r} / 角色无效")
        if (today or dt.date.today()) > expires:
            raise TokenError(f"token expired on {expires} / 令牌已过期")
        if token_id in self.revoked():
            raise TokenError(f"token {token_id} is revoked / 令牌已吊销")
        return Viewer(role, code, token_id)
