"""`make bundle`: one archive for an air-gapped install (离线安装包).

    python deploy/bundle.py [--out build] [--no-images]
    python deploy/bundle.py --wheelhouse-only          # just build/wheelhouse (make wheelhouse)

The archive `investflow-bundle-<version>-<commit>.tar.gz` holds:
  wheelhouse/   a wheel of every package pinned in requirements.lock, built here (durable_rules'
                C engine included, so the target needs no compiler), plus setuptools for the
                editable install of the source
  src/          the source tree as git tracks it (with uncommitted edits, as they are on disk)
  images/       `docker save` of the investflow image and the nats/postgres images it runs
                with, when a Docker engine answers here (skipped, and said so, otherwise)
  INSTALL.txt   the commands of docs/operations.md "Air-gapped install"
The wheels are for this machine's platform and Python (linux x86_64, CPython 3.11): build the
bundle on the same OS release as the target.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "build" / "wheelhouse"
IMAGES = (
    os.environ.get("INVESTFLOW_IMAGE", "investflow:check"),
    os.environ.get("NATS_IMAGE", "nats:2.11-alpine"),
    os.environ.get("POSTGRES_IMAGE", "postgres:16-alpine"),
)
# The same pair compose-check builds where no registry answers (tests/deploy/compose_check.py).
LOCAL_IMAGES = ("local/nats:check", "local/postgres:check")

INSTALL = """\
investflow air-gapped install / 离线安装 (docs/operations.md)

  tar -xzf {name}
  cd {stem}
  python3.11 -m venv /opt/investflow/venv
  /opt/investflow/venv/bin/pip install --no-index --find-links wheelhouse \
      -c src/requirements.lock -e src

The services' packages at the versions the lock pins, no test tools; the wheelhouse holds
those too (add -r src/requirements.lock to run the tests offline).
  /opt/investflow/venv/bin/investflow --help

Images (when images/ is present), for docker compose:
  for f in images/*.tar; do docker load -i "$f"; done
"""


def lock_stamp() -> str:
    return hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()[:16]


def ensure_wheelhouse(wheelhouse: Path = WHEELHOUSE) -> Path:
    """Every pinned package as a wheel in `wheelhouse`; rebuilt when requirements.lock changes."""
    stamp = wheelhouse / f".lock-{lock_stamp()}"
    if stamp.exists():
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    lock = str(ROOT / "requirements.lock")
    subprocess.run([*pip, "wheel", "-q", "-r", lock, "-w", str(wheelhouse)], check=True)
    # The editable install builds with setuptools (pyproject: setuptools>=68), offline too.
    subprocess.run(
        [*pip, "download", "-q", "setuptools>=68", "wheel", "-d", str(wheelhouse)], check=True
    )
    for old in wheelhouse.glob(".lock-*"):
        old.unlink()
    stamp.touch()
    return wheelhouse


def source_files() -> list[str]:
    """What git tracks (and new files not ignored), as they are on disk."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return sorted(f for f in out if f and (ROOT / f).is_file())


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def save_images(target: Path) -> list[str]:
    saved = []
    target.mkdir(parents=True, exist_ok=True)
    for image in dict.fromkeys(IMAGES + LOCAL_IMAGES):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            continue
        path = target / (image.replace("/", "_").replace(":", "_") + ".tar")
        subprocess.run(["docker", "save", "-o", str(path), image], check=True)
        saved.append(image)
    return saved


def version() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            number = line.split('"')[1]
            return f"{number}-{commit or 'nogit'}"
    return commit or "nogit"


def build_bundle(out_dir: Path, images: bool = True) -> Path:
    wheelhouse = ensure_wheelhouse()
    stem = f"investflow-bundle-{version()}"
    archive = out_dir / f"{stem}.tar.gz"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        notes = []
        with tarfile.open(archive.with_suffix(".tmp"), "w:gz") as tar:
            for wheel in sorted(wheelhouse.iterdir()):
                if wheel.name.endswith((".whl", ".tar.gz", ".zip")):
                    tar.add(wheel, f"{stem}/wheelhouse/{wheel.name}")
            for rel in source_files():
                tar.add(ROOT / rel, f"{stem}/src/{rel}")
            if images and docker_answers():
                saved = save_images(Path(tmp) / "images")
                for path in sorted((Path(tmp) / "images").glob("*.tar")):
                    tar.add(path, f"{stem}/images/{path.name}")
                notes.append(f"images: {', '.join(saved) or 'none built yet'}")
            else:
                notes.append("images: none (no Docker engine answered, or --no-images)")
            install = Path(tmp) / "INSTALL.txt"
            install.write_text(INSTALL.format(name=archive.name, stem=stem), encoding="utf-8")
            tar.add(install, f"{stem}/INSTALL.txt")
        os.replace(archive.with_suffix(".tmp"), archive)
    for note in notes:
        print(note)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build"))
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--wheelhouse-only", action="store_true")
    args = parser.parse_args(argv)
    if args.wheelhouse_only:
        print(f"wheelhouse: {ensure_wheelhouse()}")
        return 0
    archive = build_bundle(Path(args.out), images=not args.no_images)
    print(f"wrote {archive} ({archive.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
