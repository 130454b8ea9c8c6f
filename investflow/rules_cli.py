"""`investflow rules ...`: the rule maintainers' tools.

    investflow rules validate PATH...          ruleset files (and rule-test files) are well-formed
    investflow rules test PATH...              run rule tests; `N passed, M failed`; non-zero on failure
    investflow rules explain FILE.json         a decision, why, and what would change it
    investflow rules explain --project ID      a real project's decisions, from their records
    investflow rules whatif --ruleset F --year Y   the year rescored under a proposal, old vs new
    investflow rules publish FILE              validate, test, and make it decide in the running services
    investflow rules rollback ID VERSION       make an earlier version decide again

Rulesets are read from `rulesets/` (or $INVESTFLOW_RULESETS, or `--rulesets DIR`). A ruleset
that does not validate is never loaded: `test` and `explain` refuse to run on it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from shared.rules import (
    FactsError,
    RulesetError,
    RulesetRegistry,
    funds_dict,
    load_paths,
    rulesets_dir,
)
from shared.rules.explain import report, show
from shared.rules.model import Problem
from shared.rules.ruletest import run


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2022-06-30") from exc


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rules = subparsers.add_parser(
        "rules",
        help="rule maintainers' tools: validate, test and explain rulesets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = rules.add_subparsers(dest="rules_command", required=True)

    validate = sub.add_parser(
        "validate", help="check ruleset files (and rule-test files); directories are searched"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.set_defaults(func=cmd_validate)

    test = sub.add_parser("test", help="run rule tests (files or directories of *.yaml)")
    test.add_argument("paths", nargs="+", metavar="PATH")
    test.add_argument(
        "--rulesets", type=Path, default=None, metavar="DIR", help="default: rulesets/"
    )
    test.add_argument(
        "-v", "--verbose", action="store_true", help="each case, with the rules it matched"
    )
    test.add_argument(
        "--run", default=None, metavar="PATTERN", help="only cases whose name contains PATTERN"
    )
    test.add_argument(
        "--coverage",
        action="store_true",
        help="per rule: cases where it matches, and where it just does not (one condition away)",
    )
    test.add_argument(
        "--require-coverage",
        action="store_true",
        help="fail unless every rule has both (a rule without `when` needs only a match)",
    )
    test.set_defaults(func=cmd_test)

    explain = sub.add_parser(
        "explain",
        help="explain a project's decisions (--project ID, from their records on a running "
        "system) or decide one from JSON, in Chinese and English, with what would change them",
        description=(
            "--project ID: the decision records review and scoring stored with each decision "
            "(read from the streams), replayed under the version each names, with what would "
            "change the outcome. FILE.json holds a lead, or {project, documents?, meeting_on?} "
            "for review, or {project, funds, rates?, sponsor_leader?} for scoring (the fields of "
            "a rule-test case)."
        ),
    )
    explain.add_argument("file", type=Path, nargs="?", default=None, metavar="FILE.json")
    explain.add_argument(
        "--project", default=None, metavar="ID", help="a project id, e.g. TS01-ZS2022-0042"
    )
    explain.add_argument(
        "--url", default=None, help="NATS server, for --project (default: $NATS_URL)"
    )
    explain.add_argument(
        "--on", type=_day, default=None, help="pick the ruleset version of this day"
    )
    explain.add_argument("--ruleset", choices=["review", "scoring", "notify"], default=None)
    explain.add_argument(
        "--rulesets", type=Path, default=None, metavar="DIR", help="default: rulesets/"
    )
    explain.set_defaults(func=cmd_explain)

    publish = sub.add_parser(
        "publish",
        help="validate and test ruleset files against what runs, and publish them as one change",
        description="Every file given becomes part of one publication per ruleset id (ending a "
        "version and starting its successor is one publish of both files). Refused, with "
        "nothing sent, when a file does not validate, when two versions would be in force on "
        "one day (the files or what runs), or when the rule tests fail. Exit 0 only when every "
        "service that decides with rules has loaded it within --timeout.",
    )
    publish.add_argument("files", nargs="+", type=Path, metavar="FILE.yaml")
    publish.add_argument(
        "--tests", type=Path, default=None, metavar="DIR", help="default: rulesets/tests/"
    )
    publish.add_argument("--note", default="", help="why (kept in the history)")
    publish.set_defaults(func=cmd_publish)

    rollback = sub.add_parser(
        "rollback",
        help="make an earlier publication decide again (default: the one the last replaced)",
    )
    rollback.add_argument("ruleset_id", metavar="ID")
    rollback.add_argument(
        "version",
        nargs="?",
        default=None,
        metavar="VERSION",
        help="the latest earlier publication whose newest version is VERSION",
    )
    rollback.add_argument(
        "--revision", type=int, default=None, help="a revision of `rules history`"
    )
    rollback.add_argument("--note", default="", help="why (kept in the history)")
    rollback.set_defaults(func=cmd_rollback)

    schema = sub.add_parser(
        "schema",
        help="write the JSON Schemas of ruleset and rule-test files (editor completion)",
        description="Writes ruleset.schema.json and rule-tests.schema.json (default: docs/), "
        "which the shipped files name in their yaml-language-server modeline. --check: exit 1 "
        "if the files there are not what the models give.",
    )
    schema.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: docs/")
    schema.add_argument("--check", action="store_true")
    schema.set_defaults(func=cmd_schema)

    diff = sub.add_parser(
        "diff",
        help="what changed between two ruleset files: dates, parameters, rules (not a text diff)",
    )
    diff.add_argument("old", type=Path, metavar="OLD.yaml")
    diff.add_argument("new", type=Path, metavar="NEW.yaml")
    diff.set_defaults(func=cmd_diff)

    hist = sub.add_parser("history", help="every publication: who, when, files' sha256, note")
    hist.add_argument("ruleset_id", nargs="?", default=None, metavar="ID")
    hist.add_argument("--format", choices=["table", "json"], default="table")
    hist.set_defaults(func=cmd_history)
    add_whatif_parser(sub)

    for p in (publish, rollback, hist):
        p.add_argument(
            "--url", default=None, help="NATS server (default: $NATS_URL, with its credentials)"
        )
    for p in (publish, rollback):
        p.add_argument(
            "--timeout",
            "--wait",
            dest="timeout",
            type=float,
            default=30.0,
            help="seconds every rules-deciding service has to confirm it (default 30)",
        )


def add_whatif_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str = "whatif",
) -> argparse.ArgumentParser:
    """The what-if command, under `investflow rules` and at the top level (one command: the
    top-level `investflow whatif` is this one, so the two can never give different numbers)."""
    whatif = subparsers.add_parser(
        name,
        help="replay a year's stored funds records through a proposal: subjects and records, "
        "old vs new; changes nothing",
        description="The proposal (one or more scoring ruleset files, and/or --set values) is "
        "compared with what is live in the running services (or --against a directory or "
        "files). A proposed version takes the place of the one with its number, and decides "
        "the days it covers; days it does not cover keep their version. Reads scoring's "
        "database; writes nothing, publishes nothing.",
    )
    whatif.add_argument("files", nargs="*", type=Path, metavar="FILE.yaml")
    whatif.add_argument(
        "--ruleset", dest="more_files", action="append", type=Path, default=[], metavar="FILE"
    )
    whatif.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    whatif.add_argument("--year", type=int, required=True)
    whatif.add_argument(
        "--against",
        action="append",
        default=None,
        metavar="live|PATH",
        help="what to compare with: live (default: the running services) or rulesets files/dirs",
    )
    whatif.add_argument("--records", action="store_true", help="list each changed funds record")
    whatif.add_argument("--format", choices=["table", "csv", "json"], default="table")
    whatif.add_argument("--changed-only", action="store_true")
    whatif.add_argument("--url", default=None, help="NATS server, for --against live")
    from .scoring_cli import add_database_arguments

    add_database_arguments(whatif)
    whatif.set_defaults(func=cmd_whatif)
    return whatif


# --- validate ---------------------------------------------------------------------------------


def _yaml_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*.y*ml") if p.is_file()))
        else:
            out.append(path)
    return out


def _known_versions(given: list[Any]) -> list[Any]:
    """The rulesets a rule-test file is checked against: those being validated, else
    rulesets/ (when it validates)."""
    if given:
        return given
    try:
        return [r for r, _ in load_paths([rulesets_dir()])]
    except RulesetError:
        return []


def cmd_validate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shared.rules.load import parse_located
    from shared.rules.ruletest import load_tests_text, read_text, rule_id_problems

    out = out or sys.stdout
    files = _yaml_files(args.paths)
    rulesets: list[Path] = []
    tests: list[tuple[Path, Any, str]] = []
    problems: list[Problem] = []
    for path in files:
        try:
            text = read_text(path)
            data, _ = parse_located(text, str(path))
        except RulesetError as exc:
            problems.extend(exc.problems)
            continue
        if isinstance(data, Mapping) and "cases" in data:
            try:
                tests.append((path, load_tests_text(text, str(path)), text))
            except RulesetError as exc:
                problems.extend(exc.problems)
        else:
            rulesets.append(path)
    loaded: list[Any] = []
    if rulesets:
        try:
            for ruleset, origin in load_paths(rulesets):
                loaded.append(ruleset)
                print(
                    f"ok     {origin}: {ruleset.key}, in force {ruleset.effective}, "
                    f"{len(ruleset.rules)} rules, {len(ruleset.parameters)} parameters",
                    file=out,
                )
        except RulesetError as exc:
            problems.extend(exc.problems)
    for path, parsed, text in tests:
        found = rule_id_problems(parsed, str(path), _known_versions(loaded), text)
        problems.extend(found)
        if not found:
            print(f"ok     {path} (rule tests, {len(parsed.cases)} cases)", file=out)
    for problem in problems:
        print(f"ERROR  {problem}", file=out)
    invalid = {p.file for p in problems}
    valid = [f for f in files if str(f) not in invalid]
    print(f"{len(valid)} valid, {len(invalid)} invalid", file=out)
    return 1 if problems or not files else 0


def cmd_diff(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shared.rules.diff import diff
    from shared.rules.load import load_file

    out = out or sys.stdout
    try:
        old, new = load_file(args.old), load_file(args.new)
    except RulesetError as exc:
        for problem in exc.problems:
            print(f"ERROR  {problem}", file=out)
        return 1
    print(f"{old.key} ({args.old}) → {new.key} ({args.new})", file=out)
    lines = diff(old, new)
    for line in lines or ["(the same policy: no date, parameter or rule differs) / 政策相同"]:
        print(f"  {line}", file=out)
    return 0


def cmd_schema(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shared.rules import schema
    from shared.settings import REPO_ROOT

    out = out or sys.stdout
    directory = args.out or REPO_ROOT / "docs"
    if args.check:
        stale = [
            name
            for name, text in schema.rendered().items()
            if not (directory / name).is_file()
            or (directory / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(
                f"stale: {directory / name} (run `investflow rules schema`) / 需重新生成", file=out
            )
        return 1 if stale else 0
    for path in schema.write(directory):
        print(f"wrote {path}", file=out)
    return 0


# --- test -------------------------------------------------------------------------------------


def _registry(args: argparse.Namespace, out: TextIO) -> RulesetRegistry | None:
    directory = args.rulesets or rulesets_dir()
    try:
        return RulesetRegistry.from_paths([directory])
    except RulesetError as exc:
        for problem in exc.problems:
            print(f"ERROR  {problem}", file=out)
        print(
            f"the rulesets in {directory} are not valid: nothing was loaded / 规则集无效，未加载",
            file=out,
        )
        return None


def cmd_test(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    registry = _registry(args, out)
    if registry is None:
        print("0 passed, 1 failed", file=out)
        return 1
    from shared.rules.ruletest import coverage

    pattern = (args.run or "").lower()
    wants_coverage = args.coverage or args.require_coverage
    with registry:
        result = run(
            args.paths,
            registry,
            pick=(lambda name: pattern in name.lower()) if pattern else None,
            record=args.verbose or wants_coverage,
        )
        table = coverage(result, registry) if wants_coverage else []
    if args.verbose:
        for problem in result.problems:
            print(f"ERROR {problem}", file=out)
        for case in result.results:
            print(case.verbose(), file=out)
            if not case.ok:
                print(f"     {case.line()}", file=out)
    else:
        for line in result.lines():
            print(line, file=out)
    if not result.results and not result.problems:
        print(f"no rule-test cases found in {' '.join(args.paths)}", file=out)
        print(result.summary(), file=out)
        return 1
    lacking = 0
    if table:
        print("\n覆盖 Coverage (cases matching / one condition away):", file=out)
        for key, rule, hits, near, conditional in table:
            needs_near = conditional and near == 0
            missing = hits == 0 or needs_near
            lacking += missing
            mark = "MISSING" if missing else "ok     "
            gaps = ([] if hits else ["no case where it matches / 缺少命中用例"]) + (
                ["no case where it just does not match / 缺少差一个条件未命中的用例"]
                if needs_near
                else []
            )
            near_text = str(near) if conditional else "-"
            print(
                f"  {mark} {key} {rule}: {hits} / {near_text}"
                + (f" — {'; '.join(gaps)}" if gaps else ""),
                file=out,
            )
        print(
            f"{len(table) - lacking} of {len(table)} rules covered both ways / 条规则覆盖完整",
            file=out,
        )
    print(result.summary(), file=out)
    if args.require_coverage and lacking:
        return 1
    return 0 if result.ok else 1


# --- explain ----------------------------------------------------------------------------------


def _input(raw: Any) -> dict[str, Any]:
    """The explain file as {project, ...}: a bare lead, an envelope's `data`, or a case."""
    if not isinstance(raw, Mapping):
        raise ValueError("the file must hold a JSON object / 须为 JSON 对象")
    if "project" in raw:
        return dict(raw)
    if "data" in raw and isinstance(raw["data"], Mapping):
        return {"project": dict(raw["data"])}
    return {"project": dict(raw)}


def _print_rules(evaluation: Any, out: TextIO, only: list[str] | None = None) -> None:
    """Matched rules, and for each other rule what would make it match (`only`: those rules)."""
    reports = [r for r in report(evaluation) if only is None or r.id in only]
    matched = [r for r in reports if r.matched]
    missed = [r for r in reports if not r.matched]
    print("\n命中的规则 Rules that matched:", file=out)
    for r in matched:
        print(f"  ✓ {r.id}  {r.title_zh} / {r.title_en}", file=out)
        print(f"      条件：{r.condition[1]}", file=out)
        print(f"      when: {r.condition[0]}", file=out)
    if not matched:
        print("  （无 none）", file=out)
    print("\n未命中的规则，及命中所需 Rules not matched, and what would make them match:", file=out)
    for r in missed:
        print(f"  ✗ {r.id}  {r.title_zh} / {r.title_en}", file=out)
        for en, zh in r.unmet:
            print(f"      需要：{zh}", file=out)
            print(f"      needs: {en}", file=out)
    if not missed:
        print("  （无 none）", file=out)


def _print_footer(evaluation: Any, digest: str | None, out: TextIO) -> None:
    print("\n使用的参数 Parameters used:", file=out)
    for name, value in evaluation.parameters().items():
        print(f"  {name} = {show(value, limit=20)}", file=out)
    print(f"输入摘要 Input sha256: {digest}", file=out)


def _header(title: str, evaluation: Any, project: Mapping[str, Any], out: TextIO) -> None:
    ruleset = evaluation.resolved.ruleset
    print(f"{title} — {ruleset.key}：{ruleset.title.zh} / {ruleset.title.en}", file=out)
    print(
        f"生效期 In force: {ruleset.effective}；依据日期 decided as of: {evaluation.on}", file=out
    )
    name = project.get("title") or project.get("lead_id") or "—"
    print(f"项目 Project: {name}", file=out)


def _date_field(data: Mapping[str, Any], key: str) -> dt.date | None:
    raw = data.get(key)
    return raw if isinstance(raw, dt.date) or raw is None else _day(str(raw))


def _explain_review(
    data: dict[str, Any], on: dt.date | None, registry: RulesetRegistry, out: TextIO
) -> None:
    from services.review import decide

    result = decide.review(
        data["project"],
        data.get("documents", []),
        _date_field(data, "meeting_on"),
        on=on or _date_field(data, "on"),
        rules=registry,
    )
    screening, mats, recog = result.screening, result.materials, result.recognition
    _header("审查 Review", result.evaluation, data["project"], out)
    if screening.track is None:
        print(
            f"初步筛选 Screening: 告知终止洽谈 terminated — 理由 reasons: {', '.join(screening.reasons)}",
            file=out,
        )
    else:
        track = {"major": "重大项目（联审联批）major", "standard": "一般 standard"}[
            screening.track.value
        ]
        print(f"初步筛选 Screening: 受理 accepted — 流程 track: {track}", file=out)
    if mats.complete:
        line = "齐全或无需提交 complete (or not required)"
    else:
        line = f"未齐 incomplete — 缺 missing: {', '.join(mats.missing_materials)}"
    deadline = f"；截止 deadline: {mats.deadline}" if mats.deadline else ""
    print(f"评审会材料 Committee materials: {line}{deadline}", file=out)
    if recog.recognized:
        print("认定 Recognition: 予以认定 recognised", file=out)
    else:
        missing = (
            f"；缺证明 missing proofs: {', '.join(recog.missing_proofs)}"
            if recog.missing_proofs
            else ""
        )
        blockers = ", ".join(recog.recognition_blockers)
        print(
            f"认定 Recognition: 不予认定 not recognised — 障碍 blockers: {blockers}{missing}",
            file=out,
        )
    _print_rules(result.evaluation, out)
    _print_footer(result.evaluation, screening.explanation.input_sha256, out)


def _explain_scoring(
    data: dict[str, Any], on: dt.date | None, registry: RulesetRegistry, out: TextIO
) -> None:
    from services.scoring import decide

    result = decide.score(
        data["project"],
        data["funds"],
        data.get("rates"),
        sponsor_leader=data.get("sponsor_leader"),
        on=on or _date_field(data, "on"),
        rules=registry,
    )
    if isinstance(result, decide.ScoreHeld):
        print("计分 Scoring: 暂缓 held", file=out)
        print(f"原因 Reason: {result.reason}", file=out)
        return
    assert result.evaluation is not None
    funds = funds_dict(data["funds"])
    _header("计分 Scoring", result.evaluation, data["project"], out)
    print(
        f"到位资金 Funds in place: {show(funds['amount'])} {funds['currency']}，{funds['arrived_on']} 到位 arrived"
        f"（{result.year}年第{result.quarter}季度 Q{result.quarter}）",
        file=out,
    )
    print(f"折人民币 In RMB: {show(result.amount_rmb)}（汇率 rate {show(result.rate)}）", file=out)
    deciding = result.deciding_rule or "无规则命中，按默认 no rule matched: default"
    print(
        f"倍数 Multiplier: ×{show(result.multiplier)}（决定规则 deciding rule: {deciding}；取最高值 the highest applies）",
        file=out,
    )
    print(f"计分 Points: {show(result.points)}", file=out)
    credited = ", ".join(result.credited_to) or "无 none"
    print(f"记分对象 Credited to: {credited}（{', '.join(result.credit_roles)}）", file=out)
    _print_rules(result.evaluation, out)
    _print_footer(result.evaluation, result.explanation.input_sha256, out)


def cmd_explain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if (args.project is None) == (args.file is None):
        print(
            "ERROR  give FILE.json or --project ID (one of them) / 请给出文件或项目编号", file=out
        )
        return 2
    if args.project is not None:
        from shared.rules.lifecycle import LifecycleError

        from .explain_project import explain_project

        try:
            return asyncio.run(
                explain_project(
                    args.url, args.project, args.rulesets or rulesets_dir(), _print_rules, out
                )
            )
        except LifecycleError as exc:
            print(f"ERROR  {exc}", file=out)
            return 1
    try:
        raw = json.loads(args.file.read_text(encoding="utf-8"))
        data = dict(raw) if isinstance(raw, Mapping) and "situation" in raw else _input(raw)
    except (OSError, ValueError) as exc:
        print(f"ERROR  {args.file}: {exc}", file=out)
        return 1
    kind = args.ruleset or (
        "notify" if "situation" in data else "scoring" if "funds" in data else "review"
    )
    if kind == "scoring" and "funds" not in data:
        print(
            f"ERROR  {args.file}: scoring needs `funds` (and `rates` for a foreign currency)",
            file=out,
        )
        return 1
    registry = _registry(args, out)
    if registry is None:
        return 1
    explainers: dict[str, Callable[..., None]] = {
        "review": _explain_review,
        "scoring": _explain_scoring,
        "notify": _explain_notify,
    }
    try:
        with registry:
            explainers[kind](data, args.on, registry, out)
    except FactsError as exc:
        for field, problem in exc.problems:
            print(f"ERROR  {args.file}: {field}: {problem}", file=out)
        return 1
    except (LookupError, ValueError) as exc:
        print(f"ERROR  {args.file}: {exc}", file=out)
        return 1
    return 0


def _explain_notify(
    data: dict[str, Any], on: dt.date | None, registry: RulesetRegistry, out: TextIO
) -> None:
    """A situation ({on, situation: {days_without_visit: 9, ...}}) judged with the notify
    thresholds in force: the alerts, and how far each threshold is."""
    import math

    from services.notify.model import quarter_of
    from services.notify.params import NotifyParams, judge
    from shared.rules.ruletest import Situation

    day = on or _date_field(data, "on")
    if day is None:
        raise ValueError("give `on` (the day judged) / 请给出日期 on")
    ruleset = registry.in_force("notify", day)
    params = NotifyParams.model_validate({n: p.value for n, p in ruleset.parameters.items()})
    situation = Situation.model_validate(data.get("situation") or {})
    alerts = judge(situation, day, params)
    print(f"提醒 Notify — {ruleset.key}：{ruleset.title.zh} / {ruleset.title.en}", file=out)
    print(f"生效期 In force: {ruleset.effective}；依据日期 judged as of: {day}", file=out)
    print(f"提醒 Alerts: {', '.join(alerts) or '无 none'}", file=out)
    s = situation
    lines: list[tuple[str, int, int | None]] = []  # (alert, threshold, value)
    if s.days_without_visit is not None:
        lines.append(("visit_overdue", params.visit_overdue_days, s.days_without_visit))
        lines.append(("visit_escalated", params.visit_escalate_days, s.days_without_visit))
    for alert, name, value in (
        ("stalled_signed", "signed_not_started", s.signed_not_started_days),
        ("stalled_land", "waiting_for_land", s.waiting_for_land_days),
        ("stalled_funds", "lacking_funds", s.lacking_funds_days),
    ):
        if value is not None:
            lines.append((alert, getattr(params.stalled, name).after_days, value))
    print("\n门槛 Thresholds (raised after more than N days):", file=out)
    for alert, threshold, value in lines:
        state = "✓" if alert in alerts else "✗"
        more = (
            ""
            if alert in alerts
            else f"；再过 {threshold + 1 - value} 天 in {threshold + 1 - value} more days"
        )
        print(f"  {state} {alert}: N = {threshold}（现为 now {value}）{more}", file=out)
    if s.days_to_agenda_deadline is not None:
        state = "✓" if "materials_due" in alerts else "✗"
        print(
            f"  {state} materials_due: within {params.materials_due_within_days} days of the "
            f"agenda deadline（现为 now {s.days_to_agenda_deadline}）",
            file=out,
        )
    if s.signed_this_quarter is not None:
        q = quarter_of(day)[0]
        target = getattr(params.signing_targets, f"Q{q}")
        need = math.ceil(params.signing_behind.expected_share * target)
        state = "✓" if "signing_behind" in alerts else "✗"
        print(
            f"  {state} signing_behind: Q{q} target {target}; after {params.signing_behind.check_after} "
            f"of the quarter fewer than {need} signed（现为 now {s.signed_this_quarter}）",
            file=out,
        )
    print("\n使用的参数 Parameters used:", file=out)
    for name, p in ruleset.parameters.items():
        print(f"  {name} = {show(p.value, limit=20)}", file=out)


def main(argv: list[str] | None = None) -> int:
    """`python -m investflow.rules_cli rules ...`, the same commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="investflow")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())


# --- publish / rollback / history ------------------------------------------------------------


def _candidates(files: list[Path]) -> dict[str, list[Any]]:
    """The files to publish, validated as `rules validate` does, grouped by ruleset id."""
    from shared.rules.lifecycle import Candidate
    from shared.rules.load import _located_in_file, load_file, overlap_problems

    problems: list[Problem] = []
    loaded: list[Candidate] = []
    for path in files:
        try:
            ruleset = load_file(path)
        except RulesetError as exc:
            problems.extend(exc.problems)
            continue
        loaded.append(Candidate(ruleset, str(path), path.read_text(encoding="utf-8")))
    problems.extend(
        _located_in_file(p) for p in overlap_problems([(c.ruleset, c.file) for c in loaded])
    )
    if problems:
        raise RulesetError(problems)
    groups: dict[str, list[Any]] = {}
    for c in loaded:
        groups.setdefault(c.ruleset.id, []).append(c)
    return groups


def _check_tests(tests_dir: Path, candidates: list[Any]) -> None:
    """The rule tests a publication will carry must be readable and name rules that exist."""
    from shared.rules.ruletest import load_tests_text, read_text, rule_id_problems, rule_test_files

    problems: list[Problem] = []
    for path in rule_test_files([tests_dir]) if tests_dir.is_dir() else []:
        try:
            text = read_text(path)
            parsed = load_tests_text(text, str(path))
        except RulesetError as exc:
            problems.extend(exc.problems)
            continue
        ids = {c.id for c in candidates}
        if parsed.ruleset in ids:
            problems.extend(rule_id_problems(parsed, str(path), candidates, text))
    if problems:
        raise RulesetError(problems)


def _print_confirmation(confirmation: Any, services: list[str], timeout: float, out: TextIO) -> int:
    """Who loaded it, who refused it, who said nothing: non-zero unless every service loaded it."""
    loaded = confirmation.loaded()
    refused = confirmation.refused()
    silent = [s for s in services if s not in confirmation.heard]
    if loaded:
        print(f"  live in / 已生效: {', '.join(loaded)}", file=out)
    for service, error in refused.items():
        print(
            f"  {service} refused it and keeps its running versions / 服务拒绝加载:\n    "
            + error.replace("\n", "\n    "),
            file=out,
        )
    if silent:
        print(
            f"  not confirmed within {timeout:g}s by / 超时未确认: {', '.join(silent)}",
            file=out,
        )
    return 0 if not refused and not silent else 1


def _describe(publication: Any) -> str:
    return ", ".join(
        f"{publication.ruleset_id}@{v['version']} ({v.get('effective', '?')})"
        for v in publication.versions
    )


async def _publish(args: argparse.Namespace, out: TextIO) -> int:
    from shared.rules.lifecycle import (
        LifecycleError,
        agreed_view,
        compose,
        connect,
        kv_or_none,
        latest,
        live_views,
        new_publication,
        put_and_confirm,
        rules_services,
    )
    from shared.rules.registry import rulesets_dir, test_texts

    groups = _candidates(args.files)  # validated before anything is sent anywhere
    tests_dir = args.tests or rulesets_dir() / "tests"
    _check_tests(tests_dir, [c.ruleset for cs in groups.values() for c in cs])
    tests = test_texts(tests_dir)
    for ruleset_id in groups:
        if not tests.get(ruleset_id):
            raise LifecycleError(
                f"no rule tests for {ruleset_id} in {tests_dir}: a publication carries its "
                f"tests / {tests_dir} 中没有 {ruleset_id} 的规则测试"
            )
    nc = await connect(args.url)
    code = 0
    try:
        kv = await kv_or_none(nc)
        if kv is None:
            raise LifecycleError(
                f"no rulesets bucket on {nc.connected_url.netloc if nc.connected_url else args.url}: "
                "no investflow service has run against this server; check NATS_URL "
                "/ 该服务器上没有规则集存储"
            )
        services = rules_services()
        views = await live_views(nc, services, timeout=min(args.timeout, 10.0))
        for ruleset_id, candidates in groups.items():
            view = agreed_view(views, ruleset_id)
            versions, _ = compose(
                ruleset_id, view["versions"], candidates, f"running in {', '.join(views)}"
            )
            entry = await latest(kv, ruleset_id)
            last = entry.revision if entry is not None else None
            publication = new_publication(
                ruleset_id, versions, tests[ruleset_id], "publish", args.note or "", last
            )
            await asyncio.to_thread(publication.check)  # exactly what each service will check
            if last is None:
                # What runs now is stored first, so a rollback can always return to it,
                # whatever the local rulesets/ holds later.
                baseline = new_publication(
                    ruleset_id,
                    [
                        {
                            "file": v["origin"].rsplit("/", 1)[-1],
                            "version": v["version"],
                            "effective": v["effective"],
                            "text": v["text"],
                        }
                        for v in view["versions"]
                    ],
                    [(t["file"], t["text"]) for t in view["tests"]],
                    "baseline",
                    "what the services ran before the first publication / 首次发布前运行的版本",
                    None,
                )
                last, _ = await put_and_confirm(nc, kv, baseline, None, services, args.timeout)
                publication = new_publication(
                    ruleset_id, versions, tests[ruleset_id], "publish", args.note or "", last
                )
            revision, confirmation = await put_and_confirm(
                nc, kv, publication, last, services, args.timeout
            )
            print(
                f"published {_describe(publication)} as revision {revision} "
                f"(replaces revision {last}) by {publication.by['user']} as "
                f"{publication.by['nats']} / 已发布",
                file=out,
            )
            code |= _print_confirmation(confirmation, services, args.timeout, out)
    finally:
        await nc.close()
    return code


def _run_lifecycle(work: Any, verb: str, out: TextIO) -> int:
    import asyncio

    from shared.rules.lifecycle import LifecycleError

    try:
        return int(asyncio.run(work))
    except RulesetError as exc:
        print(f"not {verb} / 未{'发布' if verb == 'published' else '回滚'}:", file=out)
        for problem in exc.problems:
            print(f"ERROR  {problem}", file=out)
        return 1
    except (LifecycleError, OSError) as exc:
        print(f"not {verb} / 未{'发布' if verb == 'published' else '回滚'}: {exc}", file=out)
        return 1


def cmd_publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run_lifecycle(_publish(args, out or sys.stdout), "published", out or sys.stdout)


def _newest(publication: Any) -> str | None:
    dated = [(v.get("effective", ""), v["version"]) for v in publication.versions]
    return max(dated)[1] if dated else None


async def _rollback(args: argparse.Namespace, out: TextIO) -> int:
    from shared.rules.lifecycle import (
        LifecycleError,
        connect,
        history,
        kv_or_none,
        new_publication,
        put_and_confirm,
        rules_services,
    )

    nc = await connect(args.url)
    try:
        kv = await kv_or_none(nc)
        entries = await history(kv, args.ruleset_id) if kv is not None else []
        valid = [(rev, p) for rev, p, _ in entries if p is not None]
        if not valid:
            raise LifecycleError(
                f"nothing was ever published for {args.ruleset_id} on this server: the services "
                f"run their own rulesets/ and there is nothing to roll back / 无发布记录"
            )
        current_rev, current = valid[-1]
        earlier = [(rev, p) for rev, p in valid if rev < current_rev]
        target: tuple[int, Any] | None = None
        if args.revision is not None:
            target = next(((r, p) for r, p in valid if r == args.revision), None)
        elif args.version is not None:
            target = next(
                ((r, p) for r, p in reversed(earlier) if _newest(p) == args.version), None
            )
        else:
            target = next(((r, p) for r, p in valid if r == current.replaces), None)
        if target is None:
            known = "; ".join(f"revision {r}: {_describe(p)}" for r, p in valid)
            raise LifecycleError(
                f"no earlier publication of {args.ruleset_id} to return to"
                + (f" with {args.version} as its newest version" if args.version else "")
                + f" (history: {known}) / 无可回滚的版本"
            )
        rev, old = target
        publication = new_publication(
            args.ruleset_id,
            [dict(v) for v in old.versions],
            [(t["file"], t["text"]) for t in old.tests],
            "rollback",
            args.note or f"rollback to revision {rev}",
            current_rev,
            restores=rev,
        )
        if old.action != "baseline":
            await asyncio.to_thread(publication.check)
        services = rules_services()
        revision, confirmation = await put_and_confirm(
            nc, kv, publication, current_rev, services, args.timeout
        )
        print(
            f"{_describe(publication)} decide again (revision {rev}, now revision {revision}; "
            f"replaces revision {current_rev}) / 已回滚",
            file=out,
        )
        return _print_confirmation(confirmation, services, args.timeout, out)
    finally:
        await nc.close()


def cmd_rollback(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run_lifecycle(_rollback(args, out or sys.stdout), "rolled back", out or sys.stdout)


async def _history(args: argparse.Namespace, out: TextIO) -> int:
    from shared.rules.lifecycle import LifecycleError, connect, history, kv_or_none

    nc = await connect(args.url)
    try:
        kv = await kv_or_none(nc)
        if kv is None:
            raise LifecycleError(
                "no rulesets bucket on this server: nothing was published / 无发布记录"
            )
        # Every ruleset id the contract knows, not kv.keys(): that listing can come back
        # short (nats-io/nats.py#842); history() of an id never published is empty.
        from shared.rules.model import RULESET_IDS

        ids = [args.ruleset_id] if args.ruleset_id else list(RULESET_IDS)
        rows: list[dict[str, Any]] = []
        for ruleset_id in ids:
            for rev, p, problem in await history(kv, ruleset_id):
                if p is None:
                    rows.append({"ruleset": ruleset_id, "revision": rev, "problem": problem})
                    continue
                rows.append(
                    {
                        "ruleset": ruleset_id,
                        "revision": rev,
                        "at": p.at,
                        "by": p.by,
                        "action": p.action,
                        "note": p.note,
                        "replaces": p.replaces,
                        "restores": p.restores,
                        "versions": [
                            {
                                "version": v["version"],
                                "effective": v.get("effective"),
                                "file": v["file"],
                                "sha256": v["sha256"],
                            }
                            for v in p.versions
                        ],
                        "tests": [{"file": t["file"], "sha256": t["sha256"]} for t in p.tests],
                    }
                )
    finally:
        await nc.close()
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=2), file=out)
        return 0
    if not rows:
        print("nothing published yet / 尚无发布记录", file=out)
    for row in rows:
        if "problem" in row:
            print(
                f"{row['ruleset']} revision {row['revision']}: unreadable: {row['problem']}",
                file=out,
            )
            continue
        by = row["by"]
        who = f"{by.get('user', '?')}@{by.get('host', '?')} as {by.get('nats', '?')}"
        extra = f", restores revision {row['restores']}" if row["restores"] else ""
        replaces = f"replaces {row['replaces']}" if row["replaces"] else "the first"
        print(
            f"{row['ruleset']} revision {row['revision']}  {row['at']}  {row['action']}  by {who}"
            f"  ({replaces}{extra})",
            file=out,
        )
        if row["note"]:
            print(f"    note / 说明: {row['note']}", file=out)
        for v in row["versions"]:
            print(
                f"    {row['ruleset']}@{v['version']}  {v['effective']}  {v['file']}  "
                f"sha256 {v['sha256'][:16]}",
                file=out,
            )
    return 0


def cmd_history(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return _run_lifecycle(_history(args, out or sys.stdout), "read", out or sys.stdout)


# --- what-if --------------------------------------------------------------------------------


async def _live_scoring(url: str | None) -> list[tuple[Any, str]]:
    """The scoring versions the running scoring service decides with."""
    from shared.rules.lifecycle import connect, live_views
    from shared.rules.load import load_text

    nc = await connect(url)
    try:
        views = await live_views(nc, ["scoring"], timeout=10.0)
    finally:
        await nc.close()
    versions = views["scoring"].get("scoring", {}).get("versions", [])
    return [(load_text(v["text"], f"live:{v['origin']}"), f"live:{v['origin']}") for v in versions]


def _baseline(args: argparse.Namespace, proposal_files: list[Path]) -> tuple[list[Any], str]:
    from shared.rules.load import load_paths, ruleset_files

    against = args.against or ["live"]
    if against == ["live"]:
        return asyncio.run(_live_scoring(args.url)), "live"
    proposed = {p.resolve() for p in proposal_files}
    # A proposal file inside the directory compared with is the proposal, not the baseline.
    files = [f for f in ruleset_files([Path(a) for a in against]) if f.resolve() not in proposed]
    return [(r, o) for r, o in load_paths(files) if r.id == "scoring"], " ".join(against)


def _record_rows(engine: Any, year: int, old: Any, new: Any) -> list[dict[str, Any]]:
    """Each funds record of the year, old vs new: version, multiplier, deciding rule, points."""
    from decimal import ROUND_HALF_UP, Decimal

    from services.scoring import whatif

    facts = whatif.load_facts(engine, year)
    sides = [whatif.Replayer(old), whatif.Replayer(new)]
    rows = []
    for pid, amount_fen, currency, day in facts.funds:
        rate = Decimal(1) if currency == "CNY" else facts.rates.get((day, currency))
        if rate is None:
            continue
        project = facts.projects[pid]
        pf = {k: v for k, v in project.lead.items() if k != "documents"}
        pf["filed"] = {str(d["type"]): True for d in project.lead.get("documents", [])}
        if project.sponsor_leader is not None:
            pf["sponsor_leader"] = project.sponsor_leader
        amount = Decimal(amount_fen) / 100
        funds = {"amount": amount, "currency": currency, "arrived_on": day, "rate": rate}
        out: list[dict[str, Any] | None] = []
        for replayer in sides:
            ruleset = replayer.version(day)
            if ruleset is None:
                out.append(None)
                continue
            if replayer.reads(ruleset)[1]:
                scored = replayer.full(project, funds)
                if isinstance(scored, str):
                    out.append(None)
                    continue
                out.append(
                    {
                        "version": ruleset.version,
                        "multiplier": scored.multiplier,
                        "deciding_rule": scored.deciding_rule,
                        "points": scored.points,
                    }
                )
                continue
            verdict, _ = replayer.for_project(project, pf, ruleset, day, funds)
            if isinstance(verdict, str):
                out.append(None)
                continue
            exact = amount * rate
            out.append(
                {
                    "version": ruleset.version,
                    "multiplier": verdict.multiplier,
                    "deciding_rule": verdict.deciding_rule,
                    "points": (exact * verdict.multiplier).quantize(Decimal("0.01"), ROUND_HALF_UP),
                }
            )
        before, after = out
        changed = (before or {}).get("points") != (after or {}).get("points") or (before or {}).get(
            "multiplier"
        ) != (after or {}).get("multiplier")
        rows.append(
            {
                "project_id": pid,
                "arrived_on": day.isoformat(),
                "amount": amount,
                "currency": currency,
                "old": before,
                "new": after,
                "changed": changed,
            }
        )
    return rows


def _render_records(rows: list[dict[str, Any]], fmt: str) -> str:
    import csv
    import io

    changed = [r for r in rows if r["changed"]]

    def side(s: dict[str, Any] | None, key: str) -> str:
        return "" if s is None or s.get(key) is None else show(s[key])

    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            ["project_id", "arrived_on", "amount", "currency"]
            + [
                f"{p}_{k}"
                for p in ("old", "new")
                for k in ("version", "multiplier", "deciding_rule", "points")
            ]
            + ["change"]
        )
        for r in changed:
            delta = (r["new"] or {}).get("points", 0) - (r["old"] or {}).get("points", 0)
            w.writerow(
                [r["project_id"], r["arrived_on"], show(r["amount"]), r["currency"]]
                + [
                    side(r[p], k)
                    for p in ("old", "new")
                    for k in ("version", "multiplier", "deciding_rule", "points")
                ]
                + [show(delta)]
            )
        return buf.getvalue()
    lines = [
        "",
        f"Changed funds records / 变化的到位资金记录: {len(changed)} of {len(rows)}",
        f"  {'project':<24}{'arrived':<12}{'amount':>16} {'old ×':>6} {'old rule':<20}{'old points':>18}"
        f" {'new ×':>6} {'new rule':<20}{'new points':>18}{'change':>18}",
    ]
    for r in changed:
        o, n = r["old"] or {}, r["new"] or {}
        delta = n.get("points", 0) - o.get("points", 0)
        lines.append(
            f"  {r['project_id']:<24}{r['arrived_on']:<12}{show(r['amount']):>16} "
            f"{side(o, 'multiplier'):>6} {side(o, 'deciding_rule') or '-':<20}{side(o, 'points'):>18} "
            f"{side(n, 'multiplier'):>6} {side(n, 'deciding_rule') or '-':<20}{side(n, 'points'):>18}"
            f"{delta:>+18,.2f}"
        )
    return "\n".join(lines)


def _jsonable_row(r: dict[str, Any]) -> dict[str, Any]:
    def side(s: dict[str, Any] | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {k: (show(v) if k in ("multiplier", "points") else v) for k, v in s.items()}

    return {**r, "amount": show(r["amount"]), "old": side(r["old"]), "new": side(r["new"])}


def cmd_whatif(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from services.scoring import whatif
    from shared.rules.lifecycle import LifecycleError
    from shared.rules.load import load_file

    from .scoring_cli import CliError, _directory, _engine, _overrides

    out = out or sys.stdout
    files = [*args.files, *args.more_files]
    if not files and not args.set:
        print("ERROR  give a proposal: FILE.yaml ... and/or --set NAME=VALUE", file=out)
        return 2
    engine = None
    sides: Any = None
    try:
        try:
            overrides = _overrides(args.set)
            proposal = [(load_file(f), str(f)) for f in files]
            for ruleset, origin in proposal:
                if ruleset.id != "scoring":
                    raise RulesetError(
                        [
                            Problem(
                                origin,
                                "",
                                "id",
                                f"a what-if needs scoring rulesets, not {ruleset.id}",
                            )
                        ]
                    )
            from shared.rules.load import overlap_problems

            problems = overlap_problems(proposal)
            if problems:
                raise RulesetError(problems)
            baseline, against = _baseline(args, files)
            engine = _engine(args)
        except RulesetError as exc:
            for p in exc.problems:
                print(f"ERROR  {p}", file=out)
            print("the proposal is not valid; nothing replayed / 方案无效，未测算", file=out)
            return 1
        except (LifecycleError, CliError) as exc:
            print(f"ERROR  {exc}", file=out)
            if isinstance(exc, LifecycleError):
                print("  (to compare with files instead: --against rulesets/)", file=out)
            return 1
        sides = whatif.proposal_rules(baseline, proposal, overrides)
        base, proposed, changes = sides.base, sides.proposed, sides.changes
        label = " ".join(map(str, files)) + (" " if files and args.set else "") + " ".join(args.set)
        result = whatif.run(
            engine,
            args.year,
            base,
            proposed,
            proposal=f"{label} against {against}",
            ruleset_changes=changes,
            directory=_directory(),
        )
        rows = _record_rows(engine, args.year, base, proposed) if args.records else []
        if args.format == "json":
            body = result.to_json()
            if args.records:
                body["records"] = [_jsonable_row(r) for r in rows if r["changed"]]
            print(json.dumps(body, ensure_ascii=False, indent=2), file=out)
        elif args.format == "csv" and args.records:
            print(_render_records(rows, "csv"), file=out, end="")
        else:
            print(whatif.render(result, args.format, only_changed=args.changed_only), file=out)
            if args.records:
                print(_render_records(rows, "table"), file=out)
        return 0
    finally:
        if sides is not None:
            sides.close()
        if engine is not None:
            engine.dispose()
