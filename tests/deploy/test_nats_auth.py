"""`investflow nats users`: the generated nats-server users, their seeds, and TLS.

What each identity may do against a running system is in test_compose_wiring.py; here: the
file and the seeds themselves, that the permission table matches what the services' own
brokers declare, and that the server speaks TLS with the generated settings.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from investflow import deploy_cli
from investflow.nats_server import NatsServer, free_port
from investflow.services import SERVICES
from shared.directory import load_directory
from shared.settings import REPO_ROOT

nkeys = pytest.importorskip(
    "nkeys", reason="nkeys is not installed (pip install nkeys): the deployment signs in with nkeys"
)

UNITS = REPO_ROOT / "deploy" / "units.yaml"


def users(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "investflow.main", "nats", "users", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def nkeys_in(conf: str) -> dict[str, str]:
    """The config's users as {comment: nkey}."""
    return dict(re.findall(r"# (.+)\n\s+\{\n\s+nkey: \"(U[A-Z0-9]+)\"", conf))


def test_one_user_per_unit_service_and_operator_with_seeds_outside_the_config(
    tmp_path: Path,
) -> None:
    out = tmp_path / "auth.conf"
    made = users("--units", str(UNITS), "--secrets", str(tmp_path / "s"), "--out", str(out))
    assert made.returncode == 0, made.stderr
    conf = out.read_text()
    directory = load_directory(UNITS)
    expected = len(directory.units) + len(SERVICES) + 2
    assert len(nkeys_in(conf)) == expected == len(set(nkeys_in(conf).values()))
    assert not re.search(r"\bS[A-Z]{20,}", conf), "a seed in the server's file"
    seeds = sorted((tmp_path / "s" / "nats").rglob("*.nk"))
    assert len(seeds) == expected
    for seed in seeds:
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600
        public = deploy_cli.public_key(seed.read_bytes())
        assert f'nkey: "{public}"' in conf
    assert stat.S_IMODE((tmp_path / "s" / "nats").stat().st_mode) == 0o700


def test_a_unit_may_publish_its_own_subjects_and_read_its_own_rejections_only() -> None:
    ts01 = deploy_cli.unit_identity("TS01", "unit TS01")
    assert ts01.publish == ("intake.TS01.*",)
    assert set(ts01.subscribe) == {"intake.rejected.TS01.>", "_INBOX_TS01.>"}


def test_services_may_not_publish_on_units_subjects_except_intakes_http_gateway() -> None:
    for spec in SERVICES:
        who = deploy_cli.service_identity(spec)
        allowed = [p for p in who.publish if matches(p, "intake.TS01.lead")]
        assert allowed == (["intake.*.*"] if spec.name == "intake" else []), spec.name
        # Replies on its own prefix only: no service reads a unit's or another service's.
        inboxes = {s for s in who.subscribe if s.startswith("_INBOX_")}
        assert inboxes == {f"_INBOX_{spec.name}.>"} and ">" not in who.subscribe, spec.name
        assert "$JS.API.>" not in who.publish and ">" not in who.publish


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def test_the_permission_table_matches_what_each_service_declares() -> None:
    """A service that starts consuming a stream or emitting a subject fails here until the
    generated permissions allow it (FastStream's brokers list both)."""
    import importlib

    for spec in SERVICES:
        module = importlib.import_module(f"{spec.module}.app")
        broker = module.broker
        # Intake's inboxes are partitions (shared/partitions.py), declared for the document
        # on a broker that is never started, with their durables.
        subscribers = [*broker.subscribers, *getattr(module, "documented", broker).subscribers]
        subscribers = list({id(s): s for s in subscribers}.values())
        access = deploy_cli.SERVICE_ACCESS[spec.name]
        units = load_directory(UNITS).units
        consumers = deploy_cli.partition_consumers(spec, units)
        assert {s.stream.name for s in subscribers} == {c[0] for c in consumers}, spec.name
        if access.partitions is not None:
            durables = {(s.stream.name, s.config.durable_name) for s in subscribers}
            assert durables == set(consumers), spec.name
        who = deploy_cli.service_identity(spec, units)
        for pub in broker.publishers:
            subject = re.sub(r"\{\w+\}", "X", pub.subject.template)
            assert any(matches(p, subject) for p in who.publish), f"{spec.name}: {subject}"
        for stream, durable in consumers:
            assert f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}" in who.publish
            assert f"$JS.ACK.{stream}.{durable}.>" in who.publish
        if access.partitions is not None:  # its leases: its own keys only
            from shared.partitions import DEFAULT_BUCKET

            assert f"$KV.{DEFAULT_BUCKET}.{spec.name}.>" in who.publish
            assert not any(matches(p, f"$KV.{DEFAULT_BUCKET}.other.p.X") for p in who.publish)


def test_seeds_are_kept_across_runs_and_rotated_one_at_a_time(tmp_path: Path) -> None:
    secrets, out = tmp_path / "s", tmp_path / "auth.conf"
    assert users("--secrets", str(secrets), "--out", str(out)).returncode == 0
    first = nkeys_in(out.read_text())
    assert users("--secrets", str(secrets), "--out", str(out)).returncode == 0
    assert nkeys_in(out.read_text()) == first
    rotated = users("--secrets", str(secrets), "--out", str(out), "--rotate", "TS01")
    assert rotated.returncode == 0 and "rotated" in rotated.stdout
    after = nkeys_in(out.read_text())
    changed = {k for k in first if first[k] != after[k]}
    assert len(changed) == 1 and next(iter(changed)).startswith("unit TS01 ")


def test_refuses_seeds_inside_the_repository_and_unknown_names(tmp_path: Path) -> None:
    inside = users("--secrets", str(REPO_ROOT / "data" / "secrets-here"))
    assert inside.returncode == 2 and "inside the repository" in inside.stderr
    assert not (REPO_ROOT / "data" / "secrets-here").exists()
    unknown = users("--secrets", str(tmp_path), "--rotate", "NOPE")
    assert unknown.returncode == 2 and "NOPE" in unknown.stderr


def test_a_service_without_permissions_stops_the_generator() -> None:
    from investflow.services import ServiceSpec

    with pytest.raises(SystemExit, match="newsvc"):
        deploy_cli.service_identity(ServiceSpec("newsvc", "services.newsvc"))


# ---- TLS ------------------------------------------------------------------------------------


def self_signed(dir: Path) -> tuple[Path, Path]:
    cert, key = dir / "server.pem", dir / "server-key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=nats", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:nats,DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return cert, key


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
async def test_tls_with_the_generated_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from shared.settings import Settings, connect_nats

    cert, key = self_signed(tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    made = users(
        "--secrets", str(tmp_path / "s"), "--out", str(etc / "auth.conf"),
        "--tls-cert", str(cert), "--tls-key", str(key),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    base = (REPO_ROOT / "deploy" / "nats" / "nats-server.conf").read_text()
    (etc / "nats-server.conf").write_text(
        re.sub(r"(?m)^http_port: \d+", f"http_port: {free_port()}", base)
    )
    server = NatsServer(free_port(), tmp_path / "js", etc / "nats-server.conf", tmp_path / "log")
    server.start()
    try:
        monkeypatch.setenv("NATS_NKEY_SEED_FILE", str(tmp_path / "s/nats/ops/admin.nk"))
        monkeypatch.setenv("NATS_TLS_CA_FILE", str(cert))  # self-signed: its own CA
        nc = await connect_nats(Settings.from_env(), server.url, max_reconnect_attempts=0)
        try:
            assert nc.is_connected
            assert (await nc.jetstream().account_info()) is not None
        finally:
            await nc.close()

        # Without the CA the self-signed certificate is not trusted, and no connection is made.
        monkeypatch.delenv("NATS_TLS_CA_FILE")
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect_nats(
                Settings.from_env(), server.url, max_reconnect_attempts=0, allow_reconnect=False
            )
    finally:
        server.stop()


async def test_a_rotated_unit_is_cut_off_at_reload_and_signs_in_with_its_new_seed(
    tmp_path: Path,
) -> None:
    """docs/operations.md: `--rotate TS01`, then SIGHUP (`docker compose kill -s HUP nats`)."""
    import signal

    import nats

    etc, secrets = tmp_path / "etc", tmp_path / "s"
    etc.mkdir()
    assert users("--secrets", str(secrets), "--out", str(etc / "auth.conf")).returncode == 0
    base = (REPO_ROOT / "deploy" / "nats" / "nats-server.conf").read_text()
    (etc / "nats-server.conf").write_text(
        re.sub(r"(?m)^http_port: \d+", f"http_port: {free_port()}", base)
    )
    seed = secrets / "nats" / "units" / "TS01.nk"
    old_seed = tmp_path / "old.nk"
    old_seed.write_bytes(seed.read_bytes())
    server = NatsServer(free_port(), tmp_path / "js", etc / "nats-server.conf", tmp_path / "log")
    server.start()
    try:
        old = await nats.connect(
            server.url, nkeys_seed=str(old_seed), max_reconnect_attempts=0, allow_reconnect=False
        )
        rotated = users(
            "--secrets", str(secrets), "--out", str(etc / "auth.conf"), "--rotate", "TS01"
        )
        assert rotated.returncode == 0
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if old.is_closed:
                break
            await asyncio.sleep(0.05)
        assert old.is_closed, "the old key's connection survived the reload"
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(
                server.url,
                nkeys_seed=str(old_seed),
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
        new = await nats.connect(server.url, nkeys_seed=str(seed), max_reconnect_attempts=0)
        assert new.is_connected
        await new.close()
    finally:
        server.stop()


def test_a_leftover_tmp_file_or_symlink_cannot_take_a_rotated_seed(tmp_path: Path) -> None:
    """Issue 11 item 15: seeds are written to a fresh file, 0600 from its first byte."""
    secrets, out = tmp_path / "s", tmp_path / "auth.conf"
    assert users("--secrets", str(secrets), "--out", str(out)).returncode == 0
    units = secrets / "nats" / "units"
    elsewhere = tmp_path / "stolen"
    elsewhere.write_bytes(b"")
    (units / "TS01.tmp").symlink_to(elsewhere)
    loose = units / "TS02.tmp"
    loose.write_bytes(b"")
    loose.chmod(0o644)
    for unit in ("TS01", "TS02"):
        assert users("--secrets", str(secrets), "--out", str(out), "--rotate", unit).returncode == 0
        seed = units / f"{unit}.nk"
        assert not seed.is_symlink() and stat.S_IMODE(seed.stat().st_mode) == 0o600
        assert deploy_cli.public_key(seed.read_bytes()) in out.read_text()
    assert elsewhere.read_bytes() == b"", "the seed went through a planted symlink"
    assert not list(units.glob(".*.tmp")), "a temporary file was left behind"
