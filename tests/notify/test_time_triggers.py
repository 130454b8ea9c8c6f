"""Each time trigger across its boundary: just before nothing, just after one, a period later one more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from services.notify import store
from services.notify.params import load_params
from services.notify.scheduler import Scheduler
from shared.contract import Decided, Explanation, MaterialsStatus
from tests.notify.support import (
    DIRECTORY,
    RENDERER,
    RULESETS,
    envelope,
    feed,
    lead_event,
    notify_engine,
    rows,
)

N = store.Notification
D = dt.date


class Days:
    """The scheduler's injectable clock: a business day a test moves."""

    def __init__(self, day: dt.date) -> None:
        self.day = day

    def __call__(self) -> dt.date:
        return self.day


@pytest.fixture
def world(database_url, tmp_path) -> Iterator:  # type: ignore[no-untyped-def]
    contacts = tmp_path / "c.yaml"
    contacts.write_text(
        "contacts:\n"
        + "".join(
            f"  - {{code: {c}, email: {c.lower()}@county.example}}\n"
            for c in ("CENTER", "L01", "L03", "TS01", "TS02", "TS03")
        ),
        encoding="utf-8",
    )
    engine = notify_engine(database_url, contacts)
    clock = Days(D(2022, 1, 1))
    sched = Scheduler(engine, RENDERER, DIRECTORY, load_params(), RULESETS, clock)
    yield engine, clock, sched
    engine.dispose()


def causes(engine, prefix: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((n.cause, n.recipient) for n in rows(engine, N.cause.startswith(prefix)))  # type: ignore[attr-defined]


def at(clock: Days, sched: Scheduler, day: dt.date) -> None:
    clock.day = day
    sched.tick()


def approve(engine, pid: str, unit: str, meeting_on: str, leader: str = "L03") -> None:  # type: ignore[no-untyped-def]
    mid = f"M-{pid}"
    feed(
        engine,
        "project.meeting",
        envelope(
            "meeting",
            "CENTER",
            {"meeting_id": mid, "on": meeting_on, "agenda": [pid]},
            project_id=None,
        ),
    )
    decided = Decided(
        project_id=pid,
        meeting_id=mid,
        decision="approved",
        minutes_ref="纪要1号",
        sponsor_leader=leader,
        responsible_leader="L01",
        hq_commander=leader,
        hq_members=[unit, "DRC"],
    )
    feed(engine, "review.decided", decided.model_dump_json())


def milestone(engine, pid: str, unit: str, kind: str, on: str, amount: str | None = None) -> None:  # type: ignore[no-untyped-def]
    data = {"project_id": pid, "milestone": kind, "on": on} | ({"amount": amount} if amount else {})
    feed(engine, "project.milestone", envelope("milestone", unit, data))


def test_a_week_without_a_site_visit_alerts_the_sponsor_then_escalates(world) -> None:
    engine, clock, sched = world
    feed(engine, "project.lead", lead_event("TS01", "V1", reported_on="2022-02-01"))
    approve(engine, "TS01-V1", "TS01", "2022-02-20")
    at(clock, sched, D(2022, 2, 20))
    for on in ("2022-02-25", "2022-03-01"):
        feed(
            engine,
            "project.visit",
            envelope("visit", "TS01", {"project_id": "TS01-V1", "leader": "L03", "on": on}),
        )
    at(clock, sched, D(2022, 3, 8))  # 7 days: still weekly
    assert causes(engine, "visit_") == []
    at(clock, sched, D(2022, 3, 9))  # 8 days
    assert causes(engine, "visit_") == [("visit_overdue:TS01-V1:2022-03-01:1", "L03")]
    for day in range(10, 16):  # ticking every day of that week: nothing more
        at(clock, sched, D(2022, 3, day))
    assert len(causes(engine, "visit_")) == 1
    at(clock, sched, D(2022, 3, 16))  # 15 days: a week later, and past two weeks
    assert causes(engine, "visit_") == [
        ("visit_escalated:TS01-V1:2022-03-01:1", "CENTER"),
        ("visit_overdue:TS01-V1:2022-03-01:1", "L03"),
        ("visit_overdue:TS01-V1:2022-03-01:2", "L03"),
    ]
    at(clock, sched, D(2022, 3, 16))
    assert len(causes(engine, "visit_")) == 3
    # a visit resets the clock
    feed(
        engine,
        "project.visit",
        envelope("visit", "TS01", {"project_id": "TS01-V1", "leader": "L03", "on": "2022-03-17"}),
    )
    at(clock, sched, D(2022, 3, 24))
    assert len(causes(engine, "visit_")) == 3
    mail = rows(engine, N.cause == "visit_overdue:TS01-V1:2022-03-01:2")[0]
    assert "已 15 天未到现场调度" in mail.subject


def test_agenda_deadline_within_a_day_with_materials_missing_alerts_the_unit(world) -> None:
    engine, clock, sched = world
    feed(engine, "project.lead", lead_event("TS02", "M1", reported_on="2022-02-01"))

    def materials(deadline: str, missing: list[str]) -> None:
        status = MaterialsStatus(
            project_id="TS02-M1",
            complete=not missing,
            missing_materials=missing,
            deadline=deadline,
            explanation=Explanation(
                ruleset_id="review", version="2022.1", matched=[], parameters={}, deciding_rule=None
            ),
        )
        feed(engine, "review.materials", status.model_dump_json())

    materials("2022-03-07", ["aerial_view", "feasibility_report"])
    at(clock, sched, D(2022, 3, 5))  # two days before
    assert causes(engine, "materials_due") == []
    at(clock, sched, D(2022, 3, 6))  # one day before
    assert causes(engine, "materials_due") == [("materials_due:TS02-M1:2022-03-07", "TS02")]
    note = rows(engine, N.cause == "materials_due:TS02-M1:2022-03-07")[0]
    assert "项目鸟瞰图" in note.body and "投资项目可研报告" in note.body
    at(clock, sched, D(2022, 3, 7))
    at(clock, sched, D(2022, 3, 8))
    assert len(causes(engine, "materials_due")) == 1
    # the next meeting a week later: one more, unless the documents are filed by then
    materials("2022-03-14", ["aerial_view"])
    at(clock, sched, D(2022, 3, 13))
    assert len(causes(engine, "materials_due")) == 2
    materials("2022-03-21", ["aerial_view"])
    feed(
        engine,
        "project.document",
        envelope(
            "document", "TS02", {"project_id": "TS02-M1", "type": "aerial_view", "ref": "a.pdf"}
        ),
    )
    at(clock, sched, D(2022, 3, 20))
    assert len(causes(engine, "materials_due")) == 2


@pytest.mark.parametrize(
    ("kind", "prefix", "after"),
    [
        ("signed", "stalled_signed", 60),
        ("waiting_for_land", "stalled_land", 30),
        ("lacking_funds", "stalled_funds", 30),
    ],
)
def test_stalled_projects_alert_sponsor_and_unit(world, kind: str, prefix: str, after: int) -> None:
    engine, clock, sched = world
    feed(
        engine,
        "project.lead",
        lead_event("TS03", "S1", reported_on="2022-01-05", planned_investment="50000000"),
    )
    approve(engine, "TS03-S1", "TS03", "2022-01-20")
    since = D(2022, 2, 1)
    milestone(
        engine,
        "TS03-S1",
        "TS03",
        "signed",
        "2022-02-01" if kind == "signed" else "2022-01-25",
        "50000000",
    )
    if kind != "signed":
        milestone(engine, "TS03-S1", "TS03", kind, since.isoformat())
    for v in range(0, 200, 5):  # weekly visits keep the sponsorship alerts out of the way
        feed(
            engine,
            "project.visit",
            envelope(
                "visit",
                "TS03",
                {
                    "project_id": "TS03-S1",
                    "leader": "L03",
                    "on": (since + dt.timedelta(days=v - 10)).isoformat(),
                },
            ),
        )
    at(clock, sched, since + dt.timedelta(days=after))
    assert causes(engine, prefix) == []
    at(clock, sched, since + dt.timedelta(days=after + 1))
    assert causes(engine, prefix) == [
        (f"{prefix}:TS03-S1:{since}:1", "L03"),
        (f"{prefix}:TS03-S1:{since}:1", "TS03"),
    ]
    at(clock, sched, since + dt.timedelta(days=after + 7))
    assert len(causes(engine, prefix)) == 2
    at(clock, sched, since + dt.timedelta(days=after + 8))  # a week later: one more each
    assert len(causes(engine, prefix)) == 4
    # the situation changes: no more
    ended = {"signed": "started", "waiting_for_land": "land_assigned", "lacking_funds": "started"}[
        kind
    ]
    milestone(engine, "TS03-S1", "TS03", ended, (since + dt.timedelta(days=after + 9)).isoformat())
    at(clock, sched, since + dt.timedelta(days=after + 30))
    assert len(causes(engine, prefix)) == 4


def test_a_quarter_two_thirds_gone_and_behind_target_tells_the_center(world) -> None:
    engine, clock, sched = world
    # Q2 target 15 (scoring-2022.1 signing_targets): 2/3 of it is 10; sign 9 of >= 100 million, 1 smaller
    for i in range(11):
        feed(engine, "project.lead", lead_event("TS01", f"Q{i}", reported_on="2022-04-01"))
        amount = "100000000" if i < 9 else ("99999999" if i == 9 else None)
        if amount:
            milestone(engine, f"TS01-Q{i}", "TS01", "signed", "2022-04-20", amount)
    # Q2 has 91 days: two thirds (60.7 days) are gone on 2022-06-01, 61 days after April 1
    at(clock, sched, D(2022, 5, 31))
    assert causes(engine, "signing_behind") == []
    at(clock, sched, D(2022, 6, 1))
    assert causes(engine, "signing_behind") == [("signing_behind:2022Q2", "CENTER")]
    note = rows(engine, N.cause == "signing_behind:2022Q2")[0]
    assert "签约过亿元项目仅 **9 个**" in note.body and "目标 15 个" in note.body
    at(clock, sched, D(2022, 6, 8))  # a week later: once per quarter
    assert len(causes(engine, "signing_behind")) == 1
    at(clock, sched, D(2022, 8, 31))
    assert len(causes(engine, "signing_behind")) == 1
    at(clock, sched, D(2022, 9, 1))  # Q3 (92 days) two thirds gone, nothing signed in Q3
    assert causes(engine, "signing_behind")[-1] == ("signing_behind:2022Q3", "CENTER")
    assert len(causes(engine, "signing_behind")) == 2


def test_on_target_nothing_is_sent(world) -> None:
    engine, clock, sched = world
    for i in range(4):  # Q1 target 6: two thirds is 4
        feed(engine, "project.lead", lead_event("TS01", f"T{i}", reported_on="2022-01-03"))
        milestone(engine, f"TS01-T{i}", "TS01", "signed", "2022-01-10", "150000000")
    at(clock, sched, D(2022, 3, 10))
    assert causes(engine, "signing_behind") == []


def test_a_withdrawn_project_gets_no_more_reminders(world) -> None:
    """撤回: a withdrawn lead ends its sponsorship; the sponsor is not reminded to visit it."""
    engine, clock, sched = world
    feed(engine, "project.lead", lead_event("TS02", "W1", reported_on="2022-02-01"))
    approve(engine, "TS02-W1", "TS02", "2022-02-20")
    target = {"kind": "lead", "project_id": "TS02-W1"}
    withdrawal = envelope(
        "withdrawal", "TS02", {"target": target, "reason": "录入错误"}, project_id="TS02-W1"
    )
    feed(engine, "project.withdrawal", withdrawal | {"version": 2, "owner": "TS02", "before": {}})
    at(clock, sched, D(2022, 3, 20))  # four weeks without a visit
    assert causes(engine, "visit_") == []
    told = {r.recipient for r in rows(engine, N.cause.startswith("withdrawn:"))}  # type: ignore[attr-defined]
    assert told == {"L03", "TS02"}  # the sponsor leader and the unit
