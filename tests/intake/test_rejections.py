"""Bad input: a rejection naming the field and the problem, nothing stored, the consumer goes on."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from services.intake.store import InboundEvent, Project
from tests.helpers import count_rows, http_post, idle, lead, publish, read_subject, uid

SYSTEM_BACKEND = "postgresql"  # `system` tests here: this backend (both under INVESTFLOW_SLOW)

pytestmark = pytest.mark.timeout(180)


def _funds(project_id: str, **over: Any) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "funds_id": f"F{uid()}",
        "amount": "1000",
        "currency": "CNY",
        "arrived_on": "2022-05-01",
        "form": "cash",
        "voucher": {"kind": "bank_receipt", "ref": "B1"},
    } | over


def bilingual(problem: str) -> bool:
    """English and Chinese: a Latin word, a CJK character, and none of pydantic's English."""
    return (
        bool(re.search(r"[A-Za-z]{2}", problem))
        and bool(re.search(r"[\u4e00-\u9fff]", problem))
        and "Input should" not in problem
    )


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def bad_inputs(project_id: str) -> list[tuple[str, str, bytes, str, str]]:
    """(case, subject, body, field named, words in the problem)."""
    good = lead("TS01")
    inv = good["investor"]
    enc = lambda d: json.dumps(d, ensure_ascii=False).encode()  # noqa: E731
    return [
        ("not json", "intake.TS01.lead", b"{not json", "$", "not valid JSON"),
        ("not utf-8", "intake.TS01.lead", b"\xff\xfe\x00", "$", "not valid JSON"),
        ("json array", "intake.TS01.lead", b"[1, 2]", "$", "JSON object"),
        ("unknown kind", "intake.TS01.gossip", enc(good), "$subject", "unknown kind"),
        (
            "unknown unit",
            "intake.TS99.lead",
            enc(good | {"attracting_unit": "TS99"}),
            "$subject",
            "unknown unit",
        ),
        (
            "rates not from the Center",
            "intake.TS01.rates",
            enc({"on": "2022-01-04", "rates": {"USD": "6.37"}}),
            "$subject",
            "Center",
        ),
        (
            "wrong type",
            "intake.TS01.lead",
            enc(good | {"planned_investment": "lots"}),
            "planned_investment",
            "decimal",
        ),
        (
            "boolean for money",
            "intake.TS01.lead",
            enc(good | {"planned_investment": True}),
            "planned_investment",
            "decimal",
        ),
        (
            "negative money",
            "intake.TS01.lead",
            enc(good | {"planned_investment": "-5"}),
            "planned_investment",
            "greater than 0",
        ),
        (
            "impossible date",
            "intake.TS01.lead",
            enc(good | {"reported_on": "2022-02-30"}),
            "reported_on",
            "date",
        ),
        (
            "implausible date",
            "intake.TS01.lead",
            enc(good | {"reported_on": "1822-02-03"}),
            "reported_on",
            "outside",
        ),
        (
            "unknown enum",
            "intake.TS01.lead",
            enc(good | {"kind": "casino"}),
            "kind",
            "must be one of",
        ),
        ("missing field", "intake.TS01.lead", enc(_without(good, "title")), "title", "required"),
        (
            "unknown field (typo)",
            "intake.TS01.lead",
            enc(good | {"planed_investment": 1}),
            "planed_investment",
            "unknown field",
        ),
        (
            "credit code check digit",
            "intake.TS01.lead",
            enc(
                good
                | {
                    "investor": inv
                    | {
                        "credit_code": inv["credit_code"][:17]
                        + ("0" if inv["credit_code"][17] != "0" else "1")
                    }
                }
            ),
            "investor.credit_code",
            "check digit",
        ),
        (
            "domestic investor without code",
            "intake.TS01.lead",
            enc(good | {"investor": _without(inv, "credit_code")}),
            "investor.credit_code",
            "required",
        ),
        (
            "attracting unit mismatch",
            "intake.TS01.lead",
            enc(good | {"attracting_unit": "TS02"}),
            "attracting_unit",
            "does not match",
        ),
        (
            "landing area not a landing area",
            "intake.TS01.lead",
            enc(good | {"landing_area": "DRC"}),
            "landing_area",
            "not a township",
        ),
        ("oversize payload", "intake.TS01.lead", enc(good | {"title": "大" * 30000}), "$", "limit"),
        (
            "unit field mismatch",
            "intake.TS01.document",
            enc({"unit": "TS02", "project_id": project_id, "type": "aerial_view", "ref": "A"}),
            "unit",
            "does not match",
        ),
        (
            "unknown project",
            "intake.TS01.document",
            enc({"project_id": "TS01-nope", "type": "aerial_view", "ref": "A"}),
            "project_id",
            "unknown project",
        ),
        (
            "someone else's project",
            "intake.TS08.document",
            enc({"project_id": project_id, "type": "aerial_view", "ref": "A"}),
            "project_id",
            "belongs to",
        ),
        (
            "negative funds",
            "intake.TS01.funds",
            enc(_funds(project_id, amount="-100")),
            "amount",
            "greater than 0",
        ),
        (
            "bad currency",
            "intake.TS01.funds",
            enc(_funds(project_id, currency="usd")),
            "currency",
            "ISO 4217",
        ),
        (
            "signed without amount",
            "intake.TS01.milestone",
            enc({"project_id": project_id, "milestone": "signed", "on": "2022-03-03"}),
            "amount",
            "required",
        ),
        (
            "visit by a non-leader",
            "intake.TS01.visit",
            enc({"project_id": project_id, "leader": "TS02", "on": "2022-03-03"}),
            "leader",
            "not a county leader",
        ),
        (
            "decision for an unknown meeting",
            "intake.CENTER.decision",
            enc(
                {
                    "project_id": project_id,
                    "meeting_id": "M-none",
                    "decision": "rejected",
                    "minutes_ref": "MIN-1",
                }
            ),
            "meeting_id",
            "unknown meeting",
        ),
    ]


async def test_bad_inputs_over_nats_are_rejected_by_field_and_nothing_is_stored(system) -> None:
    base = lead("TS01")
    project_id = f"TS01-{base['lead_id']}"
    await publish(system.js, "intake.TS01.lead", base)
    await idle(system.js)
    rows_before = count_rows(system.database_url, InboundEvent)
    projects_before = count_rows(system.database_url, Project)
    canonical_before = len(await read_subject(system.js, "PROJECT", "project.>"))

    # An unknown unit has no inbox, and an inbox takes no message over its size: the server
    # refuses both to the publisher (test_trust_boundary.py); over HTTP they get a 422.
    cases = [c for c in bad_inputs(project_id) if c[0] not in ("unknown unit", "oversize payload")]
    keys = {}
    for case, subject, body, _field, _words in cases:
        keys[case] = uid()
        await publish(system.js, subject, body, keys[case])
    # The consumer keeps going: a good lead after all that is stored as usual.
    after = lead("TS01")
    await publish(system.js, "intake.TS01.lead", after)
    await idle(system.js)

    rejections = {
        r["idempotency_key"]: r
        for r in await read_subject(system.js, "INTAKE", "intake.rejected.>")
    }
    assert len(cases) >= 13
    for case, _subject, _body, field, words in cases:
        rejection = rejections.get(keys[case])
        assert rejection is not None, f"{case}: no rejection"
        named = [e for e in rejection["errors"] if e["field"] == field]
        assert named, f"{case}: expected field {field!r}, got {rejection['errors']}"
        assert any(words.lower() in e["problem"].lower() for e in named), f"{case}: {named}"
        assert all(bilingual(e["problem"]) for e in rejection["errors"]), f"{case}: {named}"

    assert count_rows(system.database_url, InboundEvent) == rows_before + 1
    assert count_rows(system.database_url, Project) == projects_before + 1
    canonical = await read_subject(system.js, "PROJECT", "project.>")
    assert len(canonical) == canonical_before + 1
    assert canonical[-1]["project_id"] == f"TS01-{after['lead_id']}"


async def test_bad_inputs_over_http_get_422_with_the_same_errors(system) -> None:
    base = lead("TS01")
    project_id = f"TS01-{base['lead_id']}"
    await publish(system.js, "intake.TS01.lead", base)
    await idle(system.js)
    rows_before = count_rows(system.database_url, InboundEvent)

    for case, subject, body, field, words in bad_inputs(project_id):
        _, unit, kind = subject.split(".")
        status, resp = await http_post(f"{system.http_url}/v1/units/{unit}/{kind}", body, uid())
        assert status == 422, f"{case}: {status} {resp}"
        named = [e for e in resp["errors"] if e["field"] == field]
        assert named and any(words.lower() in e["problem"].lower() for e in named), (
            f"{case}: {resp}"
        )
        assert all(bilingual(e["problem"]) for e in resp["errors"]), f"{case}: {resp}"
    status, resp = await http_post(
        f"{system.http_url}/v1/units/TS01/lead", json.dumps(lead("TS01")).encode(), None
    )
    assert status == 422 and resp["errors"][0]["field"] == "Idempotency-Key"
    await idle(system.js)
    assert count_rows(system.database_url, InboundEvent) == rows_before
