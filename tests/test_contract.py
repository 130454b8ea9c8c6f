"""The contract on its own: credit codes, strictness, and the published AsyncAPI document."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from investflow.asyncapi import spec_document, write_asyncapi
from shared.contract import InboundKind, credit_code_problem, make_credit_code
from shared.contract.credit_code import ALPHABET
from shared.settings import REPO_ROOT, Settings

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


ASYNCAPI_CLI_DIR = Path(
    os.environ.get("ASYNCAPI_CLI_DIR", Path.home() / ".cache" / "investflow" / "asyncapi-cli")
)


def test_asyncapi_cli_validates_the_document_with_no_errors_or_warnings(tmp_path: Path) -> None:
    cli = ASYNCAPI_CLI_DIR / "node_modules" / ".bin" / "asyncapi"
    if shutil.which("node") is None:
        pytest.skip("node is not installed: `asyncapi validate` cannot run")
    if not cli.exists():
        pytest.skip(
            f"the AsyncAPI CLI is not in {ASYNCAPI_CLI_DIR}: `make asyncapi-cli` puts it there"
        )
    doc = tmp_path / "asyncapi.yaml"
    write_asyncapi(doc)
    # The CLI reports usage to its vendor unless told not to: this file says no.
    opt_out = tmp_path / "asyncapi-analytics.json"
    opt_out.write_text(json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true"}))
    result = subprocess.run(
        [str(cli), "validate", str(doc), "--diagnostics-format", "json", "--fail-severity", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"ASYNCAPI_METRICS_CONFIG_PATH": str(opt_out), "CI": "true"},
    )
    start = result.stdout.find("[")
    diagnostics = (
        json.loads(result.stdout[start : result.stdout.rindex("]") + 1]) if start >= 0 else []
    )
    # Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
    serious = [d for d in diagnostics if d.get("severity", 0) <= 1]
    assert not serious, json.dumps(serious, indent=1)[:4000]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_asyncapi_is_as_exact_as_the_server() -> None:
    doc = spec_document()
    schemas = doc["components"]["schemas"]
    # Money as decimal strings whose pattern knows the places; the server refuses 3 places.
    amount = schemas["Funds"]["properties"]["amount"]
    pattern = next(a["pattern"] for a in amount["anyOf"] if a.get("type") == "string")
    assert re.match(pattern, "1234.50") and not re.match(pattern, "1234.505")
    credited = schemas["Credited"]["properties"]["points"]
    assert credited["type"] == "string" and "pattern" in credited
    # Dates in the range the server enforces.
    day = schemas["Funds"]["properties"]["arrived_on"]
    assert re.match(day["pattern"], "2022-06-30")
    assert not re.match(day["pattern"], "1989-12-31") and not re.match(day["pattern"], "2101-01-01")
    for name, channel in doc["channels"].items():
        for param in re.findall(r"{([^}]+)}", channel["address"]):
            assert param in channel.get("parameters", {}), f"{name}: no parameter {param}"
    for name, message in doc["components"]["messages"].items():
        header = message["headers"]["properties"]["Nats-Msg-Id"]
        assert header["type"] == "string" and header["maxLength"] == 200, name
        assert message["correlationId"]["location"] == "$message.header#/Nats-Msg-Id", name
        assert "EmptyPayload" not in json.dumps(message), name
    assert "required" not in doc["components"]["messages"]["intake.{unit}.lead:Message"]["headers"]
    servers = spec_document(replace(Settings.from_env(), nats_url="nats://a:4222,tls://b:4443"))[
        "servers"
    ]
    assert [(s["host"], s["protocol"]) for s in servers.values()] == [
        ("a:4222", "nats"),
        ("b:4443", "tls"),
    ]
