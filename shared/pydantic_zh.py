"""Pydantic's error messages in the project's words: English / 中文.

Pydantic speaks English only ("Input should be a valid decimal"); a unit's developer or a
Center clerk reading a rejection gets each problem in both languages. Intake's rejections
(NATS and HTTP), the HTTP apps' request errors and the ruleset loader use these tables.
"""

from __future__ import annotations

import re
from typing import Any

# What a value must be, by pydantic's type-error kind: (English, 中文).
TYPE_NAMES: dict[str, tuple[str, str]] = {
    "int": ("a whole number (e.g. 2)", "整数"),
    "float": ("a number (e.g. 1.5)", "数值"),
    "decimal": ('a decimal number, best as a string (e.g. "1234.50")', '十进制数（如 "1234.50"）'),
    "bool": ("true or false", "true 或 false"),
    "str": ("text", "文字"),
    "date": ("a date like 2022-06-30", "日期（如 2022-06-30）"),
    "datetime": ("a date and time like 2022-06-30T08:00:00Z", "日期时间"),
    "dict": ("a mapping (key: value)", "映射"),
    "list": ("a list", "列表"),
}

# pydantic's type-error kinds and the type each one expects.
TYPE_ERRORS: dict[str, str] = {
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int",
    "float_type": "float",
    "float_parsing": "float",
    "decimal_type": "decimal",
    "decimal_parsing": "decimal",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "string_type": "str",
    "date_type": "date",
    "date_parsing": "date",
    "date_from_datetime_parsing": "date",
    "date_from_datetime_inexact": "date",
    "datetime_type": "datetime",
    "datetime_parsing": "datetime",
    "dict_type": "dict",
    "model_type": "dict",
    "model_attributes_type": "dict",
    "list_type": "list",
}

# The contract's patterns, said in words (shared/contract/inbound.py).
PATTERNS: dict[str, tuple[str, str]] = {
    r"^[A-Z][A-Z0-9_]{1,31}$": (
        "a code of capital letters, digits and _, starting with a letter (e.g. TS01)",
        "须为大写字母、数字和下划线组成的代码（如 TS01）",
    ),
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": (
        "an id of letters, digits, _ . - (at most 64, e.g. L2022-001)",
        "须为字母、数字及 _ . - 组成的编号（至多64位）",
    ),
    r"^[A-Z][A-Z0-9_]{1,31}-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": (
        "a project id <unit>-<lead_id> (e.g. TS01-L2022-001)",
        "须为项目编号 <单位>-<线索编号>（如 TS01-L2022-001）",
    ),
    r"^[a-z][a-z0-9_]{1,63}$": (
        "lowercase letters, digits and _, starting with a letter (e.g. new_materials)",
        "须为小写字母、数字和下划线（如 new_materials）",
    ),
    r"^[0-9a-f]{64}$": (
        "64 lowercase hex digits (a SHA-256)",
        "须为64位小写十六进制（SHA-256）",
    ),
    r"^[A-Z]{3}$": (
        "a three-letter ISO 4217 code (e.g. USD)",
        "须为三位ISO 4217币种代码（如 USD）",
    ),
}

_CJK = re.compile(r"[\u4e00-\u9fff]")


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def expected_type(kinds: list[str], value: Any) -> str:
    """'must be X or Y, not <value> / 须为X或Y' for the types pydantic's errors name."""
    if "int" in kinds and "float" in kinds:
        kinds = [k for k in kinds if k != "int"]
    en = " or ".join(dict.fromkeys(TYPE_NAMES[k][0] for k in kinds))
    zh = "或".join(dict.fromkeys(TYPE_NAMES[k][1] for k in kinds))
    return f"must be {en}, not {shown(value)} / 须为{zh}"


def _n(ctx: dict[str, Any], key: str) -> str:
    return str(ctx.get(key, "?"))


def bilingual(err: dict[str, Any]) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as 'English / 中文'."""
    kind = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return "required / 必填"
    if kind == "extra_forbidden":
        return "unknown field / 未知字段"
    if kind in TYPE_ERRORS:
        return expected_type([TYPE_ERRORS[kind]], value)
    if kind in ("enum", "literal_error"):
        return f"must be one of {_n(ctx, 'expected')}, not {shown(value)} / 取值须为其中之一"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        en, zh = PATTERNS.get(pattern, (f"text matching {pattern}", f"格式须符合 {pattern}"))
        return f"{shown(value)} is not {en} / {zh}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty / 不能为空"
        return f"at least {_n(ctx, 'min_length')} characters / 至少{_n(ctx, 'min_length')}个字符"
    if kind == "string_too_long":
        return f"at most {_n(ctx, 'max_length')} characters / 不超过{_n(ctx, 'max_length')}个字符"
    if kind == "too_short":
        return f"at least {_n(ctx, 'min_length')} items / 至少{_n(ctx, 'min_length')}项"
    if kind == "too_long":
        return f"at most {_n(ctx, 'max_length')} items / 至多{_n(ctx, 'max_length')}项"
    if kind == "greater_than":
        return f"must be greater than {_n(ctx, 'gt')} / 须大于{_n(ctx, 'gt')}"
    if kind == "greater_than_equal":
        return f"must be at least {_n(ctx, 'ge')} / 须不小于{_n(ctx, 'ge')}"
    if kind == "less_than":
        return f"must be less than {_n(ctx, 'lt')} / 须小于{_n(ctx, 'lt')}"
    if kind == "less_than_equal":
        return f"must be at most {_n(ctx, 'le')} / 须不大于{_n(ctx, 'le')}"
    if kind == "finite_number":
        return "must be a finite number, not NaN or infinity / 须为有限数值"
    if kind == "decimal_max_digits":
        return (
            f"at most {_n(ctx, 'max_digits')} digits in all / 总位数不超过{_n(ctx, 'max_digits')}位"
        )
    if kind == "decimal_max_places":
        places = _n(ctx, "decimal_places")
        return f"at most {places} decimal places / 小数不超过{places}位"
    if kind == "decimal_whole_digits":
        whole = _n(ctx, "whole_digits")
        return f"at most {whole} digits before the point / 整数部分不超过{whole}位"
    if kind == "json_invalid":
        return f"not valid JSON: {_n(ctx, 'error')} / 不是合法的JSON"
    message = str(err.get("msg", "")).removeprefix("Value error, ")
    # Our own validators already speak both languages; anything else is marked as invalid.
    return message if _CJK.search(message) else f"{message} / 取值无效"
