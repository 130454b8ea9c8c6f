"""Publishing a ruleset version to running services over NATS KV, with no restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from tests.helpers import idle, lead, publish, read_subject

SYSTEM_BACKEND = "postgresql"  # `system` tests here: this backend (both under INVESTFLOW_SLOW)

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
    data = lead(unit, industry="quantum_computing", reported_on="2022-04-20")
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

    # A policy change: the county adds an industry to its catalogue from 2022-03-01. One
    # version per day: 2022.1 ends the day before, and both files are one publication.
    first = ORIGINAL.replace("to: 2022-12-31", "to: 2022-03-31", 1)
    (tmp_path / "review-2022.1.yaml").write_text(first, encoding="utf-8")
    widened = version(ORIGINAL, "2022.2").replace("from: 2022-01-01", "from: 2022-04-01", 1)
    widened = widened.replace(
        "      - modern_services            # 现代服务业",
        "      - modern_services\n      - quantum_computing",
        1,
    )
    (tmp_path / "review-2022.2.yaml").write_text(widened, encoding="utf-8")
    done = cli(
        "publish",
        str(tmp_path / "review-2022.1.yaml"),
        str(tmp_path / "review-2022.2.yaml"),
        "--url",
        system.nats_url,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "review@2022.2 (2022-04-01..2022-12-31) as revision" in done.stdout

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

    # Valid YAML that fails the rule tests: the major-project threshold doubled. Refused too.
    lax = widened.replace("value: 100000000", "value: 200000000", 1)
    (tmp_path / "lax").mkdir()
    (tmp_path / "lax" / "review-2022.2.yaml").write_text(lax, encoding="utf-8")
    failing = cli("publish", str(tmp_path / "lax" / "review-2022.2.yaml"), "--url", system.nats_url)
    assert failing.returncode == 1 and "rule test failed" in failing.stdout

    still = await screened(system, "TS03")
    assert still["outcome"] == "accepted" and still["explanation"]["version"] == "2022.2"

    # Rollback: 2022.1 (what ran before the first publication) decides again, live.
    back = cli("rollback", "review", "2022.1", "--url", system.nats_url)
    assert back.returncode == 0, back.stdout + back.stderr
    rolled = await screened(system, "TS04")
    assert rolled["outcome"] == "terminated" and rolled["explanation"]["version"] == "2022.1"
