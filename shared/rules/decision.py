"""What every rule decision carries: the contract's `Explanation` — the decision record: ruleset
id and version, matched rules, parameter values used, deciding rule, and the input itself with
its digest — so a decision can be replayed, explained and checked against the same input later."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

from shared.contract import Explanation

from .registry import Evaluation, jsonable


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(mode="python", exclude_none=True))
    if isinstance(value, Enum):
        return _canonical(value.value)
    if isinstance(value, Decimal):
        # 1.50 and 1.5 are the same amount and must hash the same.
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text, amounts as exact decimal strings."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def input_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def decision_input(value: Any) -> tuple[dict[str, Any], str]:
    """The input as the decision record stores it (JSON values, amounts as exact decimal
    strings, nulls dropped) and its sha256; the stored form hashes to the same digest."""
    text = canonical_json(value)
    return json.loads(text), hashlib.sha256(text.encode("utf-8")).hexdigest()


def explanation(
    evaluation: Evaluation,
    rule_ids: Iterable[str],
    deciding_rule: str | None,
    input_digest: str,
    extra_parameters: Iterable[str] = (),
    record_input: Mapping[str, Any] | None = None,
) -> Explanation:
    """The explanation of a decision that considered `rule_ids` of the evaluated version;
    with `record_input` (decision_input's form) it is the whole decision record."""
    considered = list(rule_ids)
    parameters = evaluation.parameters(considered)
    params = evaluation.resolved.ruleset.parameters
    for name in extra_parameters:
        parameters[name] = jsonable(params[name].value)
    return Explanation(
        ruleset_id=evaluation.ruleset_id,
        version=evaluation.version,
        ruleset_sha256=evaluation.text_sha256,
        matched=[r for r in evaluation.matched if r in considered],
        parameters=parameters,
        deciding_rule=deciding_rule,
        input_sha256=input_digest,
        input=dict(record_input) if record_input is not None else None,
    )
