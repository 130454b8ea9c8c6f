"""The contract models' JSON Schemas, as exact as their validators (OpenAPI and AsyncAPI).

Pydantic's default schema says only `string` for a decimal and nothing of the date range
`Day` enforces in an after-validator; a unit generating code from the spec would learn
both from a rejection. Here a decimal string carries the pattern of its digits and places
(pydantic's own `build_decimal_pattern`, the validation syntax), and a `Day` its range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .currency import ISO_4217
from .inbound import EARLIEST, LATEST, _currency, _plausible

# Years EARLIEST..LATEST (1990..2100): a pattern, since JSON Schema has no date bounds.
DAY_PATTERN = r"^(199[0-9]|20[0-9]{2}|2100)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
assert EARLIEST.year == 1990 and LATEST.year == 2100 and (LATEST.month, LATEST.day) == (12, 31)


class ContractJsonSchema(GenerateJsonSchema):
    def get_decimal_pattern(self, schema: core_schema.DecimalSchema) -> str | None:
        return self.build_decimal_pattern(schema)

    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        out = super().decimal_schema(schema)
        limits = [
            f"{label} {schema[key]}"  # type: ignore[literal-required]
            for key, label in (
                ("max_digits", "digits at most"),
                ("decimal_places", "places at most"),
            )
            if schema.get(key) is not None
        ]
        said = "a decimal string" if self.mode == "serialization" else "a decimal, best as a string"
        out["description"] = said + (f" ({', '.join(limits)})" if limits else "")
        return out

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        out = super().function_after_schema(schema)
        if schema["function"].get("function") is _plausible:
            out = {
                **out,
                "pattern": DAY_PATTERN,
                "description": f"a date from {EARLIEST} to {LATEST} / 日期须在 {EARLIEST}..{LATEST}",
            }
        elif schema["function"].get("function") is _currency:
            out = {**out, "enum": sorted(ISO_4217)}
        return out

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        # pydantic gives keys with a pattern as `patternProperties` only, which lets any other
        # key through with any value; the validator refuses them, so the schema does too.
        if "patternProperties" in out:
            keys = self.generate_inner(schema["keys_schema"]) if "keys_schema" in schema else {}
            out["additionalProperties"] = False
            if "enum" in keys:
                out["propertyNames"] = {"enum": keys["enum"]}
        return out


def contract_schemas(
    models: Sequence[type[BaseModel]],
    ref_template: str,
    mode: Literal["validation", "serialization"] = "validation",
) -> dict[str, Any]:
    """The models' schemas and their sub-schemas, by name: what a receiver accepts
    (validation), or what a service emits (serialization: a decimal is a string)."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(
            ref_template=ref_template, schema_generator=ContractJsonSchema, mode=mode
        )
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out
