"""JSON Schemas of ruleset and rule-test files, generated from the models, so an editor with
the yaml-language-server (VS Code's YAML extension, and others) completes keys and marks
mistakes as they are typed. `investflow rules schema` writes them under docs/; a test keeps
them fresh. The schema is an aid: `investflow rules validate` remains the authority (it also
checks facts, parameter types and the rule tests, which a schema cannot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .model import OPERATORS, Ruleset
from .ruletest import RuleTestFile

FILES = {"ruleset.schema.json": "ruleset", "rule-tests.schema.json": "rule tests"}


def _comparison() -> dict[str, Any]:
    """`{fact: x, <operator>: value}` as written (the model stores it as fact/op/value)."""
    return {
        "type": "object",
        "title": "Comparison",
        "description": "{fact: investor.origin, eq: foreign}: one fact, one operator "
        "/ 一个事实字段和一个运算符",
        "properties": {
            "fact": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"},
            **{op: {"description": f"operator `{op}`"} for op in OPERATORS},
        },
        "required": ["fact"],
        "additionalProperties": False,
        "minProperties": 2,
        "maxProperties": 2,
    }


def ruleset_schema() -> dict[str, Any]:
    schema = TypeAdapter(Ruleset).json_schema(by_alias=True)
    schema["$defs"]["Comparison"] = _comparison()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "investflow ruleset (rulesets/*.yaml) / 规则集",
        **schema,
    }


def rule_tests_schema() -> dict[str, Any]:
    schema = TypeAdapter(RuleTestFile).json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "investflow rule tests (rulesets/tests/*.yaml) / 规则测试",
        **schema,
    }


def rendered() -> dict[str, str]:
    """File name -> the schema as committed (stable JSON)."""
    return {
        name: json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        for name, schema in (
            ("ruleset.schema.json", ruleset_schema()),
            ("rule-tests.schema.json", rule_tests_schema()),
        )
    }


def write(directory: Path) -> list[Path]:
    out = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out
