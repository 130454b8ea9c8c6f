"""`make bundle`'s archive installs with no network: wheelhouse only, into a fresh venv.

The archive is built as `make bundle` builds it (without images: no Docker engine in the test
run), unpacked, and installed the way docs/operations.md tells an operator on an intranet:
`pip install --no-index --find-links wheelhouse`, with pip's own configuration switched off so
no index or local cache of this machine can help. Then `investflow --help` must run, and the
rule engine's C extension must load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

pytestmark = pytest.mark.timeout(900)


def _offline_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    return env | {
        "PIP_CONFIG_FILE": os.devnull,  # no index URL, find-links or constraints from this host
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "HOME": str(home),
        "PYTHONNOUSERSITE": "1",
    }


def test_the_bundle_installs_offline_and_investflow_runs(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "bundle.py"), "--out", str(tmp_path),
         "--no-images"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if made.returncode != 0 and "Could not find a version" in made.stderr + made.stdout:
        pytest.skip(
            f"the package index does not answer to build the wheelhouse: {made.stderr[-300:]}"
        )
    assert made.returncode == 0, made.stdout + made.stderr
    [archive] = tmp_path.glob("investflow-bundle-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    [root] = (tmp_path / "unpacked").iterdir()
    assert any(n.endswith("/src/requirements.lock") for n in names)
    assert any(n.endswith("/INSTALL.txt") for n in names)
    wheels = list((root / "wheelhouse").glob("*.whl"))

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "_", name).lower()

    pinned = {
        norm(line.split("==")[0])
        for line in (root / "src" / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    have = {norm(w.name.split("-")[0]) for w in wheels}
    assert pinned <= have, f"not shipped as wheels: {pinned - have}"

    env = _offline_env(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    # --no-compile: bytecode is an install-time cost the test need not pay (it is CPU-bound).
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-compile"]
    wh = ["--find-links", str(root / "wheelhouse")]
    # What docs/operations.md tells an operator: the services' packages, pinned by the lock
    # (-c), no test tools. (The whole lock took 102 s to install here, this 21 s.)
    installed = subprocess.run(
        [*pip, *wh, "-c", str(root / "src" / "requirements.lock"), "-e", str(root / "src")],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.split()  # fmt: skip
    locked = {
        norm(line.split("==")[0]): line.split("==")[1]
        for line in (root / "src" / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    versions = {norm(n): v for n, v in (line.split("==") for line in frozen if "==" in line)}
    versions.pop("investflow", None)  # the source itself, installed editable from src/
    assert versions and all(locked.get(n) == v for n, v in versions.items()), {
        n: (v, locked.get(n)) for n, v in versions.items() if locked.get(n) != v
    }
    assert "pytest" not in versions and "playwright" not in versions  # no test tools in production

    helped = subprocess.run(
        [str(venv / "bin" / "investflow"), "--help"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "usage: investflow" in helped.stdout and "tokens" in helped.stdout
    engine = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import durable.lang, faststream.nats, shared.settings as s; print(s.REPO_ROOT)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert engine.returncode == 0, engine.stderr
    assert Path(engine.stdout.strip()) == root / "src"  # rulesets/ and deploy/ found beside it
