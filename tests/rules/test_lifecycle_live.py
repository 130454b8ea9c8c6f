"""The maintainer's lifecycle on a running system (review and scoring running, a real
nats-server): publish refused on overlap, both files published as one change, rollback
whatever the local rulesets/ holds, history, and connection errors (issue 14.1, 14.2, 14.5;
issue 11.9, 11.10)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.settings import REPO_ROOT
from tests.helpers import idle, lead, publish, read_subject

pytestmark = pytest.mark.timeout(300)

SCORING = (REPO_ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
TESTS = REPO_ROOT / "rulesets" / "tests"
WHOLE_YEAR = "effective: {from: 2022-01-01, to: 2022-12-31}"
LITTLE_GIANT_X2 = """        - {fact: investor.single_champion, eq: true}
    outcome: {multiplier: 2}"""
PROOFS = [
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
    "land_use_certificate",
    "progress_images",
]


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from tests.conftest import system_on

    # Notify on the business clock (the latest event's date), so its time triggers judge the
    # days the test's events are dated on; it records instead of mailing.
    env = {"NOTIFY_CLOCK": "business", "NOTIFY_TICK_S": "1", "NOTIFY_DRY_RUN": "1"}
    async with system_on("sqlite", tmp_path_factory.mktemp("lifecycle"), extra_env=env) as running:
        yield running


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "investflow.main", "rules", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def first_half() -> str:
    assert WHOLE_YEAR in SCORING
    return SCORING.replace(WHOLE_YEAR, "effective: {from: 2022-01-01, to: 2022-06-30}", 1)


def x4_from_july(effective: str = "effective: {from: 2022-07-01, to: 2022-12-31}") -> str:
    assert LITTLE_GIANT_X2 in SCORING
    return (
        SCORING.replace('version: "2022.1"', 'version: "2022.2"', 1)
        .replace(WHOLE_YEAR, effective, 1)
        .replace(LITTLE_GIANT_X2, LITTLE_GIANT_X2.replace("multiplier: 2", "multiplier: 4"), 1)
    )


def x4_tests(tmp: Path) -> Path:
    """The rule tests as the maintainer updates them: a single champion in August is ×4."""
    tests = tmp / "tests"
    shutil.copytree(TESTS, tests, dirs_exist_ok=True)
    path = tests / "scoring-2022.yaml"
    text = path.read_text(encoding="utf-8")
    case = text[text.index("  - name: 单项冠军按2倍") :]
    case = case[: case.index("\n\n")]
    path.write_text(
        text.replace(
            case, case.replace("multiplier: 2", "multiplier: 4").replace("1000000", "2000000")
        ),
        encoding="utf-8",
    )
    return tests


async def credited(system: Any, unit: str, arrived_on: str) -> dict[str, Any]:
    """A recognised little giant's funds of 1,000,000 yuan, as scoring credits them."""
    # A standard-track project with its environment assessed: recognised without a committee
    # (the review rules of issue 13), so its funds are credited.
    data = lead(
        unit,
        planned_investment="50000000",
        environment={"emissions_ok": True, "safety_ok": True, "energy_ok": True},
        documents=[{"type": t, "ref": f"{t}-1"} for t in PROOFS],
    )
    data["investor"]["little_giant"] = True
    pid = f"{unit}-{data['lead_id']}"
    await publish(system.js, f"intake.{unit}.lead", data)
    funds = {
        "project_id": pid,
        "funds_id": "F1",
        "amount": "1000000",
        "currency": "CNY",
        "arrived_on": arrived_on,
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "BR-1"},
    }
    await publish(system.js, f"intake.{unit}.funds", funds)
    await idle(system.js)
    for _ in range(100):
        found = [
            e
            for e in await read_subject(system.js, "SCORE", "score.credited")
            if e["project_id"] == pid
        ]
        if found:
            return found[-1]
        await asyncio.sleep(0.3)
    raise AssertionError(f"{pid} was never credited")


async def test_publish_overlap_refused_both_files_live_rollback_and_history(
    system: Any, tmp_path: Path
) -> None:
    url = system.nats_url
    (tmp_path / "scoring-2022.1.yaml").write_text(first_half(), encoding="utf-8")
    (tmp_path / "scoring-2022.2.yaml").write_text(x4_from_july(), encoding="utf-8")
    tests = x4_tests(tmp_path)

    # 1. The new version alone overlaps the 2022.1 that runs: refused, nothing stored.
    alone = cli(
        "publish", str(tmp_path / "scoring-2022.2.yaml"), "--tests", str(tests), "--url", url
    )
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert "scoring@2022.2 (2022-07-01..2022-12-31) overlaps scoring@2022.1" in alone.stdout
    assert "both would decide 2022-07-01..2022-12-31" in alone.stdout
    assert "Traceback" not in alone.stdout + alone.stderr
    nothing = cli("history", "scoring", "--url", url)
    assert nothing.returncode == 0 and "nothing published yet" in nothing.stdout

    before = await credited(system, "TS01", "2022-07-15")
    assert before["explanation"]["version"] == "2022.1"
    assert Decimal(before["points"]) == Decimal("2000000")

    # 2. Both files: 2022.1 ends in June, 2022.2 starts in July, one publication.
    both = cli(
        "publish",
        str(tmp_path / "scoring-2022.1.yaml"),
        str(tmp_path / "scoring-2022.2.yaml"),
        "--tests",
        str(tests),
        "--note",
        "小巨人7月起按4倍 / little giants x4 from July",
        "--url",
        url,
    )
    assert both.returncode == 0, both.stdout + both.stderr
    assert (
        "published scoring@2022.1 (2022-01-01..2022-06-30), scoring@2022.2 (2022-07-01..2022-12-31)"
        in both.stdout
    )
    assert "live in / 已生效: notify, review, scoring" in both.stdout

    july = await credited(system, "TS02", "2022-07-15")
    assert july["explanation"]["version"] == "2022.2"
    assert Decimal(july["points"]) == Decimal("4000000")
    june = await credited(system, "TS03", "2022-06-15")
    assert june["explanation"]["version"] == "2022.1"
    assert Decimal(june["points"]) == Decimal("2000000")

    # 3. Rollback with no rulesets/ at all on the maintainer's side: the stored baseline decides.
    empty = tmp_path / "no-rulesets"
    empty.mkdir()
    back = cli("rollback", "scoring", "--url", url, env={"INVESTFLOW_RULESETS": str(empty)})
    assert back.returncode == 0, back.stdout + back.stderr
    assert "scoring@2022.1 (2022-01-01..2022-12-31) decide again" in back.stdout
    assert "live in / 已生效: notify, review, scoring" in back.stdout
    rolled = await credited(system, "TS04", "2022-07-15")
    assert rolled["explanation"]["version"] == "2022.1"
    assert Decimal(rolled["points"]) == Decimal("2000000")
    # July's record was decided by 2022.2, which no service runs now: explain finds its text
    # in the publication history (by the sha256 the record names) and replays it (14.8).
    told = cli("explain", "--project", july["project_id"], "--url", url)
    assert told.returncode == 0, told.stdout + told.stderr
    credit = told.stdout.split("score.credited")[1]
    assert "规则集 Ruleset: scoring@2022.2" in credit
    assert re.search(r"重放 Replay \(kv:scoring@\d+\): ✓ 同一决定", credit), credit
    assert "× 4 = 4,000,000.00 分 points" in credit

    # What-if against what is live (2022.1 again): ×4 from July changes exactly the July
    # records of little giants, 1,000,000 × 2 → × 4 each; June's record stays.
    wi = cli(
        "whatif",
        str(tmp_path / "scoring-2022.2.yaml"),
        "--year",
        "2022",
        "--data",
        str(system.data_dir),
        "--url",
        url,
        "--records",
        "--format",
        "json",
    )
    assert wi.returncode == 0, wi.stdout + wi.stderr
    changed = {r["project_id"].split("-")[0]: r for r in json.loads(wi.stdout)["records"]}
    assert set(changed) == {"TS01", "TS02", "TS04"}
    for r in changed.values():
        assert (r["old"]["points"], r["new"]["points"]) == ("2000000", "4000000"), r

    # 4. History: baseline, publication (with its note and files' sha256), rollback.
    hist = cli("history", "scoring", "--url", url, "--format", "json")
    assert hist.returncode == 0, hist.stdout + hist.stderr
    rows = json.loads(hist.stdout)
    assert [r["action"] for r in rows] == ["baseline", "publish", "rollback"]
    assert rows[1]["note"] == "小巨人7月起按4倍 / little giants x4 from July"
    assert rows[1]["replaces"] == rows[0]["revision"]
    assert rows[2]["restores"] == rows[0]["revision"]
    assert [v["version"] for v in rows[1]["versions"]] == ["2022.1", "2022.2"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", v["sha256"]) for v in rows[1]["versions"])
    assert rows[1]["by"]["nats"] and rows[1]["by"]["user"]
    table = cli("history", "scoring", "--url", url)
    assert "note / 说明: 小巨人7月起按4倍" in table.stdout

    # 5. Rollback to a named version: the publication whose newest version is 2022.2.
    again = cli("rollback", "scoring", "2022.2", "--url", url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (await credited(system, "TS05", "2022-08-01"))["explanation"]["version"] == "2022.2"
    cli("rollback", "scoring", "--revision", str(rows[0]["revision"]), "--url", url)


async def test_a_bad_stored_value_is_refused_announced_and_skipped(system: Any) -> None:
    """Issue 11.9: non-UTF-8, not JSON, an invalid ruleset: each is announced as refused on
    rules.loaded.<service>, and the next good publication is loaded."""
    from shared.rules import published

    nc = system.nc
    kv = await nc.jetstream().key_value(published.BUCKET)
    sub = await nc.subscribe("rules.loaded.*")
    try:
        bad = [b"\xff\xfe\x00 not utf-8", b"{not json", json.dumps({"format": 1}).encode()]
        for value in bad:
            revision = await kv.put("review", value)
            said = await _statuses(sub, "review", revision)
            assert set(said) == {"notify", "review", "scoring"}
            assert all(s["loaded"] is False and s["error"] for s in said.values()), said
        # An invalid ruleset inside a well-formed publication: refused with its line.
        broken = (REPO_ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8")
        body = {
            "format": 1,
            "ruleset": "review",
            "versions": [
                {
                    "file": "review-2022.1.yaml",
                    "version": "2022.1",
                    "text": broken.replace("to: 2022-12-31", "to: 2022-13-31"),
                }
            ],
            "tests": [],
        }
        revision = await kv.put("review", json.dumps(body).encode())
        said = await _statuses(sub, "review", revision)
        assert "is not a real date" in said["review"]["error"]
    finally:
        await sub.unsubscribe()
    # Still deciding, and the next good publication loads.
    ok = cli(
        "publish", str(REPO_ROOT / "rulesets" / "review-2022.1.yaml"), "--url", system.nats_url
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "live in / 已生效: notify, review, scoring" in ok.stdout


async def _statuses(sub: Any, key: str, revision: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    deadline = asyncio.get_running_loop().time() + 30
    while len(out) < 3 and asyncio.get_running_loop().time() < deadline:
        msg = await sub.next_msg(timeout=30)
        status = json.loads(msg.data)
        if status.get("key") == key and status.get("revision") == revision:
            out[msg.subject.rsplit(".", 1)[-1]] = status
    return out


def test_no_server_is_a_clear_error_and_exit_1(tmp_path: Path) -> None:
    """Issue 14.2: nothing answering is an error naming the URL, never another server."""
    from investflow.nats_server import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    for args in (
        ["publish", str(REPO_ROOT / "rulesets" / "scoring-2022.1.yaml")],
        ["rollback", "scoring"],
        ["history"],
    ):
        done = cli(*args, "--url", url)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot connect to NATS at {url}" in done.stdout
        assert "Traceback" not in done.stdout + done.stderr


async def test_a_service_that_does_not_answer_fails_the_publish(
    system: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit non-zero unless every service that should load the version is there."""
    from investflow.rules_cli import main
    from shared.rules import lifecycle

    monkeypatch.setattr(
        lifecycle, "rules_services", lambda: ["notify", "review", "scoring", "ghost"]
    )
    path = str(REPO_ROOT / "rulesets" / "scoring-2022.1.yaml")
    code = await asyncio.to_thread(
        main, ["rules", "publish", path, "--url", system.nats_url, "--timeout", "2"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "no answer from ghost" in out and "nothing was published" in out


async def test_explain_a_real_project_from_its_decision_records(
    system: Any, tmp_path: Path
) -> None:
    """Issue 14.8: `rules explain --project ID` on a running system explains each decision
    from the record stored with it — a document filed after the lead included — replays it
    under the version it names, and says what would change it; no JSON file is written."""
    data = lead(
        "TS07",
        planned_investment="50000000",
        environment={"emissions_ok": True, "safety_ok": True, "energy_ok": True},
        documents=[{"type": t, "ref": f"{t}-1"} for t in PROOFS if t != "progress_images"],
    )
    data["investor"]["little_giant"] = True
    pid = f"TS07-{data['lead_id']}"
    js = system.js
    await publish(js, "intake.TS07.lead", data)
    await idle(js)
    # The missing proof is filed later: recognition changes, and its record lists it.
    doc = {"project_id": pid, "type": "progress_images", "ref": "PI-7"}
    await publish(js, "intake.TS07.document", doc)
    funds = {
        "project_id": pid,
        "funds_id": "F7",
        "amount": "1000000",
        "currency": "CNY",
        "arrived_on": "2022-03-15",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "BR-7"},
    }
    await publish(js, "intake.TS07.funds", funds)
    await idle(js)
    for _ in range(100):
        if any(e["project_id"] == pid for e in await read_subject(js, "SCORE", "score.credited")):
            break
        await asyncio.sleep(0.3)

    # No rulesets/ on the maintainer's side: the versions come from the running services.
    empty = tmp_path / "no-rulesets"
    empty.mkdir()
    done = cli(
        "explain", "--project", pid, "--url", system.nats_url,
        env={"INVESTFLOW_RULESETS": str(empty)},
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in out + done.stderr
    sections = out.split("\n== ")[1:]
    assert [s.split(" — ")[1].split(" ")[0] for s in sections] == [
        "review.screened",
        "review.recognition",
        "score.credited",
    ]
    screened, recognition, scored = sections
    assert "受理 accepted — 流程 track: standard" in screened
    assert "规则集 Ruleset: review@2022.1" in screened
    # The recognition record is the one after the document: filed later, and listed.
    assert "予以认定 recognised" in recognition
    assert "progress_images" in recognition.split("已提交文件 documents filed: ")[1].split("\n")[0]
    assert "✓ 同一决定 the same decision and record" in recognition
    assert "live in " in recognition
    # Scoring: ×2 for a little giant, the parameters used, what would change it.
    assert "1,000,000.00 元 RMB × 2 = 2,000,000.00 分 points" in scored
    assert "决定规则 Deciding rule: little_giant" in scored
    assert "credit_roles = " in scored
    assert "✓ 与输入一致 matches the input" in scored
    assert "✓ little_giant" in scored
    assert "✗ foreign_funded" in scored and "needs: `investor.origin`" in scored
    # What would change the points: a ×3 rule matching too; a ×0.5 one would not (highest).
    assert "top_enterprise 也命中 if it matched too: ×2 → ×3（3,000,000.00 分 points）" in scored
    assert "inside_city 也命中" not in scored

    unknown = cli("explain", "--project", "TS07-NOPE", "--url", system.nats_url)
    assert (
        unknown.returncode == 1 and "no decision recorded for project TS07-NOPE" in unknown.stdout
    )


NOTIFY = (REPO_ROOT / "rulesets" / "notify-2022.1.yaml").read_text(encoding="utf-8")
NOTIFY_YEAR = "effective: {from: 2022-01-01, to: 2022-12-31}"
SIGNED_60 = "signed_not_started: {after_days: 60, repeat_days: 7}"


async def test_a_published_notify_version_decides_in_notify_without_a_restart(
    system: Any, tmp_path: Path
) -> None:
    """Issue 14 (notify follows published rulesets): a maintainer ends notify 2022.1 in
    October and publishes 2022.2 (signed and not started: alert after 20 days, not 60) with
    its rule tests; notify says it is live, and its next tick judges November with it."""
    from sqlmodel import Session, col, select

    from services.notify import store
    from shared.db import make_engine

    assert NOTIFY_YEAR in NOTIFY and SIGNED_60 in NOTIFY
    (tmp_path / "notify-2022.1.yaml").write_text(
        NOTIFY.replace(NOTIFY_YEAR, "effective: {from: 2022-01-01, to: 2022-10-31}"),
        encoding="utf-8",
    )
    (tmp_path / "notify-2022.2.yaml").write_text(
        NOTIFY.replace('version: "2022.1"', 'version: "2022.2"', 1)
        .replace(NOTIFY_YEAR, "effective: {from: 2022-11-01, to: 2022-12-31}")
        .replace(SIGNED_60, "signed_not_started: {after_days: 20, repeat_days: 7}"),
        encoding="utf-8",
    )
    tests = tmp_path / "tests"
    shutil.copytree(TESTS, tests)
    with (tests / "notify-2022.yaml").open("a", encoding="utf-8") as fh:
        fh.write(
            "\n  - name: 2022.2 签约20天未开工不提醒 / 20 days — no alert yet\n"
            "    on: 2022-12-01\n    situation: {signed_not_started_days: 20}\n"
            "    expect: {alerts: []}\n"
            "\n  - name: 2022.2 签约21天未开工提醒 / 21 days — alert\n"
            "    on: 2022-12-01\n    situation: {signed_not_started_days: 21}\n"
            "    expect: {alerts: [stalled_signed]}\n"
        )
    files = [str(tmp_path / "notify-2022.1.yaml"), str(tmp_path / "notify-2022.2.yaml")]
    done = cli("publish", *files, "--tests", str(tests), "--url", system.nats_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "live in / 已生效: notify, review, scoring" in done.stdout

    # Signed on 20 November, not started; the latest event is dated 20 December, so notify's
    # day is 19 December: 29 days — past 2022.2's 20 (twice: day 21 and day 28), not 60.
    data = lead("TS08")
    pid = f"TS08-{data['lead_id']}"
    js = system.js
    await publish(js, "intake.TS08.lead", data)
    signed = {"project_id": pid, "milestone": "signed", "on": "2022-11-20", "amount": "80000000"}
    await publish(js, "intake.TS08.milestone", signed)
    await idle(js)
    await publish(js, "intake.TS08.lead", lead("TS08", reported_on="2022-12-20"))
    await idle(js)
    engine = make_engine(f"sqlite:///{system.data_dir / 'notify.db'}")
    causes: set[str] = set()
    try:
        for _ in range(100):
            with Session(engine) as session:
                causes = set(
                    session.exec(
                        select(store.Notification.cause).where(
                            col(store.Notification.cause).startswith(f"stalled_signed:{pid}:")
                        )
                    )
                )
            if len(causes) >= 2:
                break
            await asyncio.sleep(0.3)
    finally:
        engine.dispose()
    assert causes == {f"stalled_signed:{pid}:2022-11-20:1", f"stalled_signed:{pid}:2022-11-20:2"}
