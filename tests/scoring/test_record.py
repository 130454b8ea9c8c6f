"""Scoring's write path on SQLite and PostgreSQL: what each event stores, credits, holds and
reverses, whatever order the events arrive in. No NATS here (see test_scoring_flow.py)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from decimal import Decimal

import pytest

from services.scoring import store
from services.scoring.ledger import NO_LEAD, NOT_YET_RECOGNISED
from shared import subjects
from tests.scoring import builders as b
from tests.scoring.harness import Scoring

FOREIGN = {"name": "Acme GmbH", "origin": "foreign", "country": "DE"}


@pytest.fixture
def scoring(database_url: str) -> Iterator[Scoring]:
    s = Scoring(database_url)
    yield s
    s.close()


def recognised_project(scoring: Scoring, **lead_overrides) -> str:  # type: ignore[no-untyped-def]
    lead = b.lead("TS01", **lead_overrides)
    scoring.send(lead)
    scoring.send(b.recognition(lead.project_id or ""))
    return lead.project_id or ""


def test_usd_funds_with_their_rate_are_credited_once_with_the_explanation(scoring: Scoring) -> None:
    pid = recognised_project(scoring, investor=FOREIGN)
    scoring.send(b.rates("2022-05-10", USD="6.7114"))
    scoring.send(b.funds(pid, amount="1000000.50", currency="USD"))

    (entry,) = scoring.entries(pid)
    assert (entry.kind, entry.seq, entry.year, entry.quarter) == ("credit", 1, 2022, 2)
    # 1000000.50 × 6.7114 = 6711403.3557 → 6711403.36; × 3 = 20134210.0671 → 20134210.07
    assert store.from_fen(entry.amount_rmb_fen) == Decimal("6711403.36")
    assert store.from_fen(entry.points_fen) == Decimal("20134210.07")
    (credited,) = scoring.emitted("score.credited", pid)
    assert credited["multiplier"] == "3" and credited["points"] == "20134210.07"
    assert (
        credited["matched"] == ["foreign_funded"] and credited["deciding_rule"] == "foreign_funded"
    )
    assert credited["credited_to"] == ["TS01", "DEVZONE"]
    assert credited["explanation"]["ruleset_id"] == "scoring"
    assert credited["explanation"]["parameters"]["foreign_multiplier"] == 3
    lines = scoring.rows(store.CreditLine, store.CreditLine.project_id == pid)
    assert sorted(line.subject for line in lines) == ["DEVZONE", "TS01"]
    assert scoring.emitted("score.held", pid) == []


def test_missing_rate_holds_the_record_until_the_rate_arrives(scoring: Scoring) -> None:
    pid = recognised_project(scoring, investor=FOREIGN)
    scoring.send(b.rates("2022-04-26", USD="6.50"))  # the day before: never used instead
    scoring.send(b.funds(pid, currency="USD", arrived_on="2022-04-27"))

    record = scoring.record(pid)
    assert record.state == "held"
    (held,) = scoring.emitted("score.held", pid)
    assert "USD" in held["reason"] and "2022-04-27" in held["reason"]
    assert scoring.entries(pid) == []

    late = b.rates("2022-04-27", USD="6.4528", EUR="6.8126")
    scoring.send(late)
    scoring.send(late, key="rates-again")  # re-sent under another key: nothing more
    scoring.send(b.rates("2022-04-27", USD="6.4528"))
    (entry,) = scoring.entries(pid)
    assert store.from_fen(entry.amount_rmb_fen) == Decimal("6452800.00")
    assert entry.rate == "6.4528"
    assert len(scoring.emitted("score.credited", pid)) == 1
    assert scoring.record(pid).state == "credited"


def test_unrecognised_project_is_held_credited_on_recognition_and_reversed_on_withdrawal(
    scoring: Scoring,
) -> None:
    lead = b.lead("TS02")
    pid = lead.project_id or ""
    scoring.send(lead)
    scoring.send(b.funds(pid, amount="2000000"))
    assert scoring.record(pid).hold_reason == NOT_YET_RECOGNISED

    scoring.send(b.recognition(pid, recognized=False))
    (first, second) = scoring.emitted("score.held", pid)
    assert first["reason"] == NOT_YET_RECOGNISED
    assert "blocked by landing_proofs" in second["reason"]
    # another document filed: fewer proofs missing, the same blocker — nothing new to announce
    scoring.send(b.recognition(pid, recognized=False, missing_proofs=["progress_images"]))
    assert len(scoring.emitted("score.held", pid)) == 2

    scoring.send(b.recognition(pid, recognized=True))
    assert [e.kind for e in scoring.entries(pid)] == ["credit"]

    scoring.send(b.recognition(pid, recognized=False))
    entries = scoring.entries(pid)
    assert [(e.kind, e.points_fen) for e in entries] == [
        ("credit", 200000000),
        ("reversal", -200000000),
    ]
    (reversed_,) = scoring.emitted("score.reversed", pid)
    assert reversed_["points"] == "2000000.00" and "withdrawn" in reversed_["reason"]
    assert scoring.record(pid).state == "held"

    scoring.send(b.recognition(pid, recognized=True))  # recognised again: a fresh credit
    assert [e.kind for e in scoring.entries(pid)] == ["credit", "reversal", "credit"]
    assert len(scoring.emitted("score.credited", pid)) == 2


def test_the_same_funds_record_counts_once_under_any_number_of_deliveries(scoring: Scoring) -> None:
    pid = recognised_project(scoring)
    event = b.funds(pid, funds_id="F7", amount="500000")
    outcomes = [scoring.send(event).outcome for _ in range(5)]
    assert outcomes == ["applied"] + ["resent"] * 4
    for _ in range(3):  # the same record under new event ids (a unit re-reporting it)
        scoring.send(b.funds(pid, funds_id="F7", amount="500000"))
    assert len(scoring.entries(pid)) == 1
    assert len(scoring.rows(store.FundsRecord, store.FundsRecord.project_id == pid)) == 1
    assert len(scoring.emitted("score.credited", pid)) == 1


def test_a_redelivery_republishes_what_did_not_get_out(scoring: Scoring) -> None:
    pid = recognised_project(scoring)
    event = b.funds(pid)
    first = scoring.send(event)
    assert [r.subject for r in first.outbox] == [subjects.keyed("score.credited", pid)]
    again = scoring.send(event)  # nothing was marked published: the crash case
    assert again.outcome == "resent" and [r.msg_id for r in again.outbox] == [
        r.msg_id for r in first.outbox
    ]


def _final(scoring: Scoring, pid: str) -> tuple[list[tuple[str, int, str]], int]:
    entries = scoring.entries(pid)
    return [(e.kind, e.points_fen, e.credited_to) for e in entries], len(
        scoring.emitted("score.credited", pid)
    )


def test_the_outcome_does_not_depend_on_the_order_events_arrive_in(scoring: Scoring) -> None:
    orders = list(itertools.permutations(range(5)))
    random.Random(7).shuffle(orders)
    outcomes = set()
    for order in orders[:12]:
        lead = b.lead("TS03", investor=FOREIGN)
        pid = lead.project_id or ""
        events = [
            lead,
            b.recognition(pid),
            b.rates("2022-07-01", EUR="7.0"),
            b.funds(pid, amount="100000", currency="EUR", arrived_on="2022-07-01"),
            b.decision(pid, sponsor_leader="L04"),
        ]
        for i in order:
            scoring.send(events[i])
        outcomes.add(_final(scoring, pid)[0][-1][1:])
        kinds = [e.kind for e in scoring.entries(pid)]
        # credited once, or credited then re-credited to the sponsor named afterwards
        assert kinds in (["credit"], ["credit", "reversal", "credit"]), order
        assert scoring.record(pid).state == "credited"
    assert outcomes == {(210000000, '["TS03", "DEVZONE", "L04"]')}


def test_a_sponsor_named_after_the_credit_is_credited_too(scoring: Scoring) -> None:
    pid = recognised_project(scoring)
    scoring.send(b.funds(pid, amount="300000"))
    scoring.send(b.decision(pid, sponsor_leader="L02"))
    scoring.send(b.decision(pid, sponsor_leader="L02", meeting_id="PS2022-06"))  # same sponsor
    entries = scoring.entries(pid)
    assert [e.kind for e in entries] == ["credit", "reversal", "credit"]
    assert entries[-1].credited_to == '["TS01", "DEVZONE", "L02"]'
    lines = scoring.rows(store.CreditLine, store.CreditLine.project_id == pid)
    net: dict[str, int] = {}
    for line in lines:
        net[line.subject] = net.get(line.subject, 0) + line.points_fen
    assert net == {"TS01": 30000000, "DEVZONE": 30000000, "L02": 30000000}


def test_an_older_recognition_never_overrides_a_newer_one(scoring: Scoring) -> None:
    lead = b.lead("TS04")
    pid = lead.project_id or ""
    scoring.send(lead, seq=10)
    scoring.send(b.recognition(pid, recognized=True), seq=20)
    scoring.send(b.funds(pid), seq=21)
    scoring.send(b.recognition(pid, recognized=False), seq=15)  # overtaken by seq 20
    assert [e.kind for e in scoring.entries(pid)] == ["credit"]


def test_funds_before_their_lead_wait_for_it(scoring: Scoring) -> None:
    lead = b.lead("TS05")
    pid = lead.project_id or ""
    scoring.send(b.recognition(pid))
    scoring.send(b.funds(pid))
    assert scoring.record(pid).hold_reason == NO_LEAD
    scoring.send(lead)
    assert [e.kind for e in scoring.entries(pid)] == ["credit"]


def test_funds_of_a_year_without_a_ruleset_are_held_not_crashed(scoring: Scoring) -> None:
    pid = recognised_project(scoring)
    scoring.send(b.funds(pid, arrived_on="2023-01-05"))
    record = scoring.record(pid)
    assert record.state == "held" and "no scoring ruleset in force on 2023-01-05" in (
        record.hold_reason or ""
    )


def test_signed_milestones_are_kept_for_the_targets(scoring: Scoring) -> None:
    pid = recognised_project(scoring)
    assert scoring.send(b.signed(pid, on="2022-04-15", amount="150000000")).outcome == "applied"
    scoring.send(b.signed(pid, on="2022-05-01", amount="160000000"))  # a correction replaces it
    (row,) = scoring.rows(store.Signing, store.Signing.project_id == pid)
    assert (str(row.signed_on), row.amount_fen) == ("2022-05-01", 16000000000)


def _at_once(scoring: Scoring, events: list) -> None:  # type: ignore[type-arg]
    import threading

    from services.scoring.app import retrying

    start = threading.Barrier(len(events))

    def send(event) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        retrying(lambda: scoring.send(event, seq=0))

    threads = [threading.Thread(target=send, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_record_and_its_projects_recognition_applied_at_once_see_each_other(
    scoring: Scoring,
) -> None:
    """Two consumers (or replicas) applying a funds record and its project's recognition in
    the same instant: whichever commits second must settle with what the first did."""
    for _ in range(15):
        lead = b.lead("TS06")
        pid = lead.project_id or ""
        scoring.send(lead)
        _at_once(scoring, [b.funds(pid), b.recognition(pid, recognized=False)])
        assert "blocked by landing_proofs" in (scoring.record(pid).hold_reason or "")


def test_a_record_and_its_days_rates_applied_at_once_see_each_other(scoring: Scoring) -> None:
    for i in range(15):
        pid = recognised_project(scoring, investor=FOREIGN)
        day = f"2022-10-{i + 1:02d}"
        _at_once(scoring, [b.funds(pid, currency="USD", arrived_on=day), b.rates(day, USD="7.0")])
        assert scoring.record(pid).state == "credited", scoring.record(pid).hold_reason


def test_records_held_for_want_of_a_ruleset_are_credited_once_one_is_published(
    database_url: str,
) -> None:
    import datetime as dt

    from services.scoring.record import resettle_waiting_for_rules
    from shared.db import unit_of_work
    from shared.rules import RulesetRegistry, rulesets_dir

    rules = RulesetRegistry.from_paths([rulesets_dir()])
    scoring = Scoring(database_url, rules)
    try:
        pid = recognised_project(scoring)
        scoring.send(b.funds(pid, arrived_on="2023-02-01"))
        assert "no scoring ruleset in force on 2023-02-01" in (
            scoring.record(pid).hold_reason or ""
        )

        text = (rulesets_dir() / "scoring-2022.1.yaml").read_text(encoding="utf-8")
        text = text.replace('version: "2022.1"', 'version: "2023.1"').replace(
            "effective: {from: 2022-01-01, to: 2022-12-31}", "effective: {from: 2023-01-01}"
        )
        rules.add_version(text)
        for _ in range(2):  # heard from two replicas: the second changes nothing
            with unit_of_work(scoring.engine) as session:
                resettle_waiting_for_rules(session, f"test:{_}", rules, dt.datetime.now(dt.UTC))
        (entry,) = scoring.entries(pid)
        assert entry.ruleset_version == "scoring@2023.1" and entry.year == 2023
    finally:
        scoring.close()
        rules.close()
