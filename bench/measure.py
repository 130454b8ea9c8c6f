"""What bench/pipeline.py and bench/soak.py both measure with: a process's RSS and CPU from
/proc, "until every process is quiet", percentiles, and one section of docs/performance.md
rewritten without touching the others."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def until_quiet(procs: dict[str, int], timeout: float = 120) -> None:
    """Until no process uses more than 2% of a core over half a second, twice running."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2 and time.monotonic() < deadline:
        before = {n: cpu_s(p) for n, p in procs.items()}
        await asyncio.sleep(0.5)
        busy = max(cpu_s(p) - before[n] for n, p in procs.items())
        calm = calm + 1 if busy < 0.01 else 0


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of already sorted values, nearest rank; None when empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


SOAK_BEGIN = "<!-- soak: bench/soak.py writes from here to the end marker -->"
SOAK_END = "<!-- soak: end -->"


def split_soak(doc: str) -> tuple[str, str]:
    """(docs/performance.md without its soak section, the soak section or "")."""
    m = re.search(re.escape(SOAK_BEGIN) + r".*?" + re.escape(SOAK_END) + r"\n?", doc, re.S)
    if not m:
        return doc, ""
    return doc[: m.start()].rstrip("\n") + "\n" + doc[m.end() :], m.group(0)


def with_soak(doc: str, section: str) -> str:
    """`doc` with its soak section replaced by `section` (appended when it had none)."""
    rest, _ = split_soak(doc)
    return rest.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
