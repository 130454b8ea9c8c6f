"""What the system did, counted from the streams themselves: every service's output shows up."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from nats.js import JetStreamContext

from shared.streams import STREAMS


async def subject_counts(js: JetStreamContext) -> dict[str, int]:
    """Messages per subject; `intake.<unit>` totals what the units' inboxes ever held
    (work queues: a message leaves once intake has stored or rejected it)."""
    counts: dict[str, int] = {}
    for spec in STREAMS:
        info = await js.stream_info(spec.name, subjects_filter=">")
        counts.update(info.state.subjects or {})
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


def render(counts: dict[str, int], reasons: Counter[str] | None = None) -> str:
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
    accepted_all = sum(outputs["project"].values()) - held
    lines.append(f"  {'total':<12}{accepted_all:>10}{sum(rejected.values()):>10}")
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
