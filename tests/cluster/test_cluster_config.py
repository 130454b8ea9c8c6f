"""deploy/nats/cluster/: the three nodes' configs are what the generator writes, and
nats-server accepts each with the users `investflow nats users` generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from investflow.deploy_cli import CLUSTER_DIR, cluster_configs
from investflow.nats_server import find_binary
from shared.settings import REPO_ROOT


def test_committed_configs_are_the_generated_ones() -> None:
    made = cluster_configs(3)
    assert sorted(p.name for p in CLUSTER_DIR.glob("*.conf")) == sorted(made)
    for name, text in made.items():
        assert (CLUSTER_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run `investflow nats cluster-config`"
        )


def test_every_node_routes_to_all_three_with_the_single_node_users() -> None:
    single = (REPO_ROOT / "deploy" / "nats" / "nats-server.conf").read_text(encoding="utf-8")
    names = set()
    for text in cluster_configs(3).values():
        assert 'routes: ["nats://nats-1:6222", "nats://nats-2:6222", "nats://nats-3:6222"]' in text
        assert "jetstream {" in text and "max_file_store: 20GB" in text
        # The same users and permissions as one server: the very file it includes.
        assert 'include "auth.conf"' in text and 'include "auth.conf"' in single
        names.add(text.split("server_name: ", 1)[1].split("\n", 1)[0])
    assert len(names) == 3


def test_nats_server_accepts_each_node_config(tmp_path: Path) -> None:
    pytest.importorskip("nkeys", reason="the deployment's users are nkeys")
    for name, text in cluster_configs(3).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "investflow.main",
            "nats",
            "users",
            "--secrets",
            str(tmp_path / "secrets"),
            "--out",
            str(tmp_path / "auth.conf"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    for name in cluster_configs(3):
        # -t: parse and check the config, then exit; nothing listens.
        checked = subprocess.run(
            [str(find_binary()), "-t", "-c", str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_even_cluster_is_refused(tmp_path: Path) -> None:
    from investflow.main import main

    assert main(["nats", "cluster-config", "--nodes", "2", "--out", str(tmp_path)]) == 2
    assert main(["nats", "cluster-config", "--nodes", "5", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("nats-*.conf"))) == 5
