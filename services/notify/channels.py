"""The ways a notification leaves: SMTP email, a generic JSON webhook, DingTalk and WeCom robots.

Each `send` returns on success and raises DeliveryError otherwise; the dispatcher retries.
Blocking stdlib clients (smtplib, urllib) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

WECOM_MAX_BYTES = 4096
DINGTALK_MAX_CHARS = 5000


class DeliveryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Outgoing:
    """What a channel needs of one notification row."""

    id: int
    cause: str
    kind: str
    project_id: str | None
    recipient: str
    channel: str
    language: str
    subject: str
    body: str
    html: str | None
    image: bytes | None
    data: dict[str, Any]
    target: dict[str, Any]


class Channel(Protocol):
    async def send(self, note: Outgoing) -> None: ...


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "investflow@localhost"
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    ssl: bool = False
    timeout: float = 15.0

    @classmethod
    def from_env(cls) -> SmtpConfig:
        env = os.environ
        return cls(
            host=env.get("NOTIFY_SMTP_HOST", "127.0.0.1"),
            port=int(env.get("NOTIFY_SMTP_PORT", "25")),
            sender=env.get("NOTIFY_SMTP_FROM", "investflow@localhost"),
            user=env.get("NOTIFY_SMTP_USER") or None,
            password=env.get("NOTIFY_SMTP_PASSWORD") or None,
            starttls=env.get("NOTIFY_SMTP_STARTTLS", "") in ("1", "true", "yes"),
            ssl=env.get("NOTIFY_SMTP_SSL", "") in ("1", "true", "yes"),
        )


class _HeaderClasses(HeaderRegistry):
    """The stdlib builds a new class for every header it sets or parses (much of the cost of
    building a message); one class per header name gives the very same headers and bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = super().__getitem__(name)
        return cls


# Headers whose values recur from message to message: the sender, a recipient's addresses,
# and the MIME headers of every part.
_RECURRING = frozenset({"from", "to", "content-type", "content-transfer-encoding", "mime-version"})


class _EmailPolicy(EmailPolicy):
    """email.policy.default, except that a recurring header value is parsed once rather than
    for every message: a parsed header is an immutable value (messages share them already
    when a part is made multipart), so one object can sit in many messages."""

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if type(value) is str and name.lower() in _RECURRING:
            return _parsed_header(self, name, value)
        return super().header_store_parse(name, value)


@functools.lru_cache(maxsize=1024)
def _parsed_header(policy: EmailPolicy, name: str, value: str) -> tuple[str, Any]:
    return EmailPolicy.header_store_parse(policy, name, value)


EMAIL_POLICY = _EmailPolicy(header_factory=_HeaderClasses())


def build_email(
    note: Outgoing, sender: str, html_of: Any, policy: EmailPolicy = EMAIL_POLICY
) -> EmailMessage:
    msg = EmailMessage(policy=policy)
    msg["From"] = sender
    msg["To"] = ", ".join(note.target["to"])
    msg["Subject"] = note.subject
    msg["Date"] = formatdate(localtime=False)
    # Deterministic: a mail client can drop a copy sent again after a crash mid-send.
    digest = hashlib.sha256(f"{note.cause}|{note.recipient}".encode()).hexdigest()[:24]
    msg["Message-ID"] = f"<{digest}@investflow.notify>"
    msg["X-Investflow-Cause"] = note.cause
    msg.set_content(note.body, subtype="plain", charset="utf-8")
    msg.add_alternative(html_of(note), subtype="html", charset="utf-8")
    if note.image:
        html_part = msg.get_payload()[1]
        html_part.add_related(note.image, maintype="image", subtype="png", cid="<chart>")
    return msg


class Email:
    def __init__(self, config: SmtpConfig, html_of: Any) -> None:
        self.config = config
        self.html_of = html_of  # note -> HTML body (the renderer's layout)

    def _send(self, msg: EmailMessage) -> None:
        c = self.config
        try:
            smtp_cls = smtplib.SMTP_SSL if c.ssl else smtplib.SMTP
            with smtp_cls(c.host, c.port, timeout=c.timeout) as smtp:
                if c.starttls and not c.ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if c.user:
                    smtp.login(c.user, c.password or "")
                refused = smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {c.host}:{c.port}: {exc}") from exc
        if refused:
            raise DeliveryError(f"SMTP refused recipients: {refused}")

    async def send(self, note: Outgoing) -> None:
        msg = build_email(note, self.config.sender, self.html_of)
        await asyncio.to_thread(self._send, msg)


def _post_json(
    url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8"} | headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError) as exc:
        raise DeliveryError(f"POST {_redact(url)}: {exc}") from exc


def _redact(url: str) -> str:
    """Robot URLs carry their access token: never put it in a log or an error column."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Webhook:
    """Generic JSON webhook: the notification's words and its facts; any 2xx is delivered."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    @staticmethod
    def payload(note: Outgoing) -> dict[str, Any]:
        return {
            "id": note.id,
            "cause": note.cause,
            "kind": note.kind,
            "project_id": note.project_id,
            "recipient": note.recipient,
            "language": note.language,
            "subject": note.subject,
            "text": note.body,
            "data": note.data,
        }

    async def send(self, note: Outgoing) -> None:
        url = note.target["url"]
        headers = {"Idempotency-Key": f"{note.cause}|{note.recipient}"}
        status, body = await asyncio.to_thread(
            _post_json, url, self.payload(note), headers, self.timeout
        )
        if not 200 <= status < 300:
            raise DeliveryError(f"POST {_redact(url)}: HTTP {status} {body[:200]!r}")


class _Robot:
    """Group robots answer HTTP 200 with {"errcode": 0} on success, another errcode otherwise."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def url(self, note: Outgoing) -> str:
        return str(note.target["url"])

    def payload(self, note: Outgoing) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, note: Outgoing) -> None:
        url = self.url(note)
        status, body = await asyncio.to_thread(
            _post_json, url, self.payload(note), {}, self.timeout
        )
        if status != 200:
            raise DeliveryError(f"POST {_redact(url)}: HTTP {status} {body[:200]!r}")
        try:
            answer = json.loads(body or b"{}")
        except ValueError as exc:
            raise DeliveryError(f"POST {_redact(url)}: not JSON: {body[:200]!r}") from exc
        if answer.get("errcode", 0) != 0:
            raise DeliveryError(
                f"POST {_redact(url)}: errcode {answer.get('errcode')}: {answer.get('errmsg')}"
            )


class DingTalk(_Robot):
    """钉钉自定义机器人: markdown message; with a secret, each call is signed (加签)."""

    def url(self, note: Outgoing) -> str:
        url = str(note.target["url"])
        secret = note.target.get("secret")
        if not secret:
            return url
        timestamp = str(int(time.time() * 1000))
        digest = hmac.new(
            str(secret).encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256
        ).digest()
        sign = urllib.parse.quote_plus(base64.b64encode(digest))
        return f"{url}{'&' if '?' in url else '?'}timestamp={timestamp}&sign={sign}"

    def payload(self, note: Outgoing) -> dict[str, Any]:
        text = f"### {note.subject}\n\n{note.body}"[:DINGTALK_MAX_CHARS]
        return {"msgtype": "markdown", "markdown": {"title": note.subject, "text": text}}


class WeCom(_Robot):
    """企业微信群机器人: markdown message (at most 4096 bytes)."""

    def payload(self, note: Outgoing) -> dict[str, Any]:
        content = f"**{note.subject}**\n{note.body}"
        raw = content.encode("utf-8")
        if len(raw) > WECOM_MAX_BYTES:
            content = raw[: WECOM_MAX_BYTES - 3].decode("utf-8", errors="ignore") + "…"
        return {"msgtype": "markdown", "markdown": {"content": content}}


class DryRun:
    """NOTIFY_DRY_RUN=1 (demo): write what would be sent to a JSON Lines file instead."""

    def __init__(self, path: Path, channel: str) -> None:
        self.path = path
        self.channel = channel

    async def send(self, note: Outgoing) -> None:
        line = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "channel": self.channel,
            "cause": note.cause,
            "recipient": note.recipient,
            "subject": note.subject,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fp:
            fp.write(json.dumps(line, ensure_ascii=False) + "\n")


def default_channels(html_of: Any, dry_run_file: Path | None = None) -> dict[str, Channel]:
    if dry_run_file is not None:
        return {ch: DryRun(dry_run_file, ch) for ch in ("email", "webhook", "dingtalk", "wecom")}
    return {
        "email": Email(SmtpConfig.from_env(), html_of),
        "webhook": Webhook(),
        "dingtalk": DingTalk(),
        "wecom": WeCom(),
    }
