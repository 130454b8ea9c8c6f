"""Who is told, and how to reach them: `deploy/contacts.yaml`, checked, then kept in notify's tables.

Every contact is a code of the unit directory (`deploy/units.yaml`): a unit, a county leader or
the Center. A value written `${NAME}` is read from the environment, so robot tokens and
secrets need not sit in the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import Session, delete, select

from shared.directory import Directory

from . import store

CHANNELS = ("email", "webhook", "dingtalk", "wecom")
EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
URL = re.compile(r"^https?://[^\s]+$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ContactsError(ValueError):
    """A contacts file that cannot be loaded; the message names the entry and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Robot(Strict):
    """A DingTalk or WeCom group robot, or a generic webhook."""

    url: str
    secret: str | None = None  # DingTalk "加签" secret; signs each call

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not URL.match(value):
            raise ValueError(f"{value!r} is not an http(s) URL / 不是有效的网址")
        return value


class ContactEntry(Strict):
    code: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]
    language: Literal["zh", "en"] = "zh"
    email: list[str] = []
    webhook: Robot | None = None
    dingtalk: Robot | None = None
    wecom: Robot | None = None

    @field_validator("email", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("email")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for address in value:
            if not EMAIL.match(address):
                raise ValueError(f"{address!r} is not an email address / 邮箱地址无效")
        return value


class ContactsFile(Strict):
    contacts: list[ContactEntry]


@dataclass(frozen=True)
class Recipient:
    code: str
    name: str
    language: str
    addresses: dict[str, dict[str, object]]  # channel -> target


def _expand(value: object, where: str) -> object:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ContactsError(
                    f"{where}: environment variable {name} is not set / 未设置环境变量"
                )
            return os.environ[name]

        return ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    return value


def parse_contacts(text: str, origin: str, directory: Directory) -> list[ContactEntry]:
    """The file's contacts, or ContactsError naming every bad entry and key."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ContactsError(f"{origin}: not valid YAML: {exc} / YAML 格式错误") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("contacts"), list):
        raise ContactsError(
            f"{origin}: expected a mapping with a `contacts:` list / 须有 contacts 列表"
        )
    problems: list[str] = []
    entries: list[ContactEntry] = []
    for i, item in enumerate(raw["contacts"]):
        code = item.get("code") if isinstance(item, dict) else None
        label = f"contact {code}" if code else f"contacts[{i}]"
        try:
            entry = ContactEntry.model_validate(_expand(item, label))
        except ContactsError as exc:
            problems.append(f"{origin}: {exc}")
            continue
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "$"
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    message = (
                        f"unknown key (one of: code, language, {', '.join(CHANNELS)}) / 未知字段"
                    )
                problems.append(f"{origin}: {label}: {key}: {message}")
            continue
        if not (directory.is_unit(entry.code) or directory.is_leader(entry.code)):
            problems.append(
                f"{origin}: {label}: code: {entry.code!r} is not in the unit directory "
                "(deploy/units.yaml) / 单位或县级领导编码不存在"
            )
        if not any(getattr(entry, ch) for ch in CHANNELS):
            problems.append(
                f"{origin}: {label}: no channel: give at least one of {', '.join(CHANNELS)} / 至少填写一种联系方式"
            )
        entries.append(entry)
    codes = [e.code for e in entries]
    for code in sorted({c for c in codes if codes.count(c) > 1}):
        problems.append(f"{origin}: contact {code}: listed twice / 重复")
    if problems:
        raise ContactsError("\n".join(problems))
    return entries


def read_contacts(path: Path, directory: Directory) -> list[ContactEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContactsError(f"{path}: cannot read: {exc.strerror} / 无法读取") from exc
    return parse_contacts(text, str(path), directory)


def targets(entry: ContactEntry) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    if entry.email:
        out["email"] = {"to": list(entry.email)}
    for channel in ("webhook", "dingtalk", "wecom"):
        robot: Robot | None = getattr(entry, channel)
        if robot is not None:
            out[channel] = robot.model_dump(exclude_none=True)
    return out


def store_contacts(session: Session, entries: Iterable[ContactEntry], directory: Directory) -> int:
    """Replace the stored directory of contacts with `entries` (the file is the truth)."""
    entries = list(entries)
    session.exec(delete(store.Address))  # type: ignore[call-overload]
    session.exec(delete(store.Contact))  # type: ignore[call-overload]
    session.flush()
    for entry in entries:
        kind = "leader" if directory.is_leader(entry.code) else "unit"
        session.add(
            store.Contact(
                code=entry.code, kind=kind, name=directory.name(entry.code), language=entry.language
            )
        )
        for channel, target in targets(entry).items():
            session.add(store.Address(code=entry.code, channel=channel, target=json.dumps(target)))
    return len(entries)


def recipients(session: Session, codes: Iterable[str]) -> dict[str, Recipient]:
    """The stored contacts of `codes`; a code without a contact maps to no address at all."""
    wanted = list(dict.fromkeys(c for c in codes if c))
    contacts = {
        c.code: c
        for c in session.exec(select(store.Contact).where(store.Contact.code.in_(wanted))).all()  # type: ignore[attr-defined]
    }
    addresses: dict[str, dict[str, dict[str, object]]] = {c: {} for c in wanted}
    for row in session.exec(select(store.Address).where(store.Address.code.in_(wanted))).all():  # type: ignore[attr-defined]
        addresses[row.code][row.channel] = json.loads(row.target)
    return {
        code: Recipient(
            code=code,
            name=contacts[code].name if code in contacts else code,
            language=contacts[code].language if code in contacts else "zh",
            addresses=addresses[code],
        )
        for code in wanted
    }


def has_contacts(session: Session) -> bool:
    return session.exec(select(store.Contact).limit(1)).first() is not None
