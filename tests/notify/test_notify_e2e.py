"""Notify end to end: real nats-server, the intake and notify processes, real SMTP and HTTP receivers.

Only intake and notify run here: the review events are published by the test with the
contract models, as the review service would, so this test does not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import pytest

from investflow.nats_server import free_port
from investflow.runtime import running_system
from investflow.services import SERVICES
from shared.contract import Explanation, Screened
from tests.conftest import PG_SKIP_REASON, fresh_pg_database
from tests.helpers import keyed, lead, publish, read_subject, uid
from tests.notify.conftest import contacts_yaml

pytestmark = pytest.mark.timeout(120)


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.2)
    assert check(), "condition not met in time"


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_events_reach_recipients_once_through_the_running_service(
    db: str, tmp_path, smtp_server, http_sink
) -> None:
    domain = "county.example"
    contacts = contacts_yaml(tmp_path / "contacts.yaml", domain, http_sink)
    env = {
        "INVESTFLOW_DUPLICATE_WINDOW": "2",
        "INVESTFLOW_ACK_WAIT": "5",
        "NOTIFY_CONTACTS": str(contacts),
        "NOTIFY_SMTP_HOST": smtp_server.host,
        "NOTIFY_SMTP_PORT": str(smtp_server.port),
        "NOTIFY_SMTP_FROM": "zhaoshang@county.example",
        "NOTIFY_CLOCK": "business",
        "NOTIFY_TICK_S": "0.3",
        "NOTIFY_POLL_S": "0.2",
    }
    services = tuple(s for s in SERVICES if s.name in ("intake", "notify"))
    with contextlib.ExitStack() as stack:
        if db == "postgresql":
            if PG_SKIP_REASON:
                pytest.skip(PG_SKIP_REASON)
            env["DATABASE_URL"] = stack.enter_context(fresh_pg_database())
        async with running_system(
            tmp_path / "data",
            free_port(),
            free_port(),
            services=services,
            echo=bool(os.environ.get("INVESTFLOW_ECHO")),
            extra_env=env,
        ) as system:
            js = system.js
            data = lead("TS01", landing_area="DEVZONE", reported_on="2022-03-01")
            pid = f"TS01-{data['lead_id']}"
            await publish(js, "intake.TS01.lead", data)

            # 1. lead assigned: the attracting unit by email and webhook, the landing area by DingTalk (English)
            await eventually(
                lambda: smtp_server.to(f"ts01@{domain}") and http_sink.posts("/dingtalk")
            )
            mail = smtp_server.to(f"ts01@{domain}")[0]
            assert mail["Subject"].startswith("【招商引资】新项目已登记")
            assert pid in mail.get_body(("plain",)).get_content()
            await eventually(lambda: http_sink.posts("/hook/TS01"))
            robot = http_sink.posts("/dingtalk")[0]
            assert robot["msgtype"] == "markdown"
            assert robot["markdown"]["title"].startswith(
                "[Investment attraction] New project registered"
            )

            # 2. the same terminated screening three times: one delivery per recipient
            screened = Screened(
                project_id=pid,
                outcome="terminated",
                track=None,
                reasons=["industry_out_of_scope"],
                explanation=Explanation(
                    ruleset_id="review",
                    version="2022.1",
                    matched=["industry_out_of_scope"],
                    parameters={},
                    deciding_rule="industry_out_of_scope",
                ),
            ).model_dump_json()
            for _ in range(3):
                await js.publish(
                    keyed("review.screened", screened.encode()),
                    screened.encode(),
                    headers={"Nats-Msg-Id": uid()},
                )
            await eventually(
                lambda: any(
                    "告知终止洽谈" in m["Subject"] for m in smtp_server.to(f"ts01@{domain}")
                )
            )
            await asyncio.sleep(1.5)  # room for a wrong second delivery to show up
            terminated = [
                m for m in smtp_server.to(f"ts01@{domain}") if "告知终止洽谈" in m["Subject"]
            ]
            assert len(terminated) == 1
            assert "产业不在产业目录内" in terminated[0].get_body(("plain",)).get_content()
            assert (
                len(
                    [
                        p
                        for p in http_sink.posts("/dingtalk")
                        if "Terminated" in p["markdown"]["title"]
                    ]
                )
                == 1
            )

            # 3. business clock: another project approved on the meeting day, a visit, then silence
            major = lead("TS02", landing_area="TS02", reported_on="2022-03-02")
            pid = f"TS02-{major['lead_id']}"
            await publish(js, "intake.TS02.lead", major)
            meeting_id = f"M{uid()}"
            await publish(
                js,
                "intake.CENTER.meeting",
                {"meeting_id": meeting_id, "on": "2022-03-10", "agenda": [pid]},
            )
            await publish(
                js,
                "intake.CENTER.decision",
                {
                    "project_id": pid,
                    "meeting_id": meeting_id,
                    "decision": "approved",
                    "minutes_ref": "纪要〔2022〕1号",
                    "responsible_leader": "L01",
                    "sponsor_leader": "L03",
                    "hq": {"commander": "L03", "members": ["TS02", "DRC"]},
                },
            )
            await publish(
                js, "intake.TS02.visit", {"project_id": pid, "leader": "L03", "on": "2022-03-12"}
            )
            await publish(js, "intake.CENTER.rates", {"on": "2022-03-20", "rates": {"USD": "6.3"}})
            await asyncio.sleep(1.5)

            def reminders() -> list:
                return [m for m in smtp_server.to(f"l03@{domain}") if "包保提醒" in m["Subject"]]

            assert not reminders()  # day 7 after the visit: nothing yet
            await publish(js, "intake.CENTER.rates", {"on": "2022-03-22", "rates": {"USD": "6.3"}})
            await eventually(reminders)
            overdue = reminders()
            assert len(overdue) == 1 and "8 天" in overdue[0]["Subject"]  # first due on day 8

            # the Monday report went to the sponsor leader, with its chart inline
            def weekly_reports() -> list:
                return [m for m in smtp_server.to(f"l03@{domain}") if "周通报" in m["Subject"]]

            # Planned in their own transactions after the time alerts: wait for both. The
            # latest's chart is drawn first (CPU-bound): with the suite's four workers on two
            # cores it took over 20 s once in CI (PostgreSQL, 2026-12-08).
            await eventually(lambda: len(weekly_reports()) >= 2, timeout=60)
            weekly = weekly_reports()
            assert sorted(m["Subject"][-11:-1] for m in weekly) == ["2022-03-14", "2022-03-21"]
            # The latest week's report carries its chart (a caught-up past week's may not).
            latest = max(weekly, key=lambda m: m["Subject"][-11:-1])
            parts = {p.get_content_type() for p in latest.walk()}
            assert {"text/plain", "text/html", "image/png"} <= parts

            # every delivery is announced on notify.sent
            await asyncio.sleep(1.0)
            sent = await read_subject(js, "NOTIFY", "notify.sent")
            causes = {(e["cause"], e["recipient"], e["channel"]) for e in sent}
            first = f"TS01-{data['lead_id']}"
            assert (f"terminated:{first}", "TS01", "email") in causes
            assert (f"lead_assigned:{first}", "DEVZONE", "dingtalk") in causes
            assert (f"visit_overdue:{pid}:2022-03-12:1", "L03", "email") in causes
            assert len(sent) == len(causes)  # each (cause, recipient, channel) announced once
