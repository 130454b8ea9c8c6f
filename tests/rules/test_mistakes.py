"""The corpus of mistakes a non-programmer makes (tests/rules/mistakes/, issue 14): each file
says, in its header, the message it must produce and the line it must name. `rules validate`
and `rules publish` both refuse it with that message, file and line, exit code 1, and no
traceback; publish refuses before it connects to anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from investflow.rules_cli import main
from shared.settings import REPO_ROOT

CORPUS = sorted((Path(__file__).parent / "mistakes").glob("*.yaml"))


def header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines()[:6]:
        match = re.match(r"# (expect|line|with): (.*)", line)
        if match:
            out[match[1]] = match[2]
    return out


def is_rule_test(path: Path) -> bool:
    return any(
        line.startswith("ruleset:") for line in path.read_text(encoding="utf-8").splitlines()
    )


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 20
    assert all({"expect", "line"} <= set(header(p)) for p in CORPUS)


def check(code: int, out: str, path: Path) -> None:
    expected = header(path)
    assert code == 1, out
    assert "Traceback" not in out
    located = [
        line
        for line in out.splitlines()
        if line.startswith(f"ERROR  {path}:{expected['line']}:") and expected["expect"] in line
    ]
    assert located, f"expected {path}:{expected['line']}: …{expected['expect']}… in:\n{out}"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_validate_names_the_mistake(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [str(REPO_ROOT / header(path)["with"])] if "with" in header(path) else []
    code = main(["rules", "validate", *extra, str(path)])
    check(code, capsys.readouterr().out, path)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_publish_refuses_the_mistake_before_connecting(
    path: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from investflow.nats_server import free_port

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens: a refusal must come first
    if is_rule_test(path):
        tests = tmp_path / "tests"
        tests.mkdir()
        (tests / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        argv = [str(REPO_ROOT / "rulesets" / "scoring-2022.1.yaml"), "--tests", str(tests)]
        path = tests / path.name
    else:
        extra = [str(REPO_ROOT / header(path)["with"])] if "with" in header(path) else []
        argv = [*extra, str(path)]
    code = main(["rules", "publish", *argv, "--url", url])
    out = capsys.readouterr().out
    assert "not published / 未发布" in out
    assert "cannot connect" not in out
    check(code, out, path)
