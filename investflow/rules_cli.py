"""`investflow rules ...`: the rule maintainers' tools.

    investflow rules validate PATH...          ruleset files (and rule-test files) are well-formed
    investflow rules test PATH...              run rule tests; `N passed, M failed`; non-zero on failure
    investflow rules explain FILE.json         a decision, why, and what would change it
    investflow rules whatif --ruleset F --year Y   the year rescored under a proposal, old vs new
    investflow rules publish FILE              validate, test, and make it decide in the running services
    investflow rules rollback ID VERSION       make an earlier version decide again

Rulesets are read from `rulesets/` (or $INVESTFLOW_RULESETS, or `--rulesets DIR`). A ruleset
that does not validate is never loaded: `test` and `explain` refuse to run on it.
"""

from __future__ import annotations

import argparse
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
from shared.rules.load import parse_yaml
from shared.rules.model import Problem
from shared.rules.ruletest import load_tests, run


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
    test.set_defaults(func=cmd_test)

    explain = sub.add_parser(
        "explain",
        help="decide one project (JSON) and explain it, in Chinese and English",
        description=(
            "FILE.json holds a lead, or {project, documents?, meeting_on?} for review, or "
            "{project, funds, rates?, sponsor_leader?} for scoring (the fields of a rule-test case)."
        ),
    )
    explain.add_argument("file", type=Path, metavar="FILE.json")
    explain.add_argument(
        "--on", type=_day, default=None, help="pick the ruleset version of this day"
    )
    explain.add_argument("--ruleset", choices=["review", "scoring"], default=None)
    explain.add_argument(
        "--rulesets", type=Path, default=None, metavar="DIR", help="default: rulesets/"
    )
    explain.set_defaults(func=cmd_explain)

    publish = sub.add_parser(
        "publish",
        help="validate, run its rule tests, and publish a version to the running services",
    )
    publish.add_argument("file", type=Path, metavar="FILE.yaml")
    publish.add_argument("--url", default=None, help="NATS server (default: $NATS_URL)")
    publish.add_argument(
        "--tests", type=Path, default=None, metavar="DIR", help="default: rulesets/tests/"
    )
    publish.set_defaults(func=cmd_publish)

    rollback = sub.add_parser(
        "rollback", help="make an earlier version decide again (published before, or in rulesets/)"
    )
    rollback.add_argument("ruleset_id", metavar="ID")
    rollback.add_argument("version", metavar="VERSION")
    rollback.add_argument("--url", default=None, help="NATS server (default: $NATS_URL)")
    rollback.add_argument(
        "--tests", type=Path, default=None, metavar="DIR", help="default: rulesets/tests/"
    )
    rollback.set_defaults(func=cmd_rollback)
    # What-if belongs to scoring (it replays scoring's stored facts); maintainers find it here.
    from .scoring_cli import register_whatif

    register_whatif(sub)

    for p in (publish, rollback):
        p.add_argument(
            "--wait",
            type=float,
            default=30.0,
            help="seconds to wait for running services to load it",
        )


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


def cmd_validate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    files = _yaml_files(args.paths)
    rulesets: list[Path] = []
    problems: list[Problem] = []
    for path in files:
        try:
            data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            problems.append(Problem(str(path), "", "", f"cannot read: {exc.strerror} / 无法读取"))
            continue
        except RulesetError as exc:
            problems.extend(exc.problems)
            continue
        if isinstance(data, Mapping) and "cases" in data:
            try:
                load_tests(path)
                print(f"ok     {path} (rule tests)", file=out)
            except RulesetError as exc:
                problems.extend(exc.problems)
        else:
            rulesets.append(path)
    if rulesets:
        try:
            for ruleset, origin in load_paths(rulesets):
                print(
                    f"ok     {origin}: {ruleset.key}, in force {ruleset.effective}, "
                    f"{len(ruleset.rules)} rules, {len(ruleset.parameters)} parameters",
                    file=out,
                )
        except RulesetError as exc:
            problems.extend(exc.problems)
    for problem in problems:
        print(f"ERROR  {problem}", file=out)
    invalid = {p.file for p in problems}
    valid = [f for f in files if str(f) not in invalid]
    print(f"{len(valid)} valid, {len(invalid)} invalid", file=out)
    return 1 if problems or not files else 0


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
    with registry:
        result = run(args.paths, registry)
    for line in result.lines():
        print(line, file=out)
    if not result.results and not result.problems:
        print(f"no rule-test cases found in {' '.join(args.paths)}", file=out)
        print(result.summary(), file=out)
        return 1
    print(result.summary(), file=out)
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


def _print_rules(evaluation: Any, out: TextIO) -> None:
    reports = report(evaluation)
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
    try:
        data = _input(json.loads(args.file.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        print(f"ERROR  {args.file}: {exc}", file=out)
        return 1
    kind = args.ruleset or ("scoring" if "funds" in data else "review")
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
    }
    try:
        with registry:
            explainers[kind](data, args.on, registry, out)
    except FactsError as exc:
        for field, problem in exc.problems:
            print(f"ERROR  {args.file}: {field}: {problem}", file=out)
        return 1
    except LookupError as exc:
        print(f"ERROR  {args.file}: {exc}", file=out)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m investflow.rules_cli rules ...`, the same commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="investflow")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())


# --- publish / rollback -------------------------------------------------------------------


async def _publishing(url: str | None, work, wait: float):  # type: ignore[no-untyped-def]
    """Connect, run the publication, and wait for every rules-deciding service to load it."""
    import nats

    from shared.rules import published
    from shared.settings import Settings

    from .services import SERVICES

    settings = Settings.from_env()
    nc = await nats.connect(
        url or settings.nats_url,
        connect_timeout=settings.connect_timeout_s,
        max_reconnect_attempts=1,
    )
    try:
        expected = [s.name for s in SERVICES if s.rules]
        ruleset, revision, heard = await published.confirmations(
            nc, expected, lambda: work(nc.jetstream()), wait
        )
        return expected, ruleset, revision, heard
    finally:
        await nc.close()


def _report_live(expected: list[str], heard: dict[str, dict], out: TextIO) -> int:
    """Say where the version is live; a service that refused it makes the command fail."""
    refused = {s: h for s, h in heard.items() if not h.get("loaded")}
    for service, status in refused.items():
        print(
            f"  {service} refused it and keeps its running version / 服务拒绝加载: {status.get('error')}",
            file=out,
        )
    silent = [s for s in expected if s not in heard]
    if silent:
        print(
            f"  not yet confirmed by / 尚未确认: {', '.join(silent)} (not running, or still loading)",
            file=out,
        )
    live = [s for s, h in heard.items() if h.get("loaded")]
    if live:
        print(f"  live in / 已生效: {', '.join(live)}", file=out)
    return 1 if refused else 0


def _gate(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from shared.rules.registry import rulesets_dir
    from shared.rules.ruletest import gate_on_rule_tests

    return gate_on_rule_tests(args.tests or rulesets_dir() / "tests")


def cmd_publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import asyncio

    from shared.rules import published

    out = out or sys.stdout
    try:
        text = args.file.read_text(encoding="utf-8")
        expected, ruleset, revision, heard = asyncio.run(
            _publishing(
                args.url,
                lambda js: published.publish(js, text, str(args.file), _gate(args)),
                args.wait,
            )
        )
    except RulesetError as exc:
        print(f"not published / 未发布:\n{exc}", file=out)
        return 1
    except OSError as exc:
        print(f"not published / 未发布: {exc}", file=out)
        return 1
    print(
        f"published {ruleset.key} ({ruleset.effective}) as revision {revision} / 已发布", file=out
    )
    return _report_live(expected, heard, out)


def cmd_rollback(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import asyncio

    from shared.rules import published
    from shared.rules.registry import rulesets_dir

    out = out or sys.stdout
    try:
        expected, ruleset, revision, heard = asyncio.run(
            _publishing(
                args.url,
                lambda js: published.rollback(
                    js, args.ruleset_id, args.version, _gate(args), rulesets_dir()
                ),
                args.wait,
            )
        )
    except (RulesetError, OSError) as exc:
        print(f"not rolled back / 未回滚:\n{exc}", file=out)
        return 1
    print(f"{ruleset.key} decides again from revision {revision} / 已回滚", file=out)
    return _report_live(expected, heard, out)
