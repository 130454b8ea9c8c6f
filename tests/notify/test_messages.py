"""What each event tells whom, and what arrives: SMTP (plain + HTML), webhook JSON, DingTalk, WeCom."""

from __future__ import annotations

import json
import urllib.parse
from decimal import Decimal

import pytest

from services.notify import store
from services.notify.channels import default_channels
from services.notify.dispatch import Dispatcher
from shared.contract import Credited, Decided, DuplicateClaim, Explanation, MaterialsStatus
from tests.notify.conftest import FakeClock, contacts_yaml
from tests.notify.support import NOW, RENDERER, envelope, feed, lead_event, notify_engine, rows

pytestmark = pytest.mark.timeout(60)
N = store.Notification
EXPL = Explanation(
    ruleset_id="review", version="2022.1", matched=[], parameters={}, deciding_rule=None
)


@pytest.fixture
def engine(tmp_path, smtp_server, http_sink, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NOTIFY_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("NOTIFY_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("NOTIFY_SMTP_FROM", "zhaoshang@county.example")
    contacts = contacts_yaml(tmp_path / "c.yaml", "county.example", http_sink)
    engine = notify_engine(f"sqlite:///{tmp_path / 'n.db'}", contacts)
    feed(
        engine,
        "project.lead",
        lead_event("TS01", "P1", landing_area="DEVZONE", title="年产5万吨新材料项目"),
    )
    yield engine
    engine.dispose()


async def deliver(engine) -> None:  # type: ignore[no-untyped-def]
    html = lambda n: n.html or RENDERER.email_html(n.subject, n.body, n.language, n.cause)  # noqa: E731
    await Dispatcher(engine, default_channels(html), clock=FakeClock()).deliver_due()


async def test_email_has_recipients_subject_and_chinese_body_in_text_and_html(
    engine, smtp_server
) -> None:
    await deliver(engine)
    [(rcpts, mail)] = [(r, m) for r, m in smtp_server.messages if "ts01@county.example" in r]
    assert rcpts == ["ts01@county.example"]
    assert mail["From"] == "zhaoshang@county.example" and mail["To"] == "ts01@county.example"
    assert mail["Subject"] == "【招商引资】新项目已登记：年产5万吨新材料项目"
    text = mail.get_body(("plain",)).get_content()
    assert "城关街道：" in text and "项目编号 **TS01-P1**" in text and "计划投资：1.5亿元" in text
    assert "落地区域：县经济开发区" in text
    html = mail.get_body(("html",)).get_content()
    assert "<strong>TS01-P1</strong>" in html and "<li>计划投资：1.5亿元</li>" in html
    assert mail["Message-ID"].endswith("@investflow.notify>")


async def test_webhook_and_robot_payloads(engine, http_sink) -> None:
    await deliver(engine)
    [hook] = http_sink.posts("/hook/TS01")
    assert hook["cause"] == "lead_assigned:TS01-P1" and hook["recipient"] == "TS01"
    assert hook["kind"] == "lead_assigned" and hook["language"] == "zh"
    assert (
        hook["data"]["planned_investment"] == "150000000"
        and hook["data"]["title"] == "年产5万吨新材料项目"
    )
    assert hook["subject"].startswith("【招商引资】") and "TS01-P1" in hook["text"]
    [(path, robot, _)] = [r for r in http_sink.received if r[0].startswith("/dingtalk")]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert query["access_token"] == ["t0k"] and query["timestamp"] and query["sign"]  # 加签
    assert robot == {
        "msgtype": "markdown",
        "markdown": {"title": robot["markdown"]["title"], "text": robot["markdown"]["text"]},
    }
    assert robot["markdown"]["text"].startswith(
        "### [Investment attraction] New project registered"
    )
    assert "County Economic Development Zone:" in robot["markdown"]["text"]  # DEVZONE reads English


async def test_approval_tells_sponsor_leader_hq_and_unit(engine, http_sink, smtp_server) -> None:
    feed(
        engine,
        "project.meeting",
        envelope(
            "meeting",
            "CENTER",
            {"meeting_id": "M1", "on": "2022-02-21", "agenda": ["TS01-P1"]},
            project_id=None,
        ),
    )
    decided = Decided(
        project_id="TS01-P1",
        meeting_id="M1",
        decision="approved",
        minutes_ref="纪要〔2022〕2号",
        sponsor_leader="L03",
        responsible_leader="L01",
        hq_commander="L03",
        hq_members=["TS01", "CHEMPARK", "DRC"],
    )
    feed(engine, "review.decided", decided.model_dump_json())
    notes = rows(engine, N.cause == "approved:TS01-P1")
    assert sorted({n.recipient for n in notes}) == ["CHEMPARK", "DRC", "L01", "L03", "TS01"]
    await deliver(engine)
    [mail] = [m for m in smtp_server.to("l03@county.example") if "准予落户" in m["Subject"]]
    text = mail.get_body(("plain",)).get_content()
    assert (
        "包保县级领导：副县长（工业）" in text
        and "指挥部成员单位：城关街道、化工产业园、发改局" in text
    )
    [robot] = [p for p in http_sink.posts("/wecom") if "准予落户" in p["markdown"]["content"]]
    assert robot["msgtype"] == "markdown" and robot["markdown"]["content"].startswith(
        "**【准予落户】"
    )
    no_contact = [n for n in notes if n.recipient == "DRC"]
    assert [(n.channel, n.status) for n in no_contact] == [
        ("none", "failed")
    ]  # DRC has no contact here


async def test_materials_credits_and_duplicates(engine) -> None:
    feed(
        engine,
        "review.materials",
        MaterialsStatus(
            project_id="TS01-P1",
            complete=False,
            missing_materials=["aerial_view"],
            deadline="2022-02-18",
            explanation=EXPL,
        ).model_dump_json(),
    )
    feed(
        engine,
        "review.materials",
        MaterialsStatus(
            project_id="TS01-P1",
            complete=True,
            missing_materials=[],
            deadline="2022-02-18",
            explanation=EXPL,
        ).model_dump_json(),
    )
    [m] = rows(engine, N.cause == "materials_missing:TS01-P1:2022-02-18", N.channel == "email")
    assert m.recipient == "TS01" and "- 项目鸟瞰图" in m.body and "**2022-02-18**" in m.body
    credited = Credited(
        project_id="TS01-P1",
        funds_id="F1",
        year=2022,
        quarter=1,
        amount_rmb=Decimal("3000000"),
        multiplier=Decimal("1.5"),
        points=Decimal("4500000"),
        matched=["headquarters"],
        deciding_rule="headquarters",
        credited_to=["TS01", "DEVZONE", "L03"],
        explanation=EXPL,
    )
    feed(engine, "score.credited", credited.model_dump_json())
    assert sorted(n.recipient for n in rows(engine, N.cause == "credited:TS01-P1:F1")) == [
        "DEVZONE",
        "L03",
        "TS01",
        "TS01",
    ]
    dup = DuplicateClaim(
        event_id="duplicate:TS02-X",
        project_id="TS02-X",
        duplicate_of="TS01-P1",
        units=["TS02", "TS01"],
        reason="same investor",
        received_at=NOW,
    )
    feed(engine, "project.duplicate", json.loads(dup.model_dump_json()))
    [d] = rows(engine, N.cause == "duplicate:TS02-X")
    assert d.recipient == "CENTER" and "东城街道" in d.body and "城关街道" in d.body


HOSTILE_TITLE = (
    "[点我领奖](http://evil.example/x) ![t](http://evil.example/p.png)\n# 标题 <b>粗</b>"
)


async def test_unit_text_builds_no_link_image_heading_or_html_in_any_channel(
    tmp_path, smtp_server, http_sink, monkeypatch
) -> None:
    """Issue 11 item 12: a title from a unit's system is text in email, webhook and robots."""
    monkeypatch.setenv("NOTIFY_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("NOTIFY_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("NOTIFY_SMTP_FROM", "zhaoshang@county.example")
    contacts = contacts_yaml(tmp_path / "c.yaml", "county.example", http_sink)
    engine = notify_engine(f"sqlite:///{tmp_path / 'n.db'}", contacts)
    feed(
        engine,
        "project.lead",
        lead_event("TS01", "P9", landing_area="DEVZONE", title=HOSTILE_TITLE),
    )
    await deliver(engine)
    engine.dispose()
    mails = [m for r, m in smtp_server.messages if "ts01@county.example" in r]
    assert mails
    html = mails[0].get_body(("html",)).get_content()
    assert "<a " not in html and "<img" not in html and "<b>" not in html and "<h1" not in html
    assert "evil.example" in html  # the words are all there, as text
    robots = [
        body for path, body, _ in http_sink.received if path.startswith(("/dingtalk", "/wecom"))
    ]
    assert robots
    for robot in robots:
        text = json.dumps(robot, ensure_ascii=False)
        assert "](http" not in text and "\\n# 标题" not in text and "<b>" not in text
