"""`investflow rules explain --project ID`: a real project's decisions, from their records.

Every review and scoring decision carries its record (shared/contract `Explanation`: ruleset id
and version, matched rules, parameter values used, deciding rule, the input and its sha256).
This reads the records from the streams the services publish them on (REVIEW, SCORE), by
sequence as the Center reads streams (no service's table is read, no consumer made), finds the
ruleset version each names (what the services run, the publication history in the rulesets
bucket, else the local rulesets/), replays the recorded input under it to check the record
(same decision, same digest), and says, rule by rule, what would change the outcome — the
same report `rules explain FILE.json` gives.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from shared import subjects
from shared.rules import RulesetError, RulesetRegistry
from shared.rules.decision import input_sha256
from shared.rules.explain import show
from shared.rules.published import sha256

# The decisions that carry a record, in the order a project meets them.
DECISIONS: tuple[tuple[str, str], ...] = (
    ("REVIEW", "review.screened"),
    ("REVIEW", "review.materials"),
    ("REVIEW", "review.recognition"),
    ("SCORE", "score.credited"),
)
REVERSED = ("SCORE", "score.reversed")
TITLES = {
    "review.screened": "初步筛选 Screening",
    "review.materials": "评审会材料 Committee materials",
    "review.recognition": "认定 Recognition",
    "score.credited": "计分 Scoring",
}
# The rules each decision considers (the rest of the version decides other things).
CONSIDERED = {
    "review.screened": ("terminate", "route"),
    "review.materials": ("require_materials",),
    "review.recognition": ("terminate", "not_recognised"),
}


@dataclass(frozen=True)
class Record:
    stream: str
    seq: int
    subject: str
    event: dict[str, Any]


async def _read(js: Any, stream: str, subject: str, project_id: str) -> list[Record]:
    """Every message on `subject` about `project_id`, in stream order, read by sequence (the
    Center's staff may read any stream so, but create no consumer on it: deploy_cli.py)."""
    from nats.js.errors import NotFoundError

    out: list[Record] = []
    # The project's own key (any partition), and what a stream kept from before keys.
    for stored in (f"{subject}.*.{subjects.key_token(project_id)}", subject):
        info = await js.stream_info(stream, subjects_filter=stored)
        expected = sum((info.state.subjects or {}).values())
        seq = info.state.first_seq or 1
        for _ in range(expected):
            try:  # the next message on the subject from `seq` on (STREAM.MSG.GET next_by_subj)
                msg = await js.get_msg(stream, seq=seq, subject=stored, next=True)
            except NotFoundError:
                break
            seq = int(msg.seq or seq) + 1
            try:
                event = json.loads(msg.data or b"")
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("project_id") == project_id:
                out.append(Record(stream, int(msg.seq or 0), subject, event))
    return sorted(out, key=lambda r: r.seq)


async def read_records(nc: Any, project_id: str) -> tuple[list[Record], list[Record]]:
    """The latest record of each decision about the project (per funds record for scoring),
    and the reversals of credited records."""
    js = nc.jetstream()
    latest: dict[tuple[str, str], Record] = {}
    for stream, subject in DECISIONS:
        for record in await _read(js, stream, subject, project_id):
            latest[(subject, str(record.event.get("funds_id", "")))] = record
    reversed_ = await _read(js, *REVERSED, project_id)
    return sorted(latest.values(), key=lambda r: (r.stream != "REVIEW", r.seq)), reversed_


async def known_versions(
    nc: Any, services: list[str]
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(ruleset id, version) -> [(YAML text, where it was found)], best source first: what
    the services run now, then every publication in the bucket (newest first)."""
    from shared.rules.lifecycle import history, kv_or_none
    from shared.rules.model import RULESET_IDS
    from shared.rules.published import live_subject

    found: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def add(ruleset_id: str, version: str, text: str | None, where: str) -> None:
        if text and all(t != text for t, _ in found.get((ruleset_id, version), [])):
            found.setdefault((ruleset_id, version), []).append((text, where))

    async def ask(service: str) -> tuple[str, dict[str, Any] | None]:
        try:
            msg = await nc.request(live_subject(service), b"", timeout=5)
            return service, json.loads(msg.data)["rulesets"]
        except Exception:  # a service not running: the bucket and the files remain
            return service, None

    for service, view in await asyncio.gather(*(ask(s) for s in services)):
        for ruleset_id, entry in (view or {}).items():
            for v in entry.get("versions", []):
                add(ruleset_id, v["version"], v.get("text"), f"live in {service}")
    kv = await kv_or_none(nc)
    if kv is not None:
        for ruleset_id in RULESET_IDS:
            for revision, publication, _ in reversed(await history(kv, ruleset_id)):
                for v in publication.versions if publication is not None else []:
                    add(ruleset_id, v["version"], v["text"], f"kv:{ruleset_id}@{revision}")
    return found


def local_versions(directory: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    from shared.rules.load import ruleset_files

    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for path in ruleset_files([directory]) if directory.is_dir() else []:
        try:
            from shared.rules.load import load_file

            ruleset = load_file(path)
        except (RulesetError, OSError):
            continue
        found.setdefault((ruleset.id, ruleset.version), []).append(
            (path.read_text(encoding="utf-8"), str(path))
        )
    return found


class Replayer:
    """A registry per ruleset text, each holding that one version (closed at the end)."""

    def __init__(self) -> None:
        self._registries: dict[str, RulesetRegistry] = {}

    def registry(self, text: str, where: str) -> RulesetRegistry:
        if text not in self._registries:
            from shared.rules.load import load_text

            registry = RulesetRegistry()
            registry.load(load_text(text, where), where, text=text)
            self._registries[text] = registry
        return self._registries[text]

    def close(self) -> None:
        for registry in self._registries.values():
            registry.close()


def _replay(record: Record, rules: RulesetRegistry) -> tuple[Any, Any]:
    """(the replayed decision's Explanation, its evaluation) from the recorded input."""
    from services.review import decide as review
    from services.scoring import decide as scoring

    data = record.event["explanation"]["input"]
    on = dt.date.fromisoformat(data["on"])
    meeting = dt.date.fromisoformat(data["meeting_on"]) if data.get("meeting_on") else None
    sponsor = data.get("sponsor_leader")
    if record.subject == "score.credited":
        funds = data["funds"]
        result = scoring.score(
            data["project"],
            funds,
            {str(funds["currency"]): data["rate"]},
            sponsor_leader=sponsor,
            on=on,
            rules=rules,
        )
        if isinstance(result, scoring.ScoreHeld):
            raise ValueError(f"the replay is held: {result.reason}")
        return result.explanation, result.evaluation
    r = review.review(
        data["project"], data["documents"], meeting, on=on, rules=rules, sponsor_leader=sponsor
    )
    decision = {
        "review.screened": r.screening,
        "review.materials": r.materials,
        "review.recognition": r.recognition,
    }[record.subject]
    return decision.explanation, r.evaluation


def _outcome(record: Record) -> str:
    e = record.event
    if record.subject == "review.screened":
        if e.get("outcome") == "terminated":
            return f"告知终止洽谈 terminated — 理由 reasons: {', '.join(e.get('reasons', []))}"
        return f"受理 accepted — 流程 track: {e.get('track')}"
    if record.subject == "review.materials":
        state = (
            "齐全 complete"
            if e.get("complete")
            else f"未齐 incomplete — 缺 missing: {', '.join(e.get('missing_materials', []))}"
        )
        late = "；逾期 late: moved to the next meeting" if e.get("late") else ""
        deadline = f"；截止 deadline: {e['deadline']}" if e.get("deadline") else ""
        return state + deadline + late
    if record.subject == "review.recognition":
        if e.get("recognized"):
            return "予以认定 recognised"
        extra = []
        if e.get("committee_rejected"):
            extra.append("集体决策未通过 rejected by the committee")
        if e.get("missing_proofs"):
            extra.append(f"缺证明 missing proofs: {', '.join(e['missing_proofs'])}")
        blockers = ", ".join(e.get("recognition_blockers", [])) or "—"
        return f"不予认定 not recognised — 障碍 blockers: {blockers}" + "".join(
            f"；{x}" for x in extra
        )
    return (
        f"到位资金 funds {e.get('funds_id')}: {show_amount(e.get('amount_rmb'))} 元 RMB × "
        f"{e.get('multiplier')} = {show_amount(e.get('points'))} 分 points"
        f"（{e.get('year')}年第{e.get('quarter')}季度 Q{e.get('quarter')}）；记分对象 credited to: "
        f"{', '.join(e.get('credited_to', [])) or '无 none'}"
    )


def show_amount(value: Any) -> str:
    from decimal import Decimal, InvalidOperation

    try:
        return f"{Decimal(str(value)):,.2f}"
    except (InvalidOperation, ValueError):
        return str(value)


def _input_lines(data: dict[str, Any]) -> list[str]:
    project = data.get("project", {})
    lines = [
        f"  项目 project: {project.get('title', '—')}（{project.get('lead_id', '—')}，"
        f"招商单位 unit {project.get('attracting_unit', '—')}，报送 reported {project.get('reported_on', '—')}）",
        f"  依据日期 decided as of: {data.get('on')}",
    ]
    if "documents" in data:
        lines.append(f"  已提交文件 documents filed: {', '.join(data['documents']) or '无 none'}")
    if data.get("meeting_on"):
        lines.append(f"  评审会 meeting: {data['meeting_on']}")
    if "funds" in data:
        f = data["funds"]
        lines.append(
            f"  到位资金 funds: {f.get('amount')} {f.get('currency')}，{f.get('arrived_on')} 到位 "
            f"arrived；汇率 rate {data.get('rate')}"
        )
    if data.get("sponsor_leader"):
        lines.append(f"  包保县级领导 sponsor leader: {data['sponsor_leader']}")
    return lines


def explain_record(
    record: Record,
    sources: dict[tuple[str, str], list[tuple[str, str]]],
    replayer: Replayer,
    print_rules: Callable[..., None],
    out: TextIO,
) -> bool:
    """Print one decision record and what would change it; False if it could not be checked."""
    e = record.event
    ex = e.get("explanation") or {}
    title = TITLES[record.subject]
    print(f"\n== {title} — {record.subject} (stream {record.stream} #{record.seq}) ==", file=out)
    print(f"决定 Decision: {_outcome(record)}", file=out)
    key = (str(ex.get("ruleset_id")), str(ex.get("version")))
    text_digest = (
        f"（文本 text sha256 {ex['ruleset_sha256'][:16]}）" if ex.get("ruleset_sha256") else ""
    )
    print(f"规则集 Ruleset: {key[0]}@{key[1]}{text_digest}", file=out)
    matched = ", ".join(ex.get("matched") or []) or "无 none"
    print(f"命中 Matched (recorded): {matched}", file=out)
    print(
        f"决定规则 Deciding rule: {ex.get('deciding_rule') or '无 none（默认 default）'}", file=out
    )
    print("使用的参数 Parameters used (recorded):", file=out)
    for name, value in (ex.get("parameters") or {}).items():
        print(f"  {name} = {show(value, limit=20)}", file=out)
    data = ex.get("input")
    if not isinstance(data, dict):
        print(
            "  (this record predates stored inputs: only its digest is kept; explain it from a "
            "JSON file / 该记录未保存输入)",
            file=out,
        )
        return False
    print("输入 Input (recorded):", file=out)
    for line in _input_lines(data):
        print(line, file=out)
    digest_ok = input_sha256(data) == ex.get("input_sha256")
    print(
        f"输入摘要 Input sha256: {ex.get('input_sha256')} "
        + (
            "✓ 与输入一致 matches the input"
            if digest_ok
            else "✗ 与输入不符 does NOT match the input"
        ),
        file=out,
    )
    candidates = sources.get(key, [])
    if not candidates:
        print(
            f"  {key[0]}@{key[1]} was found neither running, nor published, nor in rulesets/: "
            f"cannot say what would change it / 找不到该版本",
            file=out,
        )
        return False
    # One version number can have been published with different texts (2022.1 whole-year,
    # then ending in June): the text whose sha256 the record names is tried first.
    recorded_text = ex.get("ruleset_sha256")
    candidates = sorted(candidates, key=lambda c: sha256(c[0]) != recorded_text)
    replayed, failures = None, []
    for text, where in candidates:
        try:
            explanation, evaluation = _replay(record, replayer.registry(text, where))
        except (RulesetError, LookupError, ValueError, KeyError) as exc:
            failures.append(f"  cannot replay with {key[0]}@{key[1]} from {where}: {exc}")
            continue
        if e.get("committee_rejected"):
            # The committee's decision, laid over the rules' result (review/cases.py).
            explanation = explanation.model_copy(update={"deciding_rule": "committee_rejected"})
        same = explanation.model_dump(mode="json") == ex
        if replayed is None or same:
            replayed = (explanation, evaluation, where, same)
        if same:
            break
    if replayed is None:
        print("\n".join(failures), file=out)
        return False
    explanation, evaluation, where, same = replayed
    if same:
        print(f"重放 Replay ({where}): ✓ 同一决定 the same decision and record", file=out)
    else:
        print(
            f"重放 Replay ({where}): ✗ differs from the record (matched now: "
            f"{', '.join(explanation.matched) or 'none'}; deciding: {explanation.deciding_rule}): "
            "the version's text is not the one that decided / 重放结果与记录不符",
            file=out,
        )
    actions = CONSIDERED.get(record.subject)
    only = evaluation.rules_with(*actions) if actions else None
    print_rules(evaluation, out, only=only)
    if record.subject == "score.credited":
        _multiplier_changes(evaluation, record.event, out)
    return digest_ok and same


def _multiplier_changes(evaluation: Any, event: dict[str, Any], out: TextIO) -> None:
    """For each rule not matched: the multiplier if it matched too (the ruleset's own way of
    combining them), so "what would change the outcome" is in points, not only conditions."""
    from decimal import Decimal

    from services.scoring.decide import BOOST_THEN_REDUCTIONS, HIGHEST, combine

    ruleset = evaluation.resolved.ruleset
    mode = HIGHEST
    if "multiplier_combination" in ruleset.parameters:
        mode = str(ruleset.parameters["multiplier_combination"].value)
        mode = mode if mode == BOOST_THEN_REDUCTIONS else HIGHEST
    default = Decimal(str(ruleset.default_multiplier))
    order = [r.id for r in evaluation.resolved.rules]
    matched = {
        r: m for r in evaluation.matched if (m := evaluation.outcome(r).multiplier) is not None
    }
    now, _, _ = combine(matched, order, mode, default)
    amount = Decimal(str(event.get("amount_rmb", "0")))
    lines = []
    for rule in evaluation.resolved.rules:
        m = rule.outcome.multiplier
        if rule.id in evaluation.matched or m is None:
            continue
        would, _, _ = combine({**matched, rule.id: m}, order, mode, default)
        if would != now:
            points = show_amount(amount * would)
            lines.append(
                f"  {rule.id} 也命中 if it matched too: ×{show(now)} → ×{show(would)}（{points} 分 points）"
            )
    print("\n改变结果 What would change the points:", file=out)
    for line in lines or [
        "  （无：没有未命中的规则会改变倍数 none: no other rule would change the multiplier）"
    ]:
        print(line, file=out)


async def explain_project(
    url: str | None, project_id: str, directory: Path, print_rules: Callable[..., None], out: TextIO
) -> int:
    from shared.rules.lifecycle import connect, rules_services

    nc = await connect(url)
    try:
        records, reversals = await read_records(nc, project_id)
        sources = await known_versions(nc, rules_services()) if records else {}
    finally:
        await nc.close()
    if not records:
        print(
            f"ERROR  no decision recorded for project {project_id} on the streams REVIEW, SCORE "
            f"/ 未找到项目 {project_id} 的决策记录",
            file=out,
        )
        return 1
    for key, more in local_versions(directory).items():  # last resort: the local checkout
        sources.setdefault(key, []).extend(more)
    print(
        f"项目 Project {project_id}: {len(records)} 项决策记录 decision records "
        "(from the streams REVIEW, SCORE) / 决策说明",
        file=out,
    )
    replayer = Replayer()
    ok = True
    try:
        for record in records:
            try:
                ok &= await asyncio.to_thread(
                    explain_record, record, sources, replayer, print_rules, out
                )
            except Exception as exc:  # a record not as the contract says: named, never a traceback
                print(
                    f"ERROR  {record.subject} #{record.seq}: cannot explain this record "
                    f"({type(exc).__name__}: {exc}) / 无法说明该记录",
                    file=out,
                )
                ok = False
            for r in reversals:
                if record.subject == "score.credited" and r.event.get(
                    "funds_id"
                ) == record.event.get("funds_id"):
                    print(
                        f"  已冲销 reversed later (#{r.seq}): {r.event.get('points')} — "
                        f"{r.event.get('reason')}",
                        file=out,
                    )
    finally:
        replayer.close()
    return 0 if ok else 1
