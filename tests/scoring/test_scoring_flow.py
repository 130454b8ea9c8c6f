"""Scoring end to end: a real nats-server, intake and scoring as processes, SQLite and PostgreSQL.

Review is left out of this system on purpose: these tests publish `review.recognition`
themselves, so what scoring does is exactly what they say (test_with_review.py runs the lot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from services.scoring import store
from shared import subjects
from shared.contract import Recognition
from shared.partitions import DEFAULT_BUCKET
from shared.streams import stream_partitioning
from tests.conftest import system_on
from tests.helpers import count_rows, idle, keyed, lead, publish, read_subject, uid
from tests.scoring import builders as b

pytestmark = pytest.mark.timeout(180)

FOREIGN = {"name": "Acme Holdings Ltd", "origin": "foreign", "country": "US"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def scoring_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """Intake and scoring on free ports; the test plays the review service."""
    from investflow.services import SERVICES

    services = tuple(s for s in SERVICES if s.name in ("intake", "scoring"))
    data = tmp_path_factory.mktemp(f"scoring-{request.param}")
    async with system_on(request.param, data, services=services) as running:
        running.scoring_db = running.database_url or f"sqlite:///{data / 'scoring.db'}"  # type: ignore[attr-defined]
        yield running


async def recognise(js: Any, project_id: str, recognized: bool = True) -> None:
    event: Recognition = b.recognition(project_id, recognized=recognized)
    await js.publish(
        keyed("review.recognition", event.model_dump_json().encode()),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": f"review.recognition:{project_id}:{uid()}"},
    )


async def report_lead(js: Any, unit: str = "TS01", **overrides: Any) -> str:
    data = lead(unit, **overrides)
    await publish(js, f"intake.{unit}.lead", data)
    return f"{unit}-{data['lead_id']}"


def funds_payload(project_id: str, funds_id: str, amount: str, currency: str, day: str) -> dict:
    return {
        "project_id": project_id,
        "funds_id": funds_id,
        "amount": amount,
        "currency": currency,
        "arrived_on": day,
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": f"BR-{uid()}"},
    }


async def score_events(
    js: Any, subject: str, project_id: str, at_least: int = 0
) -> list[dict[str, Any]]:
    """The project's events on `subject`; with `at_least`, wait up to 20 s for that many
    (the consumers are idle by then, but an idle reading must not be the only witness)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        events = [
            e for e in await read_subject(js, "SCORE", subject) if e["project_id"] == project_id
        ]
        if len(events) >= at_least or asyncio.get_running_loop().time() > deadline:
            return events
        await asyncio.sleep(0.3)


async def test_usd_funds_with_their_rate_are_credited_once(scoring_system: Any) -> None:
    js = scoring_system.js
    pid = await report_lead(js, "TS01", investor=FOREIGN)
    await recognise(js, pid)
    await idle(js)  # recognised before the funds arrive: no 'not yet recognised' hold
    await publish(js, "intake.CENTER.rates", {"on": "2022-03-15", "rates": {"USD": "6.3360"}})
    # The Center's and the unit's inboxes are read side by side: without this wait the funds
    # may arrive first and be held for the rate (the next test covers that path).
    await idle(js)
    await publish(
        js, "intake.TS01.funds", funds_payload(pid, "F1", "2500000.50", "USD", "2022-03-15")
    )
    await idle(js)

    (credited,) = await score_events(js, "score.credited", pid, 1)
    # 2500000.50 × 6.3360 = 15840003.168 → 15840003.17 RMB; × 3 = 47520009.504 → 47520009.50
    assert Decimal(credited["amount_rmb"]) == Decimal("15840003.17")
    assert Decimal(credited["multiplier"]) == 3
    assert Decimal(credited["points"]) == Decimal("47520009.50")
    assert credited["matched"] == ["foreign_funded"]
    assert credited["deciding_rule"] == "foreign_funded"
    assert credited["credited_to"] == ["TS01", "DEVZONE"]
    assert (credited["year"], credited["quarter"]) == (2022, 1)
    assert credited["explanation"]["version"] == "2022.1"
    assert await score_events(js, "score.held", pid) == []


async def test_without_its_rate_the_record_is_held_then_credited_once_when_it_comes(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    pid = await report_lead(js, "TS02", investor=FOREIGN)
    await recognise(js, pid)
    await idle(js)  # recognised before the funds arrive: no 'not yet recognised' hold
    await publish(js, "intake.TS02.funds", funds_payload(pid, "F1", "1000000", "USD", "2022-04-27"))
    await idle(js)
    (held,) = await score_events(js, "score.held", pid, 1)
    assert "USD" in held["reason"] and "2022-04-27" in held["reason"]
    assert await score_events(js, "score.credited", pid) == []

    rates = {"on": "2022-04-27", "rates": {"USD": "6.4528", "EUR": "6.8126"}}
    await publish(js, "intake.CENTER.rates", rates, key="CENTER/rates/2022-04-27")
    await publish(js, "intake.CENTER.rates", rates, key="CENTER/rates/2022-04-27-resent")
    await idle(js)
    (credited,) = await score_events(js, "score.credited", pid, 1)
    assert Decimal(credited["amount_rmb"]) == Decimal("6452800.00")
    assert Decimal(credited["points"]) == Decimal("19358400.00")
    assert count_rows(scoring_system.scoring_db, store.Entry, store.Entry.project_id == pid) == 1


async def test_withdrawn_recognition_reverses_the_credit(scoring_system: Any) -> None:
    js = scoring_system.js
    pid = await report_lead(js, "TS03")
    await publish(js, "intake.TS03.funds", funds_payload(pid, "F1", "800000", "CNY", "2022-08-01"))
    await idle(js)
    assert len(await score_events(js, "score.held", pid, 1)) == 1
    await recognise(js, pid)
    await idle(js)
    assert len(await score_events(js, "score.credited", pid, 1)) == 1
    await recognise(js, pid, recognized=False)
    await idle(js)
    (reversed_,) = await score_events(js, "score.reversed", pid, 1)
    assert Decimal(reversed_["points"]) == Decimal("800000.00")


async def _start_second_scoring(system: Any) -> asyncio.subprocess.Process:
    from investflow.nats_server import free_port

    env = dict(system.supervisor.children["scoring"].env) | {"SCORING_HTTP_PORT": str(free_port())}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.scoring",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None

    async def ready() -> None:
        while line := await proc.stdout.readline():  # type: ignore[union-attr]
            if line.decode().strip() == "investflow: scoring ready":
                return
        raise AssertionError("second scoring process exited before it was ready")

    await asyncio.wait_for(ready(), 60)
    proc.port = int(env["SCORING_HTTP_PORT"])  # type: ignore[attr-defined]
    return proc


def _funds_messages_handled(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("investflow_scoring_messages_total")
            and 'subject="project.funds"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def one_project_per_partition(js: Any, unit: str) -> list[str]:
    """Leads reported until every partition of PROJECT holds one: whichever partitions
    each scoring replica leases, each has some of the work."""
    parts = await stream_partitioning(js, "PROJECT")
    found: dict[int, str] = {}
    while len(found) < parts.partitions:
        pid = await report_lead(js, unit)
        found.setdefault(parts.partition_of_subject(subjects.keyed("project.lead", pid)), pid)
    return list(found.values())


async def leased_apart(js: Any, group: str, members: int) -> None:
    """Wait until `members` replicas hold the leases of `group` (shared/partitions.py)."""
    kv = await js.key_value(DEFAULT_BUCKET)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        holders = set()
        with contextlib.suppress(Exception):
            for key in await kv.keys():
                if key.startswith(f"{group}.p."):
                    holders.add((await kv.get(key)).value)
        if len(holders) >= members:
            return
        assert asyncio.get_running_loop().time() < deadline, holders
        await asyncio.sleep(0.2)


async def test_five_deliveries_to_two_scoring_processes_credit_each_record_once(
    scoring_system: Any,
) -> None:
    js = scoring_system.js
    pids = await one_project_per_partition(js, "TS04")
    for pid in pids:
        await recognise(js, pid)
    await idle(js)
    second = await _start_second_scoring(scoring_system)
    drain = asyncio.create_task(second.stdout.read())  # type: ignore[union-attr]
    try:
        await leased_apart(js, "scoring.PROJECT", 2)
        funds_ids = [f"F{i:02d}" for i in range(3)]
        for pid in pids:
            for fid in funds_ids:
                event = b.funds(pid, funds_id=fid, amount="100000", arrived_on="2022-09-09")
                body = event.model_dump_json().encode()
                for copy in range(5):
                    # the same event re-sent past JetStream's duplicate window: five deliveries
                    await js.publish(
                        keyed("project.funds", body),
                        body,
                        headers={"Nats-Msg-Id": f"{pid}-{fid}-{copy}-{uid()}"},
                    )
                # and once more as a new event id for the same record (a re-report)
                again = b.funds(pid, funds_id=fid, amount="100000", arrived_on="2022-09-09")
                body = again.model_dump_json().encode()
                await js.publish(keyed("project.funds", body), body)
        await idle(js)

        db = scoring_system.scoring_db
        for pid in pids:
            credited = await score_events(js, "score.credited", pid, len(funds_ids))
            assert count_rows(db, store.FundsRecord, store.FundsRecord.project_id == pid) == 3
            assert count_rows(db, store.Entry, store.Entry.project_id == pid) == 3
            assert sorted(e["funds_id"] for e in credited) == funds_ids
            assert await score_events(js, "score.held", pid) == []
        # both processes really consumed: each leases some of the partitions
        first_port = int(scoring_system.supervisor.children["scoring"].env["SCORING_HTTP_PORT"])
        assert _funds_messages_handled(first_port) > 0
        assert _funds_messages_handled(second.port) > 0  # type: ignore[attr-defined]
    finally:
        with contextlib.suppress(ProcessLookupError):
            second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 20)
        drain.cancel()


async def test_bad_input_is_dead_lettered_and_scoring_goes_on(scoring_system: Any) -> None:
    js = scoring_system.js
    await js.publish(
        keyed("project.funds", b"{}"), b'{"not": "an envelope"', headers={"Nats-Msg-Id": uid()}
    )
    await js.publish(
        keyed("review.recognition", b'{"project_id": "TS05-X"}'),
        json.dumps({"project_id": "TS05-X", "recognized": "perhaps"}).encode(),
        headers={"Nats-Msg-Id": uid()},
    )
    pid = await report_lead(js, "TS05")
    await recognise(js, pid)
    await publish(js, "intake.TS05.funds", funds_payload(pid, "F1", "100", "CNY", "2022-10-10"))
    await idle(js)
    assert len(await score_events(js, "score.credited", pid, 1)) == 1
    dead = [d for d in await read_subject(js, "DLQ", "dlq.scoring.>")]
    errors = " ".join(d["error"] for d in dead)
    assert "project.funds" in errors and "review.recognition: recognized" in errors


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_http_scoreboard_health_and_metrics(scoring_system: Any) -> None:
    js = scoring_system.js
    pid = await report_lead(js, "TS06", landing_area="BIOPARK")
    await recognise(js, pid)
    await publish(
        js,
        "intake.TS06.milestone",
        {"project_id": pid, "milestone": "signed", "on": "2022-05-20", "amount": "120000000"},
    )
    await publish(js, "intake.TS06.funds", funds_payload(pid, "F1", "5000000", "CNY", "2022-05-21"))
    await idle(js)

    base = scoring_system.http_urls["scoring"]
    status, body = await asyncio.to_thread(_get, f"{base}/v1/scoreboard?year=2022")
    assert status == 200
    board = json.loads(body)
    subjects = {s["subject"]: s for s in board["subjects"]}
    assert Decimal(subjects["TS06"]["points"]) >= Decimal("5000000")
    assert subjects["BIOPARK"]["group"] == "park" and subjects["BIOPARK"]["rank"] >= 1
    q2 = next(t for t in board["targets"]["county"] if t["quarter"] == 2)
    assert q2["plan"] == 15 and q2["actual"] >= 1

    status, body = await asyncio.to_thread(_get, f"{base}/v1/scoreboard?year=2022&quarter=Q5")
    assert status == 422 and "quarter" in body
    status, text = await asyncio.to_thread(_get, f"{base}/v1/scoreboard?year=2022&format=csv")
    assert status == 200 and text.startswith("section,year,quarter")
    status, body = await asyncio.to_thread(_get, f"{base}/v1/projects/{pid}/funds")
    assert status == 200 and json.loads(body)["funds"][0]["state"] == "credited"
    assert (await asyncio.to_thread(_get, f"{base}/health"))[0] == 200
    status, text = await asyncio.to_thread(_get, f"{base}/metrics")
    assert status == 200 and "investflow_scoring_messages_total" in text


async def test_rates_loaded_from_csv_release_what_was_held(
    scoring_system: Any, tmp_path: Any
) -> None:
    js = scoring_system.js
    pid = await report_lead(js, "TS07", investor=FOREIGN)
    await recognise(js, pid)
    await idle(js)  # recognised before the funds arrive: no 'not yet recognised' hold
    await publish(js, "intake.TS07.funds", funds_payload(pid, "F1", "1000", "HKD", "2022-11-11"))
    await idle(js)
    assert len(await score_events(js, "score.held", pid, 1)) == 1

    csv_file = tmp_path / "rates.csv"
    csv_file.write_text("date,currency,cny_per_unit\n2022-11-11,HKD,0.91234\n2022-11-11,USD,7.1\n")
    command = [sys.executable, "-m", "investflow.main", "rates", "load", str(csv_file)]
    for _ in range(2):  # the second load changes nothing
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, "--url", scoring_system.nats_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # Units' inboxes fold only a 100 ms burst of one key; intake's table makes the re-sent
    # day change nothing (the credit below is still exactly one).
    assert "published 2 rates on 1 days" in done.stdout
    await idle(js)
    (credited,) = await score_events(js, "score.credited", pid, 1)
    assert Decimal(credited["amount_rmb"]) == Decimal("912.34")
    assert Decimal(credited["points"]) == Decimal("2737.02")


async def test_a_published_scoring_version_decides_without_a_restart(scoring_system: Any) -> None:
    from shared.rules import published
    from shared.rules.ruletest import gate_on_rule_tests
    from shared.settings import REPO_ROOT

    js = scoring_system.js
    text = (REPO_ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    assert 'version: "2022.1"' in text
    loaded = await scoring_system.nc.subscribe(published.loaded_subject("scoring"))
    await published.publish(
        js,
        text.replace('version: "2022.1"', 'version: "2022.2"', 1),
        "test:scoring-2022.2",
        gate_on_rule_tests(REPO_ROOT / "rulesets" / "tests"),
    )
    status = json.loads((await loaded.next_msg(timeout=30)).data)
    await loaded.unsubscribe()
    assert status["loaded"] is True and status["key"] == "scoring.2022.2"

    pid = await report_lead(js, "TS08")
    await recognise(js, pid)
    await publish(js, "intake.TS08.funds", funds_payload(pid, "F1", "100", "CNY", "2022-12-01"))
    # 2023 has no scoring ruleset yet: held until one is published, then credited
    await publish(js, "intake.TS08.funds", funds_payload(pid, "F2", "200", "CNY", "2023-01-10"))
    await idle(js)
    (credited,) = await score_events(js, "score.credited", pid, 1)
    assert credited["explanation"]["version"] == "2022.2"
    held = await score_events(js, "score.held", pid, 1)
    assert "no scoring ruleset in force on 2023-01-10" in held[-1]["reason"]

    next_year = text.replace('version: "2022.1"', 'version: "2023.1"', 1).replace(
        "effective: {from: 2022-01-01, to: 2022-12-31}",
        "effective: {from: 2022-01-01, to: 2023-12-31}",
    )
    await published.publish(
        js, next_year, "test:scoring-2023.1", gate_on_rule_tests(REPO_ROOT / "rulesets" / "tests")
    )
    credits = await score_events(js, "score.credited", pid, 2)
    assert [(c["funds_id"], c["explanation"]["version"]) for c in credits] == [
        ("F1", "2022.2"),
        ("F2", "2023.1"),
    ]
