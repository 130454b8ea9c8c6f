"""ledger.settle, the pure decision of what happens to one funds record: no NATS, no database."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from services.scoring.ledger import (
    NO_LEAD,
    NOT_YET_RECOGNISED,
    ActiveCredit,
    Credit,
    FundsState,
    Hold,
    ProjectState,
    Reverse,
    settle,
)
from shared.rules import default_registry
from tests.helpers import lead

RULES = default_registry()
LEAD = lead("TS01", investor={"name": "Acme", "origin": "foreign", "country": "DE"})


def record(
    currency: str = "USD", credit: ActiveCredit | None = None, held: str | None = None
) -> FundsState:
    funds: dict[str, Any] = {
        "funds_id": "F1",
        "amount": "1000.00",
        "currency": currency,
        "arrived_on": "2022-04-27",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "B"},
    }
    return FundsState("TS01-X", "F1", funds, currency, dt.date(2022, 4, 27), held, credit)


def project(
    recognized: bool | None = True, lead_: Any = LEAD, sponsor: str | None = None
) -> ProjectState:
    blockers = [] if recognized in (True, None) else ["landing_proofs"]
    return ProjectState("TS01-X", lead_, recognized, blockers, [], sponsor)


def test_everything_known_credits_with_decide_score() -> None:
    (step,) = settle(record(), project(), Decimal("6.5"), RULES)
    assert isinstance(step, Credit)
    assert (step.scored.points, step.scored.multiplier) == (Decimal("19500.00"), Decimal(3))


def test_every_reason_that_still_stands_is_named_once() -> None:
    (step,) = settle(record(), project(recognized=None), None, RULES)
    assert isinstance(step, Hold)
    assert step.reason.startswith(NOT_YET_RECOGNISED + "; no CNY rate for USD on 2022-04-27")
    assert settle(record(held=step.reason), project(recognized=None), None, RULES) == []
    (again,) = settle(record(held=step.reason), project(recognized=False), None, RULES)
    assert isinstance(again, Hold) and "blocked by landing_proofs" in again.reason


def test_no_lead_yet_is_a_reason_too() -> None:
    (step,) = settle(record("CNY"), project(lead_=None), None, RULES)
    assert step == Hold(NO_LEAD)


def test_a_standing_credit_is_only_reversed_when_recognition_goes() -> None:
    credit = ActiveCredit(Decimal("19500.00"), ["TS01", "DEVZONE"])
    assert settle(record(credit=credit), project(), Decimal("6.5"), RULES) == []
    (step,) = settle(record(credit=credit), project(recognized=False), Decimal("6.5"), RULES)
    assert isinstance(step, Reverse) and "withdrawn" in step.reason


def test_a_new_sponsor_reverses_and_credits_again_only_if_something_differs() -> None:
    credit = ActiveCredit(Decimal("19500.00"), ["TS01", "DEVZONE"])
    steps = settle(
        record(credit=credit), project(sponsor="L02"), Decimal("6.5"), RULES, rescore=True
    )
    assert [type(s) for s in steps] == [Reverse, Credit]
    assert steps[1].scored.credited_to == ["TS01", "DEVZONE", "L02"]  # type: ignore[union-attr]
    same = ActiveCredit(Decimal("19500.00"), ["TS01", "DEVZONE", "L02"])
    assert (
        settle(record(credit=same), project(sponsor="L02"), Decimal("6.5"), RULES, rescore=True)
        == []
    )


def test_a_day_without_a_ruleset_holds_instead_of_failing() -> None:
    r = record("CNY")
    r = FundsState(
        r.project_id,
        r.funds_id,
        {**r.funds, "arrived_on": "2031-01-01"},
        "CNY",
        dt.date(2031, 1, 1),
        None,
        None,
    )
    (step,) = settle(r, project(), None, RULES)
    assert isinstance(step, Hold) and "no scoring ruleset in force on 2031-01-01" in step.reason


def test_a_stored_lead_is_checked_once_and_each_score_gets_its_own_facts() -> None:
    text = json.dumps(LEAD)
    stored = ProjectState("TS01-X", json.loads(text), True, [], [], None, lead_json=text)
    (first,) = settle(record(), stored, Decimal("6.5"), RULES)
    assert isinstance(first, Credit) and first.scored.evaluation is not None
    # A caller changing the facts it was given changes nothing for the next record.
    facts = first.scored.evaluation.facts
    facts["investor"]["origin"] = "inside_county"  # type: ignore[index]
    (second,) = settle(record(), stored, Decimal("6.5"), RULES)
    assert isinstance(second, Credit)
    assert second.scored == first.scored
    (plain,) = settle(record(), project(lead_=json.loads(text)), Decimal("6.5"), RULES)
    assert isinstance(plain, Credit) and plain.scored == first.scored
