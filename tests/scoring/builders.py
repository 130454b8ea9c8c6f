"""Scoring's inputs as the services emit them: canonical envelopes and recognition events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.contract import (
    DecisionTaken,
    Explanation,
    FundsArrived,
    LeadReported,
    MilestoneReached,
    RatesPublished,
    Recognition,
)
from tests.helpers import lead as lead_payload
from tests.helpers import uid

RECEIVED = dt.datetime(2022, 6, 30, 8, 0, tzinfo=dt.UTC)


def lead(unit: str = "TS01", **overrides: Any) -> LeadReported:
    data = lead_payload(unit, **overrides)
    data["unit"] = unit
    return LeadReported(
        event_id=f"lead:{unit}:{uid()}",
        project_id=f"{unit}-{data['lead_id']}",
        unit=unit,
        idempotency_key=uid(),
        received_at=RECEIVED,
        data=data,
    )


def funds(
    project_id: str,
    funds_id: str = "F1",
    amount: str = "1000000",
    currency: str = "CNY",
    arrived_on: str = "2022-05-10",
    event_id: str | None = None,
) -> FundsArrived:
    unit = project_id.split("-", 1)[0]
    return FundsArrived(
        event_id=event_id or f"funds:{unit}:{uid()}",
        project_id=project_id,
        unit=unit,
        idempotency_key=uid(),
        received_at=RECEIVED,
        data={
            "unit": unit,
            "project_id": project_id,
            "funds_id": funds_id,
            "amount": amount,
            "currency": currency,
            "arrived_on": arrived_on,
            "form": "cash",
            "voucher": {"kind": "bank_receipt", "ref": f"BR-{uid()}"},
        },
    )


def rates(on: str, **per_unit: str) -> RatesPublished:
    return RatesPublished(
        event_id=f"rates:CENTER:{uid()}",
        project_id=None,
        unit="CENTER",
        idempotency_key=uid(),
        received_at=RECEIVED,
        data={"unit": "CENTER", "on": on, "rates": per_unit},
    )


def decision(
    project_id: str, sponsor_leader: str = "L03", meeting_id: str = "PS2022-05"
) -> DecisionTaken:
    return DecisionTaken(
        event_id=f"decision:CENTER:{uid()}",
        project_id=project_id,
        unit="CENTER",
        idempotency_key=uid(),
        received_at=RECEIVED,
        data={
            "unit": "CENTER",
            "project_id": project_id,
            "meeting_id": meeting_id,
            "decision": "approved",
            "minutes_ref": "纪要〔2022〕5号",
            "sponsor_leader": sponsor_leader,
        },
    )


def signed(project_id: str, on: str = "2022-04-15", amount: str = "150000000") -> MilestoneReached:
    unit = project_id.split("-", 1)[0]
    return MilestoneReached(
        event_id=f"milestone:{unit}:{uid()}",
        project_id=project_id,
        unit=unit,
        idempotency_key=uid(),
        received_at=RECEIVED,
        data={
            "unit": unit,
            "project_id": project_id,
            "milestone": "signed",
            "on": on,
            "amount": amount,
        },
    )


def recognition(
    project_id: str, recognized: bool = True, missing_proofs: list[str] | None = None
) -> Recognition:
    missing = (
        missing_proofs
        if missing_proofs is not None
        else ([] if recognized else ["business_license"])
    )
    return Recognition(
        project_id=project_id,
        recognized=recognized,
        recognition_blockers=[] if recognized else ["landing_proofs"],
        missing_proofs=missing,
        explanation=Explanation(
            ruleset_id="review",
            version="2022.1",
            matched=[] if recognized else ["landing_proofs"],
            parameters={},
            deciding_rule=None if recognized else "landing_proofs",
        ),
    )
