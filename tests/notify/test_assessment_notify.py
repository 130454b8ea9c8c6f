"""Notify's side of the assessment (issue 13, items 10 and 14), on SQLite and PostgreSQL:
only the sponsor's (or the HQ commander's) visit counts, and every Monday gets its report."""

from __future__ import annotations

from shared.contract import Decided
from tests.notify.support import envelope, feed, lead_event
from tests.notify.test_time_triggers import D, at, causes, world  # noqa: F401 - the fixture


def approve(engine, pid: str, unit: str, sponsor: str, commander: str) -> None:  # type: ignore[no-untyped-def]
    mid = f"M-{pid}"
    meeting = {"meeting_id": mid, "on": "2022-02-20", "agenda": [pid]}
    feed(engine, "project.meeting", envelope("meeting", "CENTER", meeting, project_id=None))
    decided = Decided(
        project_id=pid,
        meeting_id=mid,
        decision="approved",
        minutes_ref="纪要2号",
        sponsor_leader=sponsor,
        responsible_leader="L02",
        hq_commander=commander,
        hq_members=[unit, "DRC"],
    )
    feed(engine, "review.decided", decided.model_dump_json())


def visit(engine, pid: str, unit: str, leader: str, on: str) -> None:  # type: ignore[no-untyped-def]
    data = {"project_id": pid, "leader": leader, "on": on}
    feed(engine, "project.visit", envelope("visit", unit, data))


def test_another_leaders_visit_is_recorded_but_does_not_reset_the_week(world) -> None:  # noqa: F811
    engine, clock, sched = world
    feed(engine, "project.lead", lead_event("TS01", "W1", reported_on="2022-02-01"))
    approve(engine, "TS01-W1", "TS01", sponsor="L03", commander="L03")
    at(clock, sched, D(2022, 2, 20))
    visit(engine, "TS01-W1", "TS01", "L01", "2022-02-25")  # not the sponsor: not counted
    at(clock, sched, D(2022, 2, 28))  # 8 days since the approval
    assert causes(engine, "visit_overdue:TS01-W1") == [
        ("visit_overdue:TS01-W1:2022-02-20:1", "L03")
    ]
    visit(engine, "TS01-W1", "TS01", "L03", "2022-03-01")  # the sponsor's own visit counts
    at(clock, sched, D(2022, 3, 8))  # 7 days since it: still within the week
    assert len(causes(engine, "visit_overdue:TS01-W1")) == 1


def test_the_hq_commanders_visit_counts(world) -> None:  # noqa: F811
    engine, clock, sched = world
    feed(engine, "project.lead", lead_event("TS02", "W2", reported_on="2022-02-01"))
    approve(engine, "TS02-W2", "TS02", sponsor="L03", commander="L01")
    at(clock, sched, D(2022, 2, 20))
    visit(engine, "TS02-W2", "TS02", "L01", "2022-02-25")  # the commander
    at(clock, sched, D(2022, 3, 4))  # 7 days since the commander's visit
    assert causes(engine, "visit_overdue:TS02-W2") == []
    at(clock, sched, D(2022, 3, 5))
    assert causes(engine, "visit_overdue:TS02-W2") == [
        ("visit_overdue:TS02-W2:2022-02-25:1", "L03")
    ]


def test_every_monday_gets_its_report_once_when_the_clock_jumps(world) -> None:  # noqa: F811
    engine, clock, sched = world
    feed(engine, "project.lead", lead_event("TS01", "R1", reported_on="2022-02-01"))
    at(clock, sched, D(2022, 3, 1))
    first = {c for c, _ in causes(engine, "weekly_report:")}
    assert first == {"weekly_report:2022-02-28:county"}
    at(clock, sched, D(2022, 3, 30))  # a jump of four weeks in one tick
    mondays = {c.split(":")[1] for c, _ in causes(engine, "weekly_report:")}
    assert mondays == {"2022-02-28", "2022-03-07", "2022-03-14", "2022-03-21", "2022-03-28"}
    count = len(causes(engine, "weekly_report:"))
    at(clock, sched, D(2022, 3, 30))
    at(clock, sched, D(2022, 3, 31))
    assert len(causes(engine, "weekly_report:")) == count  # once each


def test_the_weekly_report_carries_the_three_rates(world) -> None:  # noqa: F811
    from sqlmodel import Session

    from services.notify import facts

    engine, _clock, sched = world
    for n in ("A", "B"):
        feed(engine, "project.lead", lead_event("TS03", n, reported_on="2022-02-01"))
        data = {
            "project_id": f"TS03-{n}",
            "milestone": "signed",
            "on": "2022-02-10",
            "amount": "100000000",
        }
        feed(engine, "project.milestone", envelope("milestone", "TS03", data))
    started = {"project_id": "TS03-A", "milestone": "started", "on": "2022-03-01"}
    feed(engine, "project.milestone", envelope("milestone", "TS03", started))
    funds = {
        "project_id": "TS03-A",
        "funds_id": "F1",
        "amount": "25000000",
        "currency": "CNY",
        "arrived_on": "2022-03-02",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "BR-1"},
    }
    feed(engine, "project.funds", envelope("funds", "TS03", funds))
    with Session(engine) as session:
        snapshot = facts.load_snapshot(session)
    report = sched.report(snapshot, D(2022, 3, 7), None)
    assert report["rates"] == {
        "signed": 2,
        "performance_rate": "50.0%",
        "landing_rate": "50.0%",
        "funds_rate": "12.5%",
    }
    body = sched.renderer.message("weekly_report", "zh", {"r": report}, "CENTER")[1]
    assert "履约率 50.0%" in body and "资金到位率 12.5%" in body
