"""The board's rates (履约率、落地率、资金到位率) are scoring's, from score.rates: the same as
GET /v1/scoreboard, and what the events sent make them; score.rates folded in order, copies
and older revisions changing nothing. Unit TS06 is this module's.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import Session

from services.board import ingest, queries
from services.board.access import OPEN, Viewer
from services.board.store import TABLES
from shared.db import create_tables, make_engine, unit_of_work
from tests.helpers import idle, read_subject

from .conftest import token
from .support import eventually, get, get_json, new_lead, report

CENTER = token("center")
TS06 = token("unit", "TS06")


def _scoreboard(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/v1/scoreboard?year=2022", timeout=20) as resp:
        return json.loads(resp.read())["rates"]


async def _funds(js: Any, pid: str, funds_id: str, amount: str, currency: str, on: str) -> None:
    await report(
        js,
        "TS06",
        "funds",
        {
            "project_id": pid,
            "funds_id": funds_id,
            "amount": amount,
            "currency": currency,
            "arrived_on": on,
            "form": "cash",
            "voucher": {"kind": "bank_receipt", "ref": f"BR-{funds_id}"},
        },
    )


async def test_board_rates_are_the_scoreboards(board_system) -> None:
    js, base = board_system.js, board_system.board_url
    scoring = board_system.http_urls["scoring"]
    a = await new_lead(js, "TS06", reported_on="2022-05-02")
    b = await new_lead(js, "TS06", reported_on="2022-05-03")
    c = await new_lead(js, "TS06", reported_on="2022-05-04")  # never signed: not counted
    for pid, on, amount in ((a, "2022-05-20", "200000000"), (b, "2022-05-25", "100000000")):
        milestone = {"project_id": pid, "milestone": "signed", "on": on, "amount": amount}
        await report(js, "TS06", "milestone", milestone)
    await report(
        js, "TS06", "milestone", {"project_id": a, "milestone": "started", "on": "2022-06-01"}
    )
    await report(
        js, "TS06", "milestone", {"project_id": b, "milestone": "registered", "on": "2022-06-05"}
    )
    await _funds(js, a, "F1", "50000000", "CNY", "2022-06-10")
    await _funds(js, b, "F2", "1000000", "USD", "2022-06-11")  # no rate that day: left out
    await idle(js)

    # What the events sent make TS06's (docs/scoring.md): a and b signed, a started (履约),
    # both started or registered (落地), 50M of 300M contracted in place by the year's end.
    expected_unit = {
        "signed": 2,
        "performed": 1,
        "landed": 2,
        "contracted_rmb": "300000000.00",
        "funds_rmb": "50000000.00",
        "funds_unconverted": 1,
        "performance_rate": "0.5000",
        "landing_rate": "1.0000",
        "funds_rate": "0.1667",
    }
    seen: dict[str, Any] = {}

    async def agreed() -> bool:
        status, ov = await get_json(base, "/api/overview", CENTER)
        board = _scoreboard(scoring)
        seen.update(board=ov.get("rates") if status == 200 else status, scoreboard=board)
        rates = ov.get("rates") if status == 200 else None
        return bool(
            rates
            and rates["by_unit"].get("TS06") == expected_unit
            and rates["county"] == board["county"]
            and rates["by_unit"] == board["by_unit"]
        )

    await eventually(agreed, timeout=30, describe=lambda: seen)
    rates = seen["board"]
    assert rates["ruleset"] == "scoring@2022.1"
    assert rates["definitions"]["performance"] == ["started"]
    assert rates["definitions"]["landing"] == ["registered", "started"]
    assert "履约率" in rates["definitions"]["description"]["zh"]

    # Per project: the board's project page has scoring's figures; c is not counted.
    board = seen["scoreboard"]
    for pid in (a, b):
        status, page = await get_json(base, f"/api/projects/{pid}", CENTER)
        assert status == 200
        assert page["rates"] == {"2022": board["by_project"][pid]}, pid
    assert board["by_project"][a]["performance_rate"] == "1.0000"
    assert board["by_project"][b]["funds_rate"] == "0.0000"
    status, page = await get_json(base, f"/api/projects/{c}", CENTER)
    assert page["rates"] == {} and c not in board["by_project"]

    # A unit sees the county's and its own, nobody else's.
    status, own = await get_json(base, "/api/overview", TS06)
    assert status == 200
    assert set(own["rates"]["by_unit"]) == {"TS06"}
    assert own["rates"]["county"] == rates["county"]

    # The HTML shows them (not "not published yet").
    status, html, _ = await asyncio.to_thread(get, base, "/", CENTER)
    text = html.decode()
    assert 'id="rates"' in text and 'id="rates-none"' not in text
    assert 'data-unit="TS06"' in text and "50.0%" in text

    # Each revision is a score.rates event in the contract, ruleset and version named.
    events = await read_subject(js, "SCORE", "score.rates")
    assert events and all(e["explanation"]["ruleset_id"] == "scoring" for e in events)
    latest = max(e["revision"] for e in events if e["year"] == 2022)
    assert latest == rates["revision"]


def _figures(signed: int, performed: int) -> dict[str, Any]:
    rate = f"{Decimal(performed) / Decimal(signed):.4f}" if signed else None
    return {
        "signed": signed,
        "performed": performed,
        "landed": performed,
        "contracted_rmb": f"{signed * 100_000_000}.00",
        "funds_rmb": "0.00",
        "funds_unconverted": 0,
        "performance_rate": rate,
        "landing_rate": rate,
        "funds_rate": "0.0000" if signed else None,
    }


def _rates_event(revision: int, part: int, parts: int, **kw: Any) -> dict[str, Any]:
    return {
        "year": 2022,
        "revision": revision,
        "part": part,
        "parts": parts,
        "county": kw.get("county", _figures(2, 1)),
        "by_unit": kw.get("by_unit", {"TS01": _figures(2, 1)}),
        "by_project": kw.get("by_project", {}),
        "dropped": kw.get("dropped", []),
        "projects": 2,
        "definitions": {
            "performance": ["started"],
            "landing": ["registered", "started"],
            "description": {"zh": "三率口径", "en": "the three rates"},
            "reference": None,
        },
        "explanation": {
            "ruleset_id": "scoring",
            "version": "2022.1",
            "matched": [],
            "parameters": {},
            "deciding_rule": None,
        },
    }


def test_rates_events_fold_in_order_and_copies_change_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, TABLES)
    seq = iter(range(1, 100))

    def send(*events: dict[str, Any]) -> None:
        items = [
            ingest.parse("SCORE", next(seq), "score.rates", json.dumps(e).encode()) for e in events
        ]
        with unit_of_work(engine) as session:
            ingest.ingest(session, items)

    def held() -> dict[str, Any]:
        with Session(engine) as session:
            return {
                "overview": queries.rates(session, OPEN, 2022),
                "TS01": queries.rates(session, Viewer("unit", "TS01"), 2022),
                "p1": queries.project_rates(session, "TS01-P1"),
                "p2": queries.project_rates(session, "TS01-P2"),
            }

    send(_rates_event(1, 1, 1, by_project={"TS01-P1": _figures(1, 1), "TS01-P2": _figures(1, 0)}))
    one = held()
    assert one["overview"]["revision"] == 1 and one["overview"]["ruleset"] == "scoring@2022.1"
    assert one["p1"] == {"2022": _figures(1, 1)}
    # Revision 2 in two parts, in one run, part 1 twice (published again after a restart):
    # P2 dropped, TS02 appears, TS01 and the county change.
    later = {"county": _figures(3, 2), "by_unit": {"TS01": _figures(1, 1), "TS02": _figures(2, 1)}}
    send(
        _rates_event(2, 1, 2, dropped=["TS01-P2"], **later),
        _rates_event(2, 1, 2, dropped=["TS01-P2"], **later),
        _rates_event(2, 2, 2, by_project={"TS02-P3": _figures(1, 1)}, **later),
    )
    # ... and revision 1 again: older, changes nothing.
    send(_rates_event(1, 1, 1, by_project={"TS01-P2": _figures(1, 0)}))
    two = held()
    assert two["overview"]["revision"] == 2
    assert two["overview"]["county"] == _figures(3, 2)
    assert two["overview"]["by_unit"] == later["by_unit"]
    assert two["TS01"]["by_unit"] == {"TS01": _figures(1, 1)}  # its own unit only
    assert two["p1"] == {"2022": _figures(1, 1)} and two["p2"] == {}
    with Session(engine) as session:
        assert queries.project_rates(session, "TS02-P3") == {"2022": _figures(1, 1)}
        # January of the next year, before any signing: the last year's rates still show.
        assert queries.rates(session, OPEN, 2023)["year"] == 2022


def test_a_rates_event_out_of_contract_is_refused_naming_the_field() -> None:
    bad = _rates_event(1, 1, 1)
    del bad["county"]["signed"]
    with pytest.raises(ingest.BadEvent, match=r"county\.signed"):
        ingest.parse("SCORE", 1, "score.rates", json.dumps(bad).encode())
