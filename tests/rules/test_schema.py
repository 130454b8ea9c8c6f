"""The JSON Schemas editors use (issue 14.6): generated from the models, committed under
docs/ and fresh; they accept every shipped ruleset and rule-test file and reject broken ones;
every shipped file names its schema in a yaml-language-server modeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from investflow.rules_cli import main
from shared.rules import schema
from shared.rules.load import StrictLoader
from shared.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs"
RULESETS = sorted((REPO_ROOT / "rulesets").glob("*.yaml"))
TESTS = sorted((REPO_ROOT / "rulesets" / "tests").glob("*.yaml"))


class EditorLoader(yaml.SafeLoader):
    """YAML as an editor's language server reads it: dates stay text (YAML 1.2 core)."""


EditorLoader.yaml_implicit_resolvers = {  # YAML 1.2: `on` is a word, dates are text
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in StrictLoader.yaml_implicit_resolvers.items()
}


def as_editor_reads(text: str) -> Any:
    return yaml.load(text, Loader=EditorLoader)


def validator(name: str) -> jsonschema.Validator:
    return jsonschema.Draft202012Validator(json.loads((DOCS / name).read_text(encoding="utf-8")))


def test_the_committed_schemas_are_what_the_models_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, text in schema.rendered().items():
        assert (DOCS / name).read_text(encoding="utf-8") == text, "run `investflow rules schema`"
    assert main(["rules", "schema", "--check"]) == 0


def test_check_notices_a_stale_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "schema", "--out", str(tmp_path)]) == 0
    (tmp_path / "ruleset.schema.json").write_text("{}", encoding="utf-8")
    assert main(["rules", "schema", "--check", "--out", str(tmp_path)]) == 1
    assert "stale:" in capsys.readouterr().out


@pytest.mark.parametrize("path", RULESETS + TESTS, ids=lambda p: p.name)
def test_every_shipped_file_names_its_schema_and_passes_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    name = "rule-tests.schema.json" if path.parent.name == "tests" else "ruleset.schema.json"
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (path.parent / first.split("=", 1)[1]).resolve() == (DOCS / name).resolve()
    errors = list(validator(name).iter_errors(as_editor_reads(text)))
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("title:\n", "tittle:\n"),  # a typo in a key
        ("fact: investor.origin, eq: foreign", "fact: investor.origin, equals: foreign"),
        ("combine: max", "combine: highest"),
        ('version: "2022.1"', "version: 2022.1"),
    ],
)
def test_a_broken_ruleset_is_rejected(old: str, new: str) -> None:
    text = (REPO_ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    assert old in text
    errors = list(
        validator("ruleset.schema.json").iter_errors(as_editor_reads(text.replace(old, new, 1)))
    )
    assert errors


def test_a_broken_rule_test_file_is_rejected() -> None:
    text = (REPO_ROOT / "rulesets" / "tests" / "scoring-2022.yaml").read_text(encoding="utf-8")
    broken = text.replace("    expect:\n      multiplier: 4", "    expect:\n      multiplyer: 4", 1)
    assert broken != text
    assert list(validator("rule-tests.schema.json").iter_errors(as_editor_reads(broken)))
