"""What the system did, counted from the streams themselves: every service's output shows up."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from nats.js import JetStreamContext

from shared import subjects
from shared.streams import STREAMS


async def subject_counts(js: JetStreamContext) -> dict[str, int]:
    """Messages per subject; `intake.<unit>` totals what the units' inboxes ever held
    (work queues: a message leaves once intake has stored or rejected it)."""
    counts: dict[str, int] = {}
    for spec in STREAMS:
        info = await js.stream_info(spec.name, subjects_filter=">")
        for subject, n in (info.state.subjects or {}).items():
            kind = subjects.event_type(subject)  # each key and partition of it
            counts[kind] = counts.get(kind, 0) + n
    if counts.get(subjects.canonical("meeting")):
        # One copy per agenda project (shared/subjects.py): a meeting is one accepted event.
        meetings = await _read(js, "PROJECT", subjects.canonical("meeting"))
        counts[subjects.canonical("meeting")] = len({m["data"]["meeting_id"] for m in meetings})
    for info in await js.streams_info():
        if info.config.name.startswith("INTAKE_"):
            unit = info.config.name.removeprefix("INTAKE_")
            counts[f"intake.{unit}"] = int(info.state.last_seq or 0)
    return counts


def clip(text: str, width: int = 70) -> str:
    """`text` in at most `width` characters, cut between words (an ellipsis says it was cut)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = text[: width - 1]
    if text[width - 1] != " " and " " in head:
        head = head.rsplit(" ", 1)[0]  # never end inside a word ("day value is ou")
    return head.rstrip(" ,;:") + "…"


async def rejection_reasons(js: JetStreamContext, limit: int = 10_000) -> Counter[str]:
    """`field: problem` of every rejection, so the demo shows why, not just how many."""
    reasons: Counter[str] = Counter()
    info = await js.stream_info("INTAKE", subjects_filter="intake.rejected.>")
    expected = min(limit, sum((info.state.subjects or {}).values()))
    if not expected:
        return reasons
    sub = await js.subscribe("intake.rejected.>", stream="INTAKE", ordered_consumer=True)
    try:
        for _ in range(expected):
            msg = await sub.next_msg(timeout=5)
            for err in json.loads(msg.data)["errors"]:
                reasons[f"{err['field']}: {clip(err['problem'].split(' / ')[0])}"] += 1
    finally:
        await sub.unsubscribe()
    return reasons


async def caused_by_claims(js: JetStreamContext) -> int:
    """Project events a Center's claim resolution caused beside its own project.claim: the
    held report's project.lead it released and the losing project's project.withdrawal."""
    return sum(
        bool(c.get("released")) + bool(c.get("withdrawn"))
        for c in await _read(js, "PROJECT", "project.claim")
    )


def render(counts: dict[str, int], reasons: Counter[str] | None = None, caused: int = 0) -> str:
    """`caused`: project events no inbound message reported itself (caused_by_claims)."""
    received = 0
    rejected: Counter[str] = Counter()
    outputs: dict[str, Counter[str]] = defaultdict(Counter)
    for subject, n in counts.items():
        parts = subject.split(".")
        if parts[0] == "intake" and parts[1] == "rejected":
            rejected[parts[3]] += n
        elif parts[0] == "intake":
            received += n
        else:
            outputs[parts[0]][".".join(parts[1:])] += n
    held = outputs["project"].get("duplicate", 0)
    lines = [
        "",
        "Inbound by kind (intake.<unit>.<kind>) / 报送事件:",
        f"  {'kind':<12}{'accepted':>10}{'rejected':>10}",
    ]
    kinds = (set(outputs["project"]) - {"duplicate"}) | set(rejected)
    for kind in sorted(kinds):
        accepted = outputs["project"].get(kind, 0)
        lines.append(f"  {kind:<12}{accepted:>10}{rejected[kind]:>10}")
    accepted_all = sum(outputs["project"].values()) - held - caused
    lines.append(f"  {'total':<12}{accepted_all:>10}{sum(rejected.values()):>10}")
    if caused:
        lines.append(
            f"  (besides {caused} lead/withdrawal events the Center's claim resolutions caused)"
        )
    resent = received - accepted_all - held - sum(rejected.values())
    lines.append(
        f"  received by the units' inboxes / 收到: {received} "
        f"(accepted, rejected, {held} held as duplicates, {resent} re-sent)"
    )
    if reasons:
        lines.append("  rejected because / 退回原因:")
        lines.extend(f"    {n:>4} × {reason}" for reason, n in reasons.most_common(12))
    if outputs["project"].get("duplicate"):
        lines.append(
            f"  duplicate claims held for the Center / 重复认领: {outputs['project']['duplicate']}"
        )
    for stream in ("review", "score", "notify", "dlq"):
        if outputs.get(stream):
            lines.append(f"\n{stream}.* events:")
            lines.extend(f"  {stream}.{k:<24}{v:>8}" for k, v in sorted(outputs[stream].items()))
    return "\n".join(lines)


async def _read(js: JetStreamContext, stream: str, subject: str) -> list[dict]:
    subject = subjects.stored_pattern(subject)
    info = await js.stream_info(stream, subjects_filter=subject)
    expected = sum((info.state.subjects or {}).values())
    out: list[dict] = []
    if not expected:
        return out
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    try:
        while len(out) < expected:
            msg = await sub.next_msg(timeout=5)
            out.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return out


async def committee_summary(js: JetStreamContext) -> str:
    """集体决策 as review took them, what it refused and why, and the late materials."""
    decided = await _read(js, "REVIEW", "review.decided")
    refused = await _read(js, "REVIEW", "review.refused")
    late = [m for m in await _read(js, "REVIEW", "review.materials") if m.get("late")]
    by = Counter(d["decision"] for d in decided)
    why: Counter[str] = Counter()
    for r in refused:
        for err in r["errors"]:
            why[f"{err['field']}: {err['problem'].split(' / ')[0].split(' (')[0][:60]}"] += 1
    lines = [
        "",
        "Committee decisions / 集体决策 (review):",
        f"  approved / 批准 {by.get('approved', 0)}, rejected / 未通过 {by.get('rejected', 0)} "
        "(a rejected project is not recognised; its funds are held; unit and Center told)",
        f"  projects late with their materials / 材料逾期: {len({m['project_id'] for m in late})} "
        "(moved to the next meeting)",
        f"  decisions refused / 不予受理: {len(refused)}",
    ]
    lines.extend(f"    {n:>4} × {reason}" for reason, n in why.most_common(8))
    return "\n".join(lines)


async def amendments_summary(js: JetStreamContext) -> str:
    """更正 / 撤回 / 认领 as intake took them, and what scoring did with each record."""
    corrections = await _read(js, "PROJECT", "project.correction")
    withdrawals = await _read(js, "PROJECT", "project.withdrawal")
    claims = await _read(js, "PROJECT", "project.claim")
    reversed_ = await _read(js, "SCORE", "score.reversed")
    credited = await _read(js, "SCORE", "score.credited")
    holds = await _read(js, "SCORE", "score.held")
    lines = [
        "",
        "Corrections, withdrawals, claims / 更正、撤回、认领认定:",
        f"  corrections / 更正 {len(corrections)}, withdrawals / 撤回 {len(withdrawals)}, "
        f"claims resolved / 认领认定 {len(claims)}",
    ]

    def record_of(e: dict) -> tuple[str, str | None]:
        t = e["data"]["target"]
        return t["project_id"], t.get("funds_id")

    for e in corrections + withdrawals:
        pid, fid = record_of(e)
        what = ", ".join(f"{c['field']} {c['old']} → {c['new']}" for c in e.get("changes", []))
        verb = "corrected" if "after" in e else "withdrawn"
        lines.append(
            f"  {pid} {e['data']['target']['kind']}{' ' + fid if fid else ''} v{e['version']} {verb} by "
            f"{e['unit']}{': ' + what if what else ''} ({clip(e['data']['reason'], 40)})"
        )
        if fid is None:
            continue
        key = (pid, fid)
        back = [x for x in reversed_ if (x["project_id"], x["funds_id"]) == key]
        anew = [x for x in credited if (x["project_id"], x["funds_id"]) == key]
        if back or anew:
            lines.append(
                f"    scoring: reversed {', '.join(x['points'] for x in back) or '-'}; "
                f"credited {' then '.join(x['points'] for x in anew) or '-'} points"
            )
        held = [x for x in holds if (x["project_id"], x["funds_id"]) == key]
        if held and len(anew) <= len(back):  # no credit stands: why it waits
            lines.append(f"    scoring: held — {clip(held[-1]['reason'].split(' / ')[0], 90)}")
    for c in claims:
        lines.append(
            f"  {c['project_id']} (held, duplicate of {c['duplicate_of']}): "
            f"{c['data']['resolution']} {c['data'].get('assign_to') or ''}".rstrip()
        )
    return "\n".join(lines)


def notify_consistency(stream_sent: int, table: dict[str, dict[str, int]]) -> str:
    """The two notify counts the demo prints, read after the same drain, and what each is."""
    rows_sent = sum(by.get("sent", 0) for by in table.values())
    total = sum(sum(by.values()) for by in table.values())
    same = "equal" if stream_sent == rows_sent else "DIFFER"
    return (
        f"Notify counts / 通知计数: {total} notifications planned (one per cause, recipient and "
        f"channel, notify's table); {rows_sent} of them delivered; {stream_sent} notify.sent "
        f"events on the stream (one per delivery) — {same}."
    )
