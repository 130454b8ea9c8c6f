"""Rule tests: YAML files of cases (input facts, a date, expected outcome) that policy staff
read and extend (SPEC §7). Run by `investflow rules test`, and by the gate that keeps a
ruleset whose tests fail from being loaded.

The outcome of a case is computed by the service's own decision function (`case_result` in
services/<ruleset>/decide.py), so a test checks exactly what the service would decide.
"""

from __future__ import annotations

import datetime as dt
import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic import (
    Strict as StrictMode,
)

from .facts import FactsError
from .load import locate, parse_located, pydantic_problems
from .model import AnyRuleset, Problem, RulesetError
from .registry import Gate, Rules, RulesetRegistry

Decider = Callable[[Any, Rules], dict[str, Any]]

DEFAULT_DECIDERS = {
    "review": "services.review.decide:case_result",
    "scoring": "services.scoring.decide:case_result",
    "notify": "services.notify.params:case_result",
}

# Expected values compared as sets: the order rules are written in is not part of a decision.
SET_KEYS = {
    "matched",
    "reasons",
    "missing_materials",
    "recognition_blockers",
    "missing_proofs",
    "credited_to",
    "alerts",
}
RULE_ID_KEYS = {"matched", "reasons", "recognition_blockers", "deciding_rule"}

Number = StrictInt | StrictFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReviewExpect(_Strict):
    outcome: Literal["accepted", "terminated"] | None = None
    reasons: list[StrictStr] | None = None
    track: Literal["major", "standard"] | None = None
    complete: StrictBool | None = None
    missing_materials: list[StrictStr] | None = None
    deadline: dt.date | None = None
    recognized: StrictBool | None = None
    recognition_blockers: list[StrictStr] | None = None
    missing_proofs: list[StrictStr] | None = None
    matched: list[StrictStr] | None = None


class ScoringExpect(_Strict):
    held: StrictBool | None = None
    multiplier: Number | None = None
    matched: list[StrictStr] | None = None
    deciding_rule: StrictStr | None = None
    amount_rmb: Number | None = None
    points: Number | None = None
    credited_to: list[StrictStr] | None = None
    year: StrictInt | None = None
    quarter: StrictInt | None = None


StrictDate = Annotated[dt.date, StrictMode()]  # a date in quotes is text: refused


class _Case(_Strict):
    name: Annotated[StrictStr, Field(min_length=1)]
    note: StrictStr | None = None
    on: StrictDate | None = None
    parameters: dict[StrictStr, Any] = {}
    project: dict[StrictStr, Any]


class ReviewCase(_Case):
    documents: list[Any] = []
    meeting_on: StrictDate | None = None
    expect: ReviewExpect


class ScoringCase(_Case):
    funds: dict[StrictStr, Any]
    rates: dict[StrictStr, Number] = {}
    sponsor_leader: StrictStr | None = None
    expect: ScoringExpect


class ReviewTests(_Strict):
    ruleset: Literal["review"]
    cases: Annotated[list[ReviewCase], Field(min_length=1)]


class ScoringTests(_Strict):
    ruleset: Literal["scoring"]
    cases: Annotated[list[ScoringCase], Field(min_length=1)]


class Situation(_Strict):
    """What notify sees on the case's day, reduced to the numbers its thresholds judge."""

    days_without_visit: StrictInt | None = None  # approved major project, sponsor assigned
    days_to_agenda_deadline: StrictInt | None = None  # committee materials still missing
    signed_not_started_days: StrictInt | None = None
    waiting_for_land_days: StrictInt | None = None
    lacking_funds_days: StrictInt | None = None
    signed_this_quarter: StrictInt | None = None  # of at least `min_amount` yuan


class NotifyExpect(_Strict):
    alerts: list[StrictStr] | None = None


class NotifyCase(_Strict):
    name: Annotated[StrictStr, Field(min_length=1)]
    note: StrictStr | None = None
    on: Annotated[dt.date, StrictMode()]
    parameters: dict[StrictStr, Any] = {}
    situation: Situation
    expect: NotifyExpect


class NotifyTests(_Strict):
    ruleset: Literal["notify"]
    cases: Annotated[list[NotifyCase], Field(min_length=1)]


RuleTestFile = ReviewTests | ScoringTests | NotifyTests
TESTED_IDS: dict[str, type[ReviewTests] | type[ScoringTests] | type[NotifyTests]] = {
    "review": ReviewTests,
    "scoring": ScoringTests,
    "notify": NotifyTests,
}


def read_text(path: Path | str) -> str:
    file = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesetError(
            [Problem(file, "", "", f"cannot read: {exc.strerror} / 无法读取")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise RulesetError(
            [Problem(file, "", "", f"not UTF-8 text ({exc.reason}) / 文件须为 UTF-8 编码")]
        ) from exc


def load_tests(path: Path | str) -> RuleTestFile:
    """A rule-test file, or RulesetError naming the file, the case, the key and the line."""
    return load_tests_text(read_text(path), str(path))


def load_tests_text(text: str, file: str) -> RuleTestFile:
    """Rule tests from their YAML text (a published version carries its own)."""
    data, root = parse_located(text, file)
    if not isinstance(data, Mapping) or data.get("ruleset") not in TESTED_IDS:
        raise RulesetError(
            locate(
                [
                    Problem(
                        file,
                        "",
                        "ruleset",
                        "a rule-test file starts with `ruleset: review`, `ruleset: scoring` or "
                        "`ruleset: notify` / 规则测试文件须以 ruleset: review、scoring 或 notify 开头",
                    )
                ],
                data,
                root,
                text,
            )
        )
    model = TESTED_IDS[data["ruleset"]]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = pydantic_problems(exc, file, data, items="cases", label="case")
        raise RulesetError(locate(problems, data, root, text)) from None
    except RecursionError:
        raise RulesetError([Problem(file, "", "", "nested too deep / 嵌套过深")]) from None


def rule_id_problems(
    tests: RuleTestFile, file: str, versions: Iterable[AnyRuleset], text: str | None = None
) -> list[Problem]:
    """A case expecting a rule that the version in force on its day does not have (checked
    without running anything, so `rules validate` finds it)."""
    by_id = [v for v in versions if v.id == tests.ruleset]
    problems = []
    for case in tests.cases:
        day = case_date(case)
        version = next((v for v in by_id if day is not None and v.effective.covers(day)), None)
        if version is None:
            continue
        known = {r.id for r in version.rules}
        for key in sorted(RULE_ID_KEYS & case.expect.model_fields_set):
            value = getattr(case.expect, key)
            for index, rid in enumerate(value if isinstance(value, list) else [value]):
                if rid is not None and rid not in known:
                    close = difflib.get_close_matches(rid, sorted(known), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    where = f"[{index}]" if isinstance(value, list) else ""
                    problems.append(
                        Problem(
                            file,
                            f'case "{case.name}"',
                            f"expect.{key}{where}",
                            f"no rule {rid!r} in {version.key}{hint} (rules: "
                            f"{', '.join(sorted(known))}) / 无此规则",
                        )
                    )
    if problems and text is not None:
        data, root = parse_located(text, file)
        problems = locate(problems, data, root, text)
    return problems


def rule_test_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files named, plus every *.yaml under directories named."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*.y*ml") if p.is_file()))
        else:
            out.append(path)
    return out


@dataclass
class CaseResult:
    file: str
    case: str
    ruleset: str
    version: str | None = None
    mismatches: list[tuple[str, Any, Any]] = field(default_factory=list)
    error: str | None = None
    # (ruleset key, rule id) the case matched, and those it missed by one condition
    matched: list[tuple[str, str]] = field(default_factory=list)
    near: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches

    def verbose(self) -> str:
        state = "ok  " if self.ok else "FAIL"
        rules = ", ".join(r for _, r in self.matched) or "none / 无"
        near = ", ".join(r for _, r in self.near)
        return (
            f'{state} {self.file}: case "{self.case}" [{self.version or "?"}]: matched / 命中: '
            f"{rules}" + (f"; one condition away / 差一个条件: {near}" if near else "")
        )

    def line(self) -> str:
        head = f'FAIL {self.file}: case "{self.case}"'
        if self.error is not None:
            return f"{head}: {self.error}"
        parts = [f"{k}: expected {_show(e)}, got {_show(a)}" for k, e, a in self.mismatches]
        where = f" [{self.version}]" if self.version else ""
        return f"{head}{where}: " + "; ".join(parts)


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # files that could not be read

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results) + len(self.problems)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def lines(self) -> list[str]:
        return [f"ERROR {p}" for p in self.problems] + [r.line() for r in self.results if not r.ok]

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return (
            format(value.normalize(), "f")
            if value != value.to_integral_value()
            else str(int(value))
        )
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(map(str, value))) + "}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def compare(key: str, expected: Any, actual: Any) -> tuple[Any, Any] | None:
    """None when equal, else (expected, actual) as shown."""
    if key in SET_KEYS:
        exp, act = set(expected), set(actual or [])
        return None if exp == act else (exp, act)
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        exp_n, act_n = _number(expected), _number(actual)
        if exp_n is not None and act_n is not None and exp_n == act_n:
            return None
        return (exp_n, actual)
    return None if expected == actual else (expected, actual)


def case_date(case: Any) -> dt.date | None:
    """The day that picks the ruleset version: `on`, else the event's own date."""
    if case.on is not None:
        return case.on
    source = case.funds if isinstance(case, ScoringCase) else case.project
    key = "arrived_on" if isinstance(case, ScoringCase) else "reported_on"
    raw = source.get(key)
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(str(raw)) if raw is not None else None
    except ValueError:
        return None


def _deciders(deciders: Mapping[str, Decider | str] | None) -> dict[str, Decider]:
    out: dict[str, Decider] = {}
    for kind, target in (deciders or DEFAULT_DECIDERS).items():
        if isinstance(target, str):
            module, _, name = target.partition(":")
            target = getattr(importlib.import_module(module), name)
        out[kind] = target  # type: ignore[assignment]
    return out


def run_case(
    case: Any,
    kind: str,
    file: str,
    registry: RulesetRegistry,
    decide: Decider,
    record: bool = False,
) -> CaseResult:
    result = CaseResult(file, case.name, kind)
    where = f'case "{case.name}"'
    if case_date(case) is None:
        key = "funds.arrived_on" if kind == "scoring" else "project.reported_on"
        result.error = f"on: needs `on` or `{key}` to pick the ruleset version / 缺少日期"
        return result
    rules: Rules = (
        registry.with_parameters(kind, case.parameters, file=file, where=where)
        if case.parameters
        else registry
    )
    try:
        with registry.recording() as seen:
            actual = decide(case, rules)
        if record:
            _record_coverage(result, seen)
    except RulesetError as exc:
        result.error = "; ".join(
            f"{p.key}: {p.message}" if p.key else p.message for p in exc.problems
        )
        return result
    except FactsError as exc:
        result.error = "; ".join(f"{f}: {m}" for f, m in exc.problems)
        return result
    except LookupError as exc:
        result.error = f"on: {exc}"
        return result
    result.version = actual.get("_version")
    known = set(actual.get("_rules", ()))
    expected = {k: getattr(case.expect, k) for k in case.expect.model_fields_set}
    for key, value in expected.items():
        ids = value if isinstance(value, list) else [value]
        unknown = [i for i in ids if key in RULE_ID_KEYS and i is not None and i not in known]
        if unknown:
            result.error = (
                f"expect.{key}: no rule {unknown[0]!r} in {result.version} "
                f"(rules: {', '.join(sorted(known))}) / 无此规则"
            )
            return result
    if actual.get("held") and "held" not in expected:
        expected_keys = ", ".join(sorted(expected))
        result.mismatches.append((expected_keys, "scored", f"held: {actual.get('reason')}"))
        return result
    for key, value in expected.items():
        diff = compare(key, value, actual.get(key))
        if diff is not None:
            result.mismatches.append((key, *diff))
    return result


def _record_coverage(result: CaseResult, evaluations: list[Any]) -> None:
    from .explain import report

    for evaluation in evaluations:
        key = f"{evaluation.ruleset_id}@{evaluation.version}"
        try:
            reports = report(evaluation)
        except Exception:  # a version replaced meanwhile: nothing to say about it
            continue
        for r in reports:
            if r.matched:
                result.matched.append((key, r.id))
            elif len(r.unmet) == 1:
                result.near.append((key, r.id))


def coverage(report: Report, registry: RulesetRegistry) -> list[tuple[str, str, int, int, bool]]:
    """Per rule of every loaded version: (version, rule, cases matching it, cases missing it
    by one condition, whether it has a condition at all)."""
    out = []
    for ruleset_id in registry.ids():
        for version in registry.versions(ruleset_id):
            for rule in version.rules:
                key = (version.key, rule.id)
                hits = sum(key in r.matched for r in report.results)
                near = sum(key in r.near for r in report.results)
                out.append((version.key, rule.id, hits, near, rule.when is not None))
    return out


def run(
    paths: Iterable[Path | str],
    registry: RulesetRegistry,
    deciders: Mapping[str, Decider | str] | None = None,
    only: Callable[[str, dt.date | None], bool] | None = None,
    pick: Callable[[str], bool] | None = None,
    record: bool = False,
) -> Report:
    """Run every case under `paths` against the registry's versions (`pick`: by case name;
    `record`: note which rules each case matched and missed by one condition)."""
    report = Report()
    loaded: list[tuple[str, RuleTestFile]] = []
    for path in rule_test_files(paths):
        try:
            loaded.append((str(path), load_tests(path)))
        except RulesetError as exc:
            report.problems.extend(exc.problems)
    return run_loaded(loaded, registry, deciders, only, pick, report, record)


def run_loaded(
    loaded: Iterable[tuple[str, RuleTestFile]],
    registry: RulesetRegistry,
    deciders: Mapping[str, Decider | str] | None = None,
    only: Callable[[str, dt.date | None], bool] | None = None,
    pick: Callable[[str], bool] | None = None,
    report: Report | None = None,
    record: bool = False,
) -> Report:
    """Run loaded rule-test files (file name, tests) against the registry's versions."""
    decide = _deciders(deciders)
    report = report or Report()
    for file, tests in loaded:
        for case in tests.cases:
            if only is not None and not only(tests.ruleset, case_date(case)):
                continue
            if pick is not None and not pick(case.name):
                continue
            report.results.append(
                run_case(case, tests.ruleset, file, registry, decide[tests.ruleset], record)
            )
    return report


def check_set(
    versions: list[tuple[AnyRuleset, str]],
    tests: list[tuple[str, str]],
    deciders: Mapping[str, Decider | str] | None = None,
) -> list[str]:
    """A published set of versions of one ruleset id, checked against the rule tests it
    carries (file name, YAML text): the failures, empty when every case dated within a
    version passes against it and every version has at least one such case."""
    failures: list[str] = []
    loaded: list[tuple[str, RuleTestFile]] = []
    for file, text in tests:
        try:
            loaded.append((file, load_tests_text(text, file)))
        except RulesetError as exc:
            failures.extend(str(p) for p in exc.problems)
    ids = {r.id for r, _ in versions}
    with RulesetRegistry() as candidate:
        for ruleset, origin in versions:
            candidate.load(ruleset, origin)
        report = run_loaded(
            loaded,
            candidate,
            deciders,
            only=lambda kind, day: (
                kind in ids
                and day is not None
                and any(r.id == kind and r.effective.covers(day) for r, _ in versions)
            ),
        )
        failures.extend(report.lines())
        for ruleset, _ in versions:
            covered = any(
                t.ruleset == ruleset.id
                and (day := case_date(c)) is not None
                and ruleset.effective.covers(day)
                for _, t in loaded
                for c in t.cases
            )
            if not covered:
                failures.append(
                    f"no rule test covers {ruleset.key}: add cases dated within "
                    f"{ruleset.effective} / 没有覆盖该版本的规则测试"
                )
    return failures


def gate_on_rule_tests(
    tests_dir: Path | str, deciders: Mapping[str, Decider | str] | None = None
) -> Gate:
    """A registry gate: a version loads only if every rule test dated within its effective
    range passes against it, and at least one such test exists."""
    directory = Path(tests_dir)

    def gate(ruleset: AnyRuleset, origin: str) -> list[str]:
        files = rule_test_files([directory]) if directory.is_dir() else []
        with RulesetRegistry() as candidate:
            candidate.load(ruleset, origin)
            report = run(
                files,
                candidate,
                deciders,
                only=lambda kind, day: (
                    kind == ruleset.id and day is not None and ruleset.effective.covers(day)
                ),
            )
        failures = report.lines()
        if not report.results and not report.problems:
            failures.append(
                f"no rule test covers {ruleset.key}: add cases to {directory} dated within "
                f"{ruleset.effective} / 没有覆盖该版本的规则测试"
            )
        return failures

    return gate
