"""Parsing scoring's inputs keeps nothing of them alive (issue 17).

pydantic-core's JSON string cache (on by default) kept about a message's size of every
distinct message parsed for good: scoring's RSS grew with the year after the rates were read
in ranges. Counted with tracemalloc (bytes still allocated once the parsed events are gone),
not timed."""

from __future__ import annotations

import gc
import tracemalloc

from services.scoring.inputs import parse
from shared import subjects
from tests.scoring import builders as b


def _distinct_messages(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        lead = b.lead("TS01", title=f"保持不变的内存测试项目第{i}号")
        out.append((subjects.canonical("lead"), lead.model_dump_json().encode()))
        rec = b.recognition(lead.project_id, recognized=False)
        # Parameters and input as a real explanation has them: many short distinct texts.
        extra = {f"p{j}": f"参数{i}-{j}" for j in range(20)}
        rec = rec.model_copy(
            update={"explanation": rec.explanation.model_copy(update={"parameters": extra})}
        )
        out.append((subjects.REVIEW_RECOGNITION, rec.model_dump_json().encode()))
    return out


def test_parsing_distinct_messages_keeps_nothing_of_them() -> None:
    warm, measured = _distinct_messages(50), _distinct_messages(400)
    for subject, data in warm:
        parse(subject, data)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for subject, data in measured:
            assert parse(subject, data) is not None
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Before the fix ≈ 78 KB kept (real messages: ≈ 1-2 KB each); after, well under 1 KB.
    assert kept < 16 * 1024, f"{kept} bytes kept after parsing {len(measured)} messages"
