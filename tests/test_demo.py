"""`investflow demo` end to end, as a newcomer runs it: the sample year through every service."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from shared.settings import REPO_ROOT


@pytest.mark.timeout(600)
def test_demo_runs_the_sample_year_and_prints_its_summary() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "investflow.main", "demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^NATS: nats://127\.0\.0\.1:\d+$", out, re.M)
    assert re.search(r"^HTTP: http://127\.0\.0\.1:\d+$", out, re.M)
    # The sample year's deliberate cases show up as themselves, not as crashes.
    lead_row = re.search(r"^\s+lead\s+(\d+)\s+(\d+)$", out, re.M)
    assert lead_row, out
    accepted, rejected = map(int, lead_row.groups())
    assert accepted >= 250 and rejected >= 1
    total = re.search(r"^\s+total\s+(\d+)\s+(\d+)$", out, re.M)
    received = re.search(r"received by the units' inboxes / 收到: (\d+) .*?(\d+) held", out)
    assert total and received, out
    assert int(received.group(1)) >= int(total.group(1)) + int(total.group(2)) + 2
    assert received.group(2) == "2"  # the sample year's two duplicate claims
    assert "duplicate claims held for the Center / 重复认领: 2" in out
    assert re.search(r"^Notify counts .* — equal\.$", out, re.M), out[-3000:]
    assert "Demo finished; everything stopped." in out
    assert "Traceback" not in out
