"""No rules command prints a traceback on any input (issue 14.4): the shipped rulesets and
rule tests, mutated the ways people mistype them, are either accepted or refused with
located problems — never another exception. 1,000+ generated cases by default."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from investflow.rules_cli import cmd_validate
from shared.rules import RulesetError
from shared.rules.load import load_text
from shared.rules.ruletest import load_tests_text, rule_id_problems
from shared.settings import REPO_ROOT

SOURCES = {
    path.name: path.read_text(encoding="utf-8")
    for path in [
        *sorted((REPO_ROOT / "rulesets").glob("*.yaml")),
        *sorted((REPO_ROOT / "rulesets" / "tests").glob("*.yaml")),
    ]
}
TOKENS = [
    "：", "，", "　", "“", "”", "（", "【", "\t", " ", "  ", "\n", "- ", ": ", ":", "{", "}", "[",
    "]", "'", '"', "#", "&a ", "*a", "<<: *a", "!!python/object:os.system", "!!binary", "%YAML",
    "两倍", "三", "一百万", "2022-13-31", "2022-02-30", '"2022-01-01"', "2022-01-01 10:00",
    "-1", "1e999", ".nan", "0x1F", "null", "~", "true", "on", "yes", "\\d+", "(.*a){30}",
    "{param: nope}", "{rule: nope}", "{not: {not: {}}}", "\x00", "\ufeff", "\ud800", "é", "😀",
]  # fmt: skip
# 1,100 mutated files under INVESTFLOW_SLOW (`make test-slow`), 400 in `make test`.
EXAMPLES = int(
    os.environ.get(
        "INVESTFLOW_FUZZ_EXAMPLES", "1100" if os.environ.get("INVESTFLOW_SLOW") else "400"
    )
)
VERSIONS = [load_text(t, n) for n, t in SOURCES.items() if not n.endswith("-2022.yaml")]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    text = SOURCES[name]
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup_line", "drop_line"]))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif op == "replace":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at + draw(st.integers(1, 8)) :]
        else:
            lines = text.split("\n")
            i = at % len(lines)
            lines[i : i + 1] = [lines[i], lines[i]] if op == "dup_line" else []
            text = "\n".join(lines)
    return name, text


def judge(name: str, text: str) -> None:
    """What `validate` and `publish` do with the text; only RulesetError may come out."""
    try:
        if name.endswith("-2022.yaml"):  # a rule-test file
            tests = load_tests_text(text, name)
            for problem in rule_id_problems(tests, name, VERSIONS, text):
                assert problem.file == name
        else:
            load_text(text, name)
    except RulesetError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == name and problem.message
            assert "Traceback" not in str(problem)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(mutated())
def test_mutated_rulesets_are_accepted_or_refused_in_words(case: tuple[str, str]) -> None:
    judge(*case)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=mutated())
def test_the_validate_command_prints_no_traceback(case: tuple[str, str], tmp_path: Path) -> None:
    name, text = case
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    out = io.StringIO()

    args = SimpleNamespace(paths=[str(path)])
    code = cmd_validate(args, out)  # type: ignore[arg-type]
    assert code in (0, 1)
    assert "Traceback" not in out.getvalue()
    assert out.getvalue().strip().splitlines()[-1].endswith("invalid")


def test_a_non_utf8_file_is_refused_in_words(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"id: scoring\nversion: \xff\xfe\n")
    out = io.StringIO()

    args = SimpleNamespace(paths=[str(path)])
    assert cmd_validate(args, out) == 1  # type: ignore[arg-type]
    assert "not UTF-8 text" in out.getvalue()


@pytest.mark.parametrize("size", [2 * 1024 * 1024])
def test_a_huge_file_is_refused_at_once(tmp_path: Path, size: int) -> None:
    import time

    path = tmp_path / "huge.yaml"
    path.write_text("a: " + "x" * size + "\n", encoding="utf-8")
    started = time.perf_counter()
    out = io.StringIO()

    args = SimpleNamespace(paths=[str(path)])
    assert cmd_validate(args, out) == 1  # type: ignore[arg-type]
    assert time.perf_counter() - started < 2
    assert f"{path}: the file is" in out.getvalue() and "at most 1,048,576" in out.getvalue()
