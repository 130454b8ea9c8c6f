"""Hypothesis strategies for every inbound kind: valid payloads, and broken ones that say
which field they broke, so a test can check the rejection names it."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.helpers import credit_code

# (path, value class, required) per kind: what a mutation may break.
FIELDS: dict[str, list[tuple[str, str, bool]]] = {
    "lead": [
        ("lead_id", "id", True),
        ("title", "str", True),
        ("attracting_unit", "code", True),
        ("landing_area", "code", True),
        ("kind", "enum", True),
        ("industry", "slug", True),
        ("planned_investment", "money", True),
        ("land", "enum", True),
        ("reported_on", "date", True),
        ("investor.name", "str", True),
        ("investor.origin", "enum", True),
        ("investor.credit_code", "credit", False),
        ("investor.fortune_global_500", "bool", False),
        ("investor.little_giant", "bool", False),
        ("flags.city_leader_campaign", "bool", False),
        ("environment.emissions_ok", "bool", False),
        ("environment.energy_tce", "money", False),
        ("commercial_floor_area_m2", "money", False),
    ],
    "document": [
        ("project_id", "pid", True),
        ("type", "enum", True),
        ("ref", "str", True),
        ("sha256", "hex", False),
        ("issued_on", "date", False),
    ],
    "milestone": [
        ("project_id", "pid", True),
        ("milestone", "enum", True),
        ("on", "date", True),
        ("amount", "money", False),
    ],
    "funds": [
        ("project_id", "pid", True),
        ("funds_id", "id", True),
        ("amount", "money", True),
        ("currency", "currency", True),
        ("arrived_on", "date", True),
        ("form", "enum", True),
        ("voucher.kind", "enum", True),
        ("voucher.ref", "str", True),
    ],
    "visit": [("project_id", "pid", True), ("leader", "code", True), ("on", "date", True)],
    "decision": [
        ("project_id", "pid", True),
        ("meeting_id", "id", True),
        ("decision", "enum", True),
        ("minutes_ref", "str", True),
    ],
    "meeting": [("meeting_id", "id", True), ("on", "date", True), ("agenda", "list", True)],
    "rates": [("on", "date", True), ("rates", "dict", True)],
}

WRONG: dict[str, list[Any]] = {
    "str": [12, True, [], {}, ""],
    "id": [12, "", "has space", "x" * 80, "中文"],
    "code": [5, "ts01", "TS-01", "", True],
    "slug": [3, "Bad Slug", "", True],
    "pid": [7, "nodash", "ts01-x", ""],
    "enum": ["bogus", 3, "", ["lead"], True],
    "money": ["abc", True, "-5", -1, "1e999", [], "NaN"],
    "date": ["2022-13-01", "2022-02-30", "yesterday", 20220101, "1800-01-01", True],
    "bool": ["yes", 1, "true", [], {}],
    "credit": ["91350100M000100Y44", "123", "91350100M000100YO3", 5],
    "hex": ["xyz", "ABC" * 30, 5],
    "currency": ["usd", "US", "DOLLAR", 1],
    "list": ["x", [], [1], {"a": 1}],
    "dict": ["x", {}, {"usd": "6.3"}, {"USD": "-1"}, [1]],
}


@dataclass(frozen=True)
class Bad:
    unit: str
    kind: str
    body: bytes
    field: str  # the field the rejection must name
    how: str


def valid(kind: str, project_id: str, meeting_id: str) -> tuple[str, dict[str, Any]]:
    """(unit, payload) that intake accepts at the parsing stage."""
    from tests.helpers import lead

    if kind == "lead":
        data = lead("TS01")
        data["investor"]["credit_code"] = credit_code()
        data["environment"] = {"emissions_ok": True, "energy_tce": "12.5"}
        data["flags"] = {"city_leader_campaign": False}
        data["kind"], data["commercial_floor_area_m2"] = "urban_complex", "120000"
        return "TS01", data
    payloads = {
        "document": (
            "TS01",
            {
                "project_id": project_id,
                "type": "aerial_view",
                "ref": "A-1",
                "sha256": "a" * 64,
                "issued_on": "2022-03-02",
            },
        ),
        "milestone": (
            "TS01",
            {
                "project_id": project_id,
                "milestone": "signed",
                "on": "2022-03-03",
                "amount": "100000000",
            },
        ),
        "funds": (
            "TS01",
            {
                "project_id": project_id,
                "funds_id": "F1",
                "amount": "1000",
                "currency": "USD",
                "arrived_on": "2022-05-01",
                "form": "cash",
                "voucher": {"kind": "bank_receipt", "ref": "B1"},
            },
        ),
        "visit": ("TS01", {"project_id": project_id, "leader": "L01", "on": "2022-03-03"}),
        "decision": (
            "CENTER",
            {
                "project_id": project_id,
                "meeting_id": meeting_id,
                "decision": "rejected",
                "minutes_ref": "MIN-1",
            },
        ),
        "meeting": ("CENTER", {"meeting_id": "M-fuzz", "on": "2022-03-20", "agenda": [project_id]}),
        "rates": ("CENTER", {"on": "2022-01-04", "rates": {"USD": "6.37"}}),
    }
    unit, data = payloads[kind]
    return unit, copy.deepcopy(data)


def _set(data: dict[str, Any], path: str, value: Any, drop: bool = False) -> None:
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    if drop:
        node.pop(last, None)
    else:
        node[last] = value


@st.composite
def bad_message(draw: st.DrawFn, project_id: str, meeting_id: str) -> Bad:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    unit, data = valid(kind, project_id, meeting_id)
    how = draw(
        st.sampled_from(
            [
                "wrong_value",
                "wrong_value",
                "drop_required",
                "unknown_field",
                "not_json",
                "not_object",
                "nul",
                "deep",
            ]
        )
    )
    if how in ("nul", "deep"):
        path, _, _ = draw(st.sampled_from(FIELDS[kind]))
        if how == "nul":  # PostgreSQL refuses NUL in text; intake names the field up front
            at = draw(st.integers(0, 4))
            _set(data, path, "招商项目"[:at] + "\x00" + "招商项目"[at:])
            return Bad(unit, kind, json.dumps(data, ensure_ascii=False).encode(), path, how)
        levels = draw(st.integers(33, 5000))
        _set(data, path, "__DEEP__")
        body = json.dumps(data, ensure_ascii=False).encode()
        deep = b"[" * levels + b"]" * levels
        return Bad(unit, kind, body.replace(b'"__DEEP__"', deep), "$", how)
    if how == "not_json":
        body = draw(st.sampled_from([b"{", b"\xff\xfe", b"nul", b'{"a":}', b""])) + draw(
            st.binary(max_size=20)
        ).replace(b"{", b"")
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return Bad(unit, kind, body, "$", how)
        return Bad(unit, kind, b"{" + body, "$", how)
    if how == "not_object":
        return Bad(
            unit,
            kind,
            json.dumps(
                draw(
                    st.one_of(
                        st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)
                    )
                )
            ).encode(),
            "$",
            how,
        )
    if how == "unknown_field":
        name = draw(st.sampled_from(["planed_investment", "projectid", "note", "amount_rmb", "x"]))
        data[name] = draw(st.one_of(st.integers(), st.text(max_size=5)))
        return Bad(unit, kind, json.dumps(data, ensure_ascii=False).encode(), name, how)
    fields = FIELDS[kind]
    if how == "drop_required":
        path = draw(st.sampled_from([f for f, _, required in fields if required]))
        _set(data, path, None, drop=True)
        return Bad(unit, kind, json.dumps(data, ensure_ascii=False).encode(), path, how)
    path, cls, _ = draw(st.sampled_from(fields))
    _set(data, path, draw(st.sampled_from(WRONG[cls])))
    return Bad(unit, kind, json.dumps(data, ensure_ascii=False).encode(), path, f"{how}:{cls}")
