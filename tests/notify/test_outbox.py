"""The outbox on SQLite and PostgreSQL: once per cause and recipient, back-off, failures, retry."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

from investflow.main import main as investflow
from services.notify import store
from services.notify.channels import default_channels
from services.notify.dispatch import Dispatcher, RetryPolicy
from shared import subjects
from shared.contract import Explanation, Screened
from shared.db import unit_of_work
from tests.notify.conftest import FakeClock, contacts_yaml
from tests.notify.support import RENDERER, feed, lead_event, notify_engine, rows

pytestmark = pytest.mark.timeout(60)
N = store.Notification


def html_of(note):  # type: ignore[no-untyped-def]
    return note.html or RENDERER.email_html(note.subject, note.body, note.language, note.cause)


@pytest.fixture
def setup(database_url, tmp_path, smtp_server, http_sink, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NOTIFY_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("NOTIFY_SMTP_PORT", str(smtp_server.port))
    contacts = contacts_yaml(tmp_path / "contacts.yaml", "county.example", http_sink)
    engine = notify_engine(database_url, contacts)
    yield engine, smtp_server, http_sink
    engine.dispose()


def dispatcher(engine, clock, published, max_attempts=6):  # type: ignore[no-untyped-def]
    async def publish(outcomes: list[tuple[str, str, str]]) -> None:
        published.extend(outcomes)

    return Dispatcher(
        engine,
        default_channels(html_of),
        publish=publish,
        clock=clock,
        policy=RetryPolicy(max_attempts=max_attempts, base_s=10, cap_s=3600),
    )


def screened(pid: str) -> str:
    return Screened(
        project_id=pid,
        outcome="terminated",
        track=None,
        reasons=["real_estate_excluded", "environment_failed"],
        explanation=Explanation(
            ruleset_id="review", version="2022.1", matched=[], parameters={}, deciding_rule=None
        ),
    ).model_dump_json()


async def test_the_same_event_three_times_is_one_delivery_per_recipient(setup) -> None:
    engine, smtp, sink = setup
    lead = lead_event("TS01", "A1", landing_area="DEVZONE")
    feed(engine, "project.lead", lead)
    for key in ("m1", "m2", "m3"):  # redelivered, and re-published under new ids
        feed(engine, "review.screened", screened("TS01-A1"), key)
    feed(engine, "review.screened", screened("TS01-A1"), "m1")
    notes = rows(engine, N.cause == "terminated:TS01-A1")
    assert sorted((n.recipient, n.channel) for n in notes) == [
        ("DEVZONE", "dingtalk"),
        ("TS01", "email"),
        ("TS01", "webhook"),
    ]
    published: list = []
    d = dispatcher(engine, FakeClock(), published)
    await asyncio.gather(d.deliver_due(), d.deliver_due())
    await d.deliver_due()
    mails = [m for m in smtp.to("ts01@county.example") if "告知终止洽谈" in m["Subject"]]
    assert len(mails) == 1
    body = mails[0].get_body(("plain",)).get_content()
    assert "房地产项目不予招引" in body and "不满足环保、安全、能耗条件" in body
    assert len([p for p in sink.posts("/hook/TS01") if p["cause"] == "terminated:TS01-A1"]) == 1
    assert len([p for p in sink.posts("/dingtalk") if "Terminated" in p["markdown"]["title"]]) == 1
    assert (
        len([s for s, _, _ in published if subjects.event_type(s) == "notify.sent"]) == 6
    )  # lead (3) + terminated (3)


async def test_two_dispatchers_never_send_the_same_row(setup) -> None:
    engine, smtp, _ = setup
    for i in range(5):
        feed(engine, "project.lead", lead_event("TS02", f"B{i}", landing_area="TS02"))
    clock, published = FakeClock(), []
    a, b = dispatcher(engine, clock, published), dispatcher(engine, clock, published)
    await asyncio.gather(a.deliver_due(), b.deliver_due(), a.deliver_due())
    assert len(smtp.to("ts02@county.example")) == 5
    assert {n.status for n in rows(engine)} == {"sent"}


async def test_failing_three_times_then_recovering_is_retried_with_backoff_and_sent_once(
    setup,
) -> None:
    engine, _, sink = setup
    sink.script["/hook/TS01"] = [500, 503, 500]
    feed(engine, "project.lead", lead_event("TS01", "C1", landing_area="TS01"))
    clock, published = FakeClock(), []
    d = dispatcher(engine, clock, published)

    def hook() -> store.Notification:
        return rows(engine, N.channel == "webhook")[0]

    await d.deliver_due()
    assert (hook().status, hook().attempts) == ("pending", 1)
    assert hook().next_attempt_at == clock.at + dt.timedelta(seconds=10)
    for wait, attempts in ((10, 2), (20, 3), (40, 4)):  # 10 s, 20 s, 40 s
        clock.advance(seconds=wait - 0.5)
        await d.deliver_due()
        assert hook().attempts == attempts - 1, "retried before its back-off ran out"
        clock.advance(seconds=0.5)
        await d.deliver_due()
        assert hook().attempts == attempts
    assert hook().status == "sent" and hook().last_error is None
    clock.advance(hours=5)
    await d.deliver_due()
    assert len(sink.posts("/hook/TS01")) == 1
    sent = [
        b for s, b, _ in published if subjects.event_type(s) == "notify.sent" and '"webhook"' in b
    ]
    assert len(sent) == 1 and '"attempts":4' in sent[0]


async def test_one_that_keeps_failing_is_failed_listed_and_can_be_retried(
    setup, database_url, capsys
) -> None:
    engine, _, sink = setup
    sink.script["/wecom"] = [500] * 10
    feed(engine, "project.lead", lead_event("TS03", "D1", landing_area="CHEMPARK"))
    clock, published = FakeClock(), []
    d = dispatcher(engine, clock, published, max_attempts=3)
    for _ in range(6):
        await d.deliver_due()
        clock.advance(hours=1)
    [robot] = rows(engine, N.channel == "wecom")
    assert (robot.status, robot.attempts) == ("failed", 3)
    assert "HTTP 500" in (robot.last_error or "")
    assert "key=k3y" not in (robot.last_error or "")  # robot tokens stay out of errors
    failed = [b for s, b, _ in published if subjects.event_type(s) == "notify.failed"]
    assert len(failed) == 1 and "lead_assigned:TS03-D1" in failed[0]

    assert (
        investflow(["notifications", "list", "--status", "failed", "--database-url", database_url])
        == 0
    )
    out = capsys.readouterr().out
    assert "lead_assigned:TS03-D1" in out and "CHEMPARK" in out and "HTTP 500" in out
    assert "1 notification(s)" in out

    sink.script["/wecom"] = []
    assert (
        investflow(["notifications", "retry", str(robot.id), "--database-url", database_url]) == 0
    )
    clock.at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)  # the CLI queues it for "now"
    await d.deliver_due()
    [robot] = rows(engine, N.channel == "wecom")
    assert robot.status == "sent"
    assert len(sink.posts("/wecom")) == 1
    assert (
        investflow(["notifications", "retry", str(robot.id), "--database-url", database_url]) == 1
    )


async def test_a_robot_errcode_is_a_failure(setup) -> None:
    engine, _, sink = setup
    sink.robot_error["/dingtalk"] = {"errcode": 310000, "errmsg": "sign not match"}
    feed(engine, "project.lead", lead_event("TS05", "E1", landing_area="DEVZONE"))
    d = dispatcher(engine, FakeClock(), [])
    await d.deliver_due()
    [robot] = rows(engine, N.channel == "dingtalk")
    assert robot.status == "pending" and "310000" in (robot.last_error or "")


async def test_a_claim_whose_dispatcher_died_is_sent_once_after_its_lease_not_before(
    setup,
) -> None:
    engine, smtp, sink = setup
    feed(engine, "project.lead", lead_event("TS01", "F1", landing_area="DEVZONE"))
    clock, published = FakeClock(), []
    lease = dt.timedelta(minutes=2)
    with unit_of_work(engine) as session:  # a dispatcher claims all of them, then dies
        claimed = store.claim_due(session, clock(), lease, 100)
    assert len(claimed) == 3 and {n.status for n in rows(engine)} == {"sending"}

    d = dispatcher(engine, clock, published)
    assert await d.deliver_due() == 0  # still leased: nobody else sends them
    clock.advance(minutes=2)
    assert await d.deliver_due() == 0  # the lease runs to its very end
    assert not smtp.messages and not sink.received
    clock.advance(seconds=1)
    assert await d.deliver_due() == 3
    await d.deliver_due()
    assert len(smtp.to("ts01@county.example")) == 1
    assert len(sink.posts("/hook/TS01")) == 1 and len(sink.posts("/dingtalk")) == 1
    assert [(n.status, n.attempts) for n in rows(engine)] == [("sent", 1)] * 3


def test_two_claims_at_once_never_take_the_same_row(setup) -> None:
    engine, _, _ = setup
    for i in range(4):
        feed(engine, "project.lead", lead_event("TS02", f"G{i}", landing_area="TS02"))
    now, lease = FakeClock()(), dt.timedelta(minutes=2)
    second: list = []

    def other_dispatcher() -> None:
        with unit_of_work(engine) as session:
            second.extend(store.claim_due(session, now, lease, 100))

    with unit_of_work(engine) as session:
        first = store.claim_due(session, now, lease, 100)
        # The other claim starts while this one is not committed yet: it sees the rows as
        # due, and must still come away with none of them.
        thread = threading.Thread(target=other_dispatcher)
        thread.start()
        thread.join(timeout=0.5)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(first) == 4 and second == []
    assert {n.status for n in rows(engine)} == {"sending"}
