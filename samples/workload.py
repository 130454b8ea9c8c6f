"""A controlled workload for benchmarks and fault tests: every outcome known in advance.

Each lead is recognised on arrival (its landing proofs come with it) and each funds record
is in CNY, so every funds record must end as exactly one `score.credited`. Messages come
in the order a unit sends them: a lead, then its funds records.
"""

from __future__ import annotations

import json

from shared.contract import make_credit_code

PROOFS = (
    "investment_proof",
    "signed_contract",
    "filing_approval",
    "business_license",
    "funds_voucher",
    "progress_images",
    "land_use_certificate",
)

Message = tuple[str, str, bytes]  # subject, Nats-Msg-Id, body


def recognised_projects(
    leads: int, funds_per_lead: int, tag: str = "B", amount: str = "1000000.00"
) -> list[tuple[Message, list[Message]]]:
    """[(lead message, its funds messages)] for `leads` projects; `tag` (one letter of the
    credit-code alphabet) keeps ids apart between runs that share a database."""
    out = []
    for i in range(leads):
        unit = f"TS0{1 + i % 8}"
        lead_id = f"{tag}{i:06d}"
        lead = {
            "lead_id": lead_id,
            "title": f"受控项目{tag}{i}",
            "attracting_unit": unit,
            "landing_area": "DEVZONE",
            "kind": "industrial",
            "industry": "new_materials",
            "planned_investment": "50000000",
            "land": "new_land",
            "investor": {
                "name": f"受控投资方{tag}{i}",
                "origin": "outside_province",
                "credit_code": make_credit_code(f"9132{tag}0100MA{i:06d}"),
            },
            "environment": {"emissions_ok": True, "safety_ok": True, "energy_ok": True},
            "reported_on": "2022-02-01",
            "documents": [{"type": t, "ref": f"{t}-{i}"} for t in PROOFS],
        }
        lead_msg = (
            f"intake.{unit}.lead",
            f"{tag}-lead-{i}",
            json.dumps(lead, ensure_ascii=False).encode(),
        )
        funds = []
        for k in range(funds_per_lead):
            record = {
                "project_id": f"{unit}-{lead_id}",
                "funds_id": f"F{k}",
                "amount": amount,
                "currency": "CNY",
                "arrived_on": f"2022-{3 + k % 9:02d}-15",
                "form": "cash",
                "voucher": {"kind": "bank_receipt", "ref": f"BR-{i}-{k}"},
            }
            funds.append(
                (f"intake.{unit}.funds", f"{unit}-{lead_id}/{k}", json.dumps(record).encode())
            )
        out.append((lead_msg, funds))
    return out
