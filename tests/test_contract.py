"""The contract on its own: credit codes, strictness, and the published AsyncAPI document."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from investflow.asyncapi import spec_document
from shared.contract import InboundKind, credit_code_problem, make_credit_code
from shared.contract.credit_code import ALPHABET
from shared.settings import REPO_ROOT

body17 = st.text(alphabet=ALPHABET, min_size=17, max_size=17)


def test_published_example_code_is_valid() -> None:
    # The worked example of GB 32100-2015's appendix.
    assert credit_code_problem("91350100M000100Y43") is None


@given(body17)
def test_generated_codes_are_valid(body: str) -> None:
    assert credit_code_problem(make_credit_code(body)) is None


@given(body17, st.integers(0, 17), st.sampled_from(ALPHABET))
def test_any_single_substitution_is_caught(body: str, pos: int, ch: str) -> None:
    code = make_credit_code(body)
    changed = code[:pos] + ch + code[pos + 1 :]
    if changed != code:
        assert credit_code_problem(changed) is not None


def test_wrong_length_and_letters_are_named() -> None:
    assert "18 characters" in (credit_code_problem("91350100M000100Y4") or "")
    assert "not allowed" in (credit_code_problem("91350100M000100YO3") or "")


def test_asyncapi_lists_every_intake_channel_with_its_payload() -> None:
    doc = spec_document()
    for kind in InboundKind:
        channel = doc["channels"][f"intake.{{unit}}.{kind.value}"]
        message_ref = channel["messages"]["Message"]["$ref"].rsplit("/", 1)[-1]
        payload_ref = doc["components"]["messages"][message_ref]["payload"]["$ref"].rsplit("/", 1)[
            -1
        ]
        assert "properties" in doc["components"]["schemas"][payload_ref]
    assert "project.lead:Publish" in doc["channels"]


def test_committed_asyncapi_document_is_current() -> None:
    committed = yaml.safe_load(
        Path(REPO_ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")
    )
    assert committed == spec_document(), "docs/asyncapi.yaml is stale: run `investflow asyncapi`"
