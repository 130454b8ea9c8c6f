"""Third-party checkers the deploy tests run, fetched the way an operator would get them.

promtool comes from Debian's `prometheus` package: `apt-get download` + `dpkg-deb -x` (the
package's service is never installed or started), cached under ~/.cache/investflow/. Where it
cannot be had, the tests that need it skip and say why.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "investflow"


@functools.cache
def promtool() -> tuple[str | None, str]:
    """(path to promtool, "") or (None, why it cannot be had)."""
    found = shutil.which("promtool")
    if found:
        return found, ""
    cached = CACHE / "prometheus" / "usr" / "bin" / "promtool"
    if cached.exists():
        return str(cached), ""
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            return None, f"promtool not on PATH and no {tool} to unpack Debian's prometheus package"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = subprocess.run(
                ["apt-get", "download", "prometheus"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"apt-get download prometheus failed: {exc}"
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            return None, f"apt-get download prometheus failed: {got.stderr.strip()[-300:]}"
        target = CACHE / "prometheus"
        target.mkdir(parents=True, exist_ok=True)
        unpack = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(target)], capture_output=True, text=True
        )
        if unpack.returncode != 0 or not cached.exists():
            return None, f"dpkg-deb -x of {debs[0].name} failed: {unpack.stderr.strip()[-300:]}"
    return str(cached), ""


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on an exposition text (it reads stdin); rc 0 and no lint."""
    path, why = promtool()
    assert path, why
    return subprocess.run(
        [path, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
