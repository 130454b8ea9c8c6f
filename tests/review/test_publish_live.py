"""Publishing a ruleset version to running services over NATS KV, with no restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from tests.helpers import idle, lead, publish, read_subject

pytestmark = pytest.mark.timeout(240)

ORIGINAL = (REPO_ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "investflow.main", "rules", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def version(text: str, number: str) -> str:
    assert 'version: "2022.1"' in text
    return text.replace('version: "2022.1"', f'version: "{number}"', 1)


async def screened(system, unit: str) -> dict:
    data = lead(unit, industry="quantum_computing")
    await publish(system.js, f"intake.{unit}.lead", data)
    await idle(system.js)
    pid = f"{unit}-{data['lead_id']}"
    [event] = [
        e
        for e in await read_subject(system.js, "REVIEW", "review.screened")
        if e["project_id"] == pid
    ]
    return event


async def test_publish_changes_the_next_decision_and_bad_versions_are_refused(
    system, tmp_path: Path
) -> None:
    before = await screened(system, "TS01")
    assert before["outcome"] == "terminated" and before["reasons"] == ["industry_out_of_scope"]

    # A policy change: the county adds an industry to its catalogue.
    widened = version(ORIGINAL, "2022.2").replace(
        "      - modern_services            # 现代服务业",
        "      - modern_services\n      - quantum_computing",
        1,
    )
    (tmp_path / "review-2022.2.yaml").write_text(widened, encoding="utf-8")
    done = cli("publish", str(tmp_path / "review-2022.2.yaml"), "--url", system.nats_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published review@2022.2" in done.stdout

    after = await screened(system, "TS02")
    assert after["outcome"] == "accepted"
    assert after["explanation"]["version"] == "2022.2"

    # Invalid: a parameter of the wrong type. Refused, nothing published.
    broken = version(ORIGINAL, "2022.3").replace(
        "industry_catalogue:", "industry_catalogue_typo:", 1
    )
    (tmp_path / "review-2022.3.yaml").write_text(broken, encoding="utf-8")
    refused = cli("publish", str(tmp_path / "review-2022.3.yaml"), "--url", system.nats_url)
    assert refused.returncode == 1 and "not published" in refused.stdout

    # Valid YAML that fails the rule tests: real estate no longer terminated. Refused too.
    lax = version(ORIGINAL, "2022.4").replace(
        "id: real_estate_excluded", "id: real_estate_excluded_off", 1
    )
    (tmp_path / "review-2022.4.yaml").write_text(lax, encoding="utf-8")
    failing = cli("publish", str(tmp_path / "review-2022.4.yaml"), "--url", system.nats_url)
    assert failing.returncode == 1 and "rule test failed" in failing.stdout

    still = await screened(system, "TS03")
    assert still["outcome"] == "accepted" and still["explanation"]["version"] == "2022.2"

    # Rollback: 2022.1 (from rulesets/) decides again, live.
    back = cli("rollback", "review", "2022.1", "--url", system.nats_url)
    assert back.returncode == 0, back.stdout + back.stderr
    rolled = await screened(system, "TS04")
    assert rolled["outcome"] == "terminated" and rolled["explanation"]["version"] == "2022.1"
