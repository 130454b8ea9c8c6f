"""`investflow demo --keep`: the summary, then the board stays up until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shared.settings import REPO_ROOT


def test_demo_keep_serves_the_board_until_interrupted(tmp_path: Path) -> None:
    lines = (REPO_ROOT / "samples" / "year-2022.jsonl").read_text(encoding="utf-8").splitlines()
    samples = tmp_path / "small.jsonl"
    # 50 lines: the board needs none of the year, and a short run is where the notify table
    # was read before the scheduler's last rows (the summary said 28 delivered, 30 on the stream).
    samples.write_text("\n".join(lines[:50]) + "\n", encoding="utf-8")
    env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "investflow.main", "demo", "--keep", "--samples", str(samples)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    out: list[str] = []
    board = None
    try:
        deadline = time.monotonic() + 240
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            m = re.match(r"BOARD: (http://127\.0\.0\.1:\d+/)", line)
            if m:
                board = m.group(1)
            if "stays up (--keep)" in line:
                break
        assert board, "".join(out[-30:])
        assert "stays up (--keep)" in out[-1], "".join(out[-30:])
        summary = next(line for line in out if line.startswith("Notify counts"))
        assert summary.rstrip().endswith("— equal."), summary
        time.sleep(1)
        assert proc.poll() is None, "the demo stopped instead of staying up"
        with urllib.request.urlopen(board, timeout=20) as resp:
            assert resp.status == 200 and "挂图作战" in resp.read().decode()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, rest[-2000:]
        assert "everything stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
