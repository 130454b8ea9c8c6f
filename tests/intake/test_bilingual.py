"""Every error pydantic can raise on the contract reaches the unit in English and Chinese.

The error kinds are found, not listed: each field of a real message of every kind is given
bad values of every JSON type, and each error that comes back is checked.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from services.intake.validate import pydantic_errors
from shared.contract import INBOUND_MODELS, InboundKind
from shared.pydantic_zh import bilingual
from shared.settings import REPO_ROOT

BAD: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    "",
    "x",
    "NaN",
    "-1",
    "1.123456789",
    "1234567890123456789",
    "2022-13-45",
    "2022-06-30T08:00:00",
    "1822-01-01",
    "2199-01-01",
    "a" * 600,
    "usd",
    "RMB",
    "ZZZ",
    [],
    ["x"] * 60,
    {},
    {"a": 1},
]


def _samples() -> dict[str, dict[str, Any]]:
    """The first real message of each kind in the shipped sample year."""
    out: dict[str, dict[str, Any]] = {}
    cases: dict[str, dict[str, Any]] = {}  # a kind the year only has as a marked case
    for line in (REPO_ROOT / "samples" / "year-2022.jsonl").open(encoding="utf-8"):
        item = json.loads(line)
        if "data" in item:
            kind = item["subject"].split(".")[2]
            (cases if "case" in item else out).setdefault(kind, item["data"])
    known = {k.value for k in InboundKind}  # marked cases include made-up kinds
    return {k: v for k, v in cases.items() if k in known} | out


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, value in items:
        yield (*path, key)
        yield from _paths(value, (*path, key))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _errors() -> dict[str, list[tuple[str, dict[str, Any], str]]]:
    """pydantic error type -> [(kind, raw error, problem as a unit reads it)]."""
    found: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    samples = _samples()
    assert set(samples) == {k.value for k in InboundKind}
    for kind, doc in samples.items():
        model = INBOUND_MODELS[InboundKind(kind)]
        for path in [*_paths(doc), ("no_such_field",)]:
            for bad in BAD:
                changed = copy.deepcopy(doc)
                _set(changed, path, bad)
                try:
                    model.model_validate_json(json.dumps(changed), strict=True)
                except ValidationError as exc:
                    raw = exc.errors(include_url=False)
                    for err, named in zip(raw, pydantic_errors(exc), strict=True):
                        found.setdefault(err["type"], []).append((kind, err, named.problem))
        # A field left out.
        for key in doc:
            changed = {k: v for k, v in doc.items() if k != key}
            try:
                model.model_validate_json(json.dumps(changed), strict=True)
            except ValidationError as exc:
                raw = exc.errors(include_url=False)
                for err, named in zip(raw, pydantic_errors(exc), strict=True):
                    found.setdefault(err["type"], []).append((kind, err, named.problem))
    return found


def test_every_contract_error_is_said_in_english_and_chinese() -> None:
    found = _errors()
    # What the contract's field types can raise; a new type shows up here, and is checked below.
    assert {
        "missing",
        "extra_forbidden",
        "decimal_parsing",
        "decimal_type",
        "decimal_max_places",
        "decimal_max_digits",
        "finite_number",
        "greater_than",
        "enum",
        "string_pattern_mismatch",
        "string_too_long",
        "string_too_short",
        "date_parsing",
        "date_type",
        "bool_type",
        "string_type",
        "list_type",
        "model_type",
        "dict_type",
        "too_short",
        "too_long",
        "value_error",
    } <= set(found)
    for kind, cases in sorted(found.items()):
        for model, err, problem in cases:
            where = f"{model} {err['loc']} {kind}: {problem!r}"
            assert re.search(r"[\u4e00-\u9fff]", problem), f"no Chinese: {where}"
            assert re.search(r"[A-Za-z]{3}", problem), f"no English: {where}"
            assert "Input should" not in problem and "String should" not in problem, where
            assert " / " in problem, where


def test_messages_name_the_limits_and_choices() -> None:
    enum = bilingual(
        {"type": "enum", "input": "casino", "ctx": {"expected": "'industrial' or 'service'"}}
    )
    assert "'industrial' or 'service'" in enum and "'casino'" in enum and "其中之一" in enum
    places = bilingual(
        {"type": "decimal_max_places", "input": "1.234", "ctx": {"decimal_places": 2}}
    )
    assert "2 decimal places" in places and "小数不超过2位" in places
    pattern = bilingual(
        {
            "type": "string_pattern_mismatch",
            "input": "ts01",
            "ctx": {"pattern": r"^[A-Z][A-Z0-9_]{1,31}$"},
        }
    )
    assert "'ts01'" in pattern and "TS01" in pattern and "大写" in pattern
    unknown = bilingual({"type": "some_new_kind", "msg": "Something odd", "input": 1})
    assert unknown == "Something odd / 取值无效"
