"""Pure checks of one inbound message: no NATS, no database.

Returns the parsed payload or the list of every problem found, each naming its field,
so a unit's developer can fix them all in one go.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from shared.contract import (
    CENTER_ONLY_KINDS,
    INBOUND_MODELS,
    CommitteeDecision,
    FieldError,
    InboundKind,
    Lead,
    Meeting,
    Visit,
)
from shared.directory import Directory
from shared.pydantic_zh import bilingual

KINDS = ", ".join(k.value for k in InboundKind)

MAX_KEY_LENGTH = 200  # the column's size: a longer key is refused, never cut
MAX_DEPTH = 32  # the contract's deepest payload is 3 levels; past this it is an attack or a bug


@dataclass(frozen=True)
class Parsed:
    unit: str
    kind: InboundKind
    payload: BaseModel

    @property
    def project_id(self) -> str | None:
        """The project the event is about; a lead's id is `<unit>-<lead_id>`."""
        if isinstance(self.payload, Lead):
            return f"{self.unit}-{self.payload.lead_id}"
        target = getattr(self.payload, "target", None)  # a correction or withdrawal
        if target is not None:
            return str(target.project_id)
        return getattr(self.payload, "project_id", None)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


_NAMED = re.compile(r"^([a-z_][a-z0-9_]*): (.*)$", re.S)


def pydantic_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        problem = bilingual(err)
        # Cross-field validators in the contract say "field: problem"; name that field.
        named = _NAMED.match(problem) if err["type"] == "value_error" else None
        if named:
            loc, problem = (*loc, named.group(1)), named.group(2)
        errors.append(FieldError(field=_path(loc), problem=problem))
    return errors


def check_subject(unit: str, kind: str, directory: Directory) -> list[FieldError]:
    errors = []
    if kind not in InboundKind.__members__:
        errors.append(
            FieldError(
                field="$subject",
                problem=f"unknown kind {kind!r}; expected one of {KINDS} / 未知事件类型",
            )
        )
    if not directory.is_unit(unit):
        errors.append(FieldError(field="$subject", problem=f"unknown unit {unit!r} / 未登记的单位"))
    elif kind in CENTER_ONLY_KINDS and unit != Directory.CENTER:
        errors.append(
            FieldError(
                field="$subject",
                problem=f"{kind} events come from the Center only, not from {unit} "
                "/ 仅限项目建设服务中心报送",
            )
        )
    return errors


def check_key(key: str | None, header: str) -> list[FieldError]:
    """An idempotency key is required, at most MAX_KEY_LENGTH characters, printable."""
    if not key:
        return [FieldError(field=header, problem="header required / 须提供幂等键")]
    if len(key) > MAX_KEY_LENGTH:
        return [
            FieldError(
                field=header,
                problem=f"{len(key)} characters; at most {MAX_KEY_LENGTH} / 幂等键过长",
            )
        ]
    if "\x00" in key:
        return [FieldError(field=header, problem="contains a NUL character / 含空字符")]
    if any(not ch.isprintable() for ch in key):
        return [FieldError(field=header, problem="contains a control character / 含控制字符")]
    return []


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Nesting deeper than `limit`, found without recursion (json.loads would recurse)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # no deeper than its brackets, even if all of them nested (the usual case)
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def nul_fields(doc: object) -> list[FieldError]:
    """Every key or text value holding a NUL (PostgreSQL refuses it; no field needs it)."""
    errors = []
    stack: list[tuple[tuple[int | str, ...], object]] = [((), doc)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    errors.append(
                        FieldError(
                            field=_path(loc) if loc else "$",
                            problem="a key contains a NUL character / 字段名含空字符",
                        )
                    )
                stack.append(((*loc, k), v))
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            errors.append(
                FieldError(field=_path(loc), problem="contains a NUL character / 含空字符")
            )
    return sorted(errors, key=lambda e: e.field)


def parse(
    unit: str, kind: str, raw: bytes, directory: Directory, max_bytes: int
) -> Parsed | list[FieldError]:
    """Everything that can be checked without the database."""
    errors = check_subject(unit, kind, directory)
    if errors:
        return errors
    if len(raw) > max_bytes:
        return [
            FieldError(
                field="$",
                problem=f"payload is {len(raw)} bytes; the limit is {max_bytes} / 报文过大",
            )
        ]
    if too_deep(raw):
        return [
            FieldError(
                field="$", problem=f"nested too deep (more than {MAX_DEPTH} levels) / 嵌套过深"
            )
        ]
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return [FieldError(field="$", problem=f"not valid JSON: {exc} / 不是合法的JSON")]
    if not isinstance(doc, dict):
        return [
            FieldError(
                field="$",
                problem=f"expected a JSON object, got {type(doc).__name__} / 应为JSON对象",
            )
        ]
    nul = nul_fields(doc)
    if nul:
        return nul
    model = INBOUND_MODELS[InboundKind(kind)]
    try:
        payload = model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        return pydantic_errors(exc)
    errors = check_codes(unit, payload, directory)
    return errors or Parsed(unit=unit, kind=InboundKind(kind), payload=payload)


def check_codes(unit: str, payload: BaseModel, directory: Directory) -> list[FieldError]:
    """The payload's unit and leader codes against the sender and the directory."""
    errors: list[FieldError] = []

    def need(ok: bool, field: str, problem: str) -> None:
        if not ok:
            errors.append(FieldError(field=field, problem=problem))

    claimed = getattr(payload, "unit", None)
    need(
        claimed is None or claimed == unit,
        "unit",
        f"{claimed!r} does not match the sender {unit!r} in the subject / 与报送单位不符",
    )
    if isinstance(payload, Lead):
        need(
            payload.attracting_unit == unit,
            "attracting_unit",
            f"{payload.attracting_unit!r} does not match the sender {unit!r}: a unit reports its own leads / 招商单位须为报送单位",
        )
        need(
            directory.is_landing_area(payload.landing_area),
            "landing_area",
            f"{payload.landing_area!r} is not a township, street or park in the directory / 落地区域不在名录中",
        )
    if isinstance(payload, Visit):
        need(
            directory.is_leader(payload.leader),
            "leader",
            f"{payload.leader!r} is not a county leader in the directory / 非县级领导",
        )
    if isinstance(payload, CommitteeDecision):
        for field in ("sponsor_leader", "responsible_leader"):
            code = getattr(payload, field)
            need(
                code is None or directory.is_leader(code),
                field,
                f"{code!r} is not a county leader in the directory / 非县级领导",
            )
        if payload.hq is not None:
            need(
                directory.is_leader(payload.hq.commander),
                "hq.commander",
                f"{payload.hq.commander!r} is not a county leader in the directory / 非县级领导",
            )
            for i, member in enumerate(payload.hq.members):
                need(
                    directory.is_unit(member),
                    f"hq.members[{i}]",
                    f"{member!r} is not a unit in the directory / 未登记的单位",
                )
    if isinstance(payload, Meeting):
        need(
            len(set(payload.agenda)) == len(payload.agenda),
            "agenda",
            "a project is listed twice / 议题重复",
        )
    return errors
