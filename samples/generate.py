"""A seeded sample year of inbound messages (SPEC §8) as JSON Lines.

    python -m samples.generate [--leads 300] [--year 2022] [--seed 2022] [--out PATH]

Each line is one message a unit's system publishes:
    {"subject": "intake.<UNIT>.<kind>", "msg_id": "<idempotency key>", "data": {...}}
plus a "case" key on the deliberate edge cases (samples/README.md lists them).

The year is produced day by day. A project's plan is drawn when its lead is reported and
its later events wait in per-day buckets as small tuples, rendered to payloads only on
their day; so memory follows the events still to come, never the file, and the output
is in business-date order by construction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):
    # Run as `python samples/generate.py`: make the repo root importable like `-m` does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samples import vocabulary as vocab
from shared import subjects
from shared.contract import make_credit_code

Line = dict[str, Any]


def _kind_of(line: Line) -> str:
    return str(line["subject"]).rsplit(".", 1)[1]


Progress = Callable[[int, int, int], None]

CENTER = "CENTER"
PARKS = ("DEVZONE", "CHEMPARK", "BIOPARK")
TOWNSHIPS = tuple(f"TS0{i}" for i in range(1, 9))
DEPARTMENTS = ("DRC", "COMMERCE", "MIIT", "NRB")
LANDING_AREAS = PARKS + TOWNSHIPS
LEADERS = tuple(f"L0{i}" for i in range(1, 7))
# The industry deputy and the development-zone member carry most sponsorships.
SPONSOR_WEIGHTS = (1, 3, 6, 3, 5, 2)
REPORTING_WEIGHTS: dict[str, int] = {
    "DEVZONE": 14,
    "CHEMPARK": 7,
    "BIOPARK": 7,
    **dict.fromkeys(TOWNSHIPS, 6),
    "DRC": 5,
    "COMMERCE": 9,
    "MIIT": 6,
    "NRB": 2,
}
KIND_WEIGHTS: dict[str, dict[str, int]] = {
    "park": {
        "industrial": 60,
        "expansion": 20,
        "headquarters": 6,
        "modern_services": 6,
        "other": 3,
        "financial_institution": 1,
        "real_estate": 1,
        "urban_complex": 1,
    },
    "township": {
        "industrial": 36,
        "modern_services": 14,
        "headquarters": 6,
        "expansion": 6,
        "real_estate": 6,
        "urban_complex": 8,
        "financial_institution": 4,
        "other": 8,
    },
    "department": {
        "industrial": 40,
        "modern_services": 14,
        "headquarters": 12,
        "expansion": 8,
        "real_estate": 3,
        "urban_complex": 5,
        "financial_institution": 10,
        "other": 5,
    },
}
ORIGIN_WEIGHTS: dict[str, int] = {
    "foreign": 10,
    "outside_province": 34,
    "outside_city": 24,
    "inside_city": 16,
    "inside_county": 16,
}
# The major-project track (联审联批), SPEC §6 `major_project`.
MAJOR_KINDS = frozenset({"industrial", "headquarters", "modern_services", "expansion"})
MAJOR_MIN_INVESTMENT = 100_000_000
URBAN_COMPLEX_MIN_FLOOR_AREA = 100_000
AGENDA_LEAD_DAYS = 3
COMMITTEE_MATERIALS = (
    "basic_info_form",
    "feasibility_report",
    "aerial_view",
    "investment_contract",
)
DOC_EXTENSIONS = {"aerial_view": ".jpg", "progress_images": ".zip"}
CURRENCIES = ("USD", "EUR", "HKD")

# Within one day: rates before any funds they convert, a meeting before its decisions, a
# lead before its follow-ups; re-sent and bad messages come last.
RATES, MEETING, LEAD, DOCUMENT, MILESTONE, FUNDS, VISIT, DECISION, LATE = range(9)

# Features every sample must show at least once, whatever its size: each is forced onto
# one lead, spread evenly over the year's leads.
CHECKLIST: tuple[dict[str, Any], ...] = (
    {"kind": "financial_institution"},
    {"origin": "foreign", "fortune_global_500": True, "kind": "industrial", "major": True},
    {"kind": "headquarters", "major": True},
    {"china_top_500": True},
    {"kind": "real_estate"},
    {"little_giant": True},
    {"kind": "urban_complex", "area_above": True},
    {"kind": "industrial", "industry": "steel_smelting"},
    {"single_champion": True},
    {"kind": "modern_services", "major": True},
    {"provincial_dispatch_list": True},
    {"kind": "industrial", "environment_failed": True},
    {"kind": "urban_complex", "area_above": False},
    {"city_leader_campaign": True},
    {"kind": "expansion", "major": True},
    {"origin": "inside_county"},
    {"kind": "industrial", "industry": "coal_mining"},
    {"city_observation_stop": True},
    {"kind": "other"},
    {"origin": "inside_city"},
    {"origin": "foreign", "kind": "industrial"},
    {"kind": "financial_institution", "origin": "outside_province"},
    {"kind": "real_estate"},
    {"environment_failed": True},
)
# Bad messages: (month, day, what) — one each, spread over the year.
BAD_CASES: tuple[tuple[int, int, str], ...] = (
    (3, 9, "credit_code"),
    (4, 21, "negative_amount"),
    (5, 19, "unknown_kind"),
    (6, 16, "unit_mismatch"),
    (7, 14, "attracting_unit_mismatch"),
    (8, 18, "impossible_date"),
    (9, 15, "unknown_project"),
    (10, 20, "not_json"),
)
# Re-sent messages: the first message of the kind on or after the date is sent again two
# days later, same msg_id and data.
RESENDS: tuple[tuple[str, int, int], ...] = (("lead", 2, 14), ("milestone", 6, 1), ("funds", 9, 1))
# Where the two duplicate claims come from: the first eligible lead past these shares of
# the year's leads.
DUPLICATE_AT = (0.15, 0.45)
# Windows for the days whose rates the Center publishes a week late (month, day, days).
LATE_RATE_WINDOWS = ((4, 11, 40), (7, 11, 40), (10, 10, 40))
LATE_RATE_DELAY = 7
FORCED_FOREIGN_FUNDS_PER_LATE_DAY = 2


@dataclass(slots=True)
class _Project:
    seq: int
    pid: str
    unit: str
    lead_id: str
    landing: str = ""
    sponsor: str = ""
    lead: Line | None = None
    sub: int = 0
    standard_industrial: bool = False  # below the major-project line: no committee needed
    proofs_by: int | None = None  # the day its full set of landing proofs is filed, if ever
    origin: str = ""


@dataclass(slots=True)
class _Meeting:
    number: int
    meeting_id: str
    on: int
    announced: int
    agenda: list[str] = field(default_factory=list)
    overflow: _Meeting | None = None  # the next session of the same day, once this one is full


# Projects per meeting message: a Center message is at most 64 KB (INVESTFLOW_MAX_PAYLOAD),
# ≈ 2,900 project ids. A month of a province-size year has more: the day gets more sessions
# (PS2022-06, PS2022-06-2, ...), where one meeting was refused as too large (the soak).
AGENDA_MAX = 1_000


@dataclass(slots=True)
class _Facts:
    """What the plan of a project needs from its lead."""

    kind: str
    land: str
    landing: str
    planned: int
    terminated: bool
    currency: str
    has_code: bool


def _unit_kind(unit: str) -> str:
    if unit in PARKS:
        return "park"
    return "township" if unit in TOWNSHIPS else "department"


def _money(x: float, step: int) -> int:
    return max(step, round(x / step) * step)


def _org_code(body8: str) -> str:
    """The 9-character organisation code inside a credit code, with its GB 11714 check."""
    total = sum(int(ch) * w for ch, w in zip(body8, (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    check = 11 - total % 11
    return body8 + ("X" if check == 10 else "0" if check == 11 else str(check))


def _brand(serial: int, chars: str, salt: int) -> str:
    """Three distinct characters, a bijection of `serial` within the space of such brands."""
    n = len(chars)
    space = n * (n - 1) * (n - 2)
    # 7919 is prime and no factor of the space for these alphabets, so this permutes it.
    x = (serial * 7919 + salt) % space
    pool = list(chars)
    out = []
    for size in (n, n - 1, n - 2):
        x, i = divmod(x, size)
        out.append(pool.pop(i))
    return "".join(out)


class _Year:
    def __init__(self, leads: int, year: int, seed: int) -> None:
        self.year = year
        self.leads = leads
        first = dt.date(year, 1, 1)
        self.ndays = (dt.date(year + 1, 1, 1) - first).days
        self.iso = [(first + dt.timedelta(days=d)).isoformat() for d in range(self.ndays)]
        self.weekday = [(first + dt.timedelta(days=d)).weekday() for d in range(self.ndays)]
        self.rng = random.Random(f"investflow-samples/{seed}/projects")
        rates_rng = random.Random(f"investflow-samples/{seed}/rates")
        self.buckets: list[list[tuple[Any, ...]]] = [[] for _ in range(self.ndays)]
        self.center = _Project(seq=-1, pid=CENTER, unit=CENTER, lead_id="")

        self.rates = self._draw_rates(rates_rng)
        self.late_rate_days = self._draw_late_rate_days(rates_rng)
        self.forced: dict[int, int] = dict.fromkeys(self.late_rate_days, 0)
        for d in range(self.ndays):
            if d in self.forced:
                late = min(d + LATE_RATE_DELAY, self.ndays - 1)
                self._schedule(late, RATES, "rates", self.center, (d, "late_rates"))
            else:
                self._schedule(d, RATES, "rates", self.center, (d, None))

        self.meetings = self._plan_meetings()
        for m in self.meetings:
            self._schedule(m.announced, MEETING, "meeting", self.center, m)

        for month, day, what in BAD_CASES:
            self._schedule(self._day(month, day), LATE, "bad", self.center, what)

        self.lead_days = self._draw_lead_days(leads)
        self.checklist: dict[int, dict[str, Any]] = {}
        for j, force in enumerate(CHECKLIST):
            i = (2 * j + 1) * leads // (2 * len(CHECKLIST))
            self.checklist[i] = {**self.checklist.get(i, {}), **force}
        self.duplicate_from = [int(share * leads) for share in DUPLICATE_AT]
        self.resends = [[kind, self._day(month, day)] for kind, month, day in RESENDS]
        self.amended: list[str] = []  # the correction, then the withdrawal (_maybe_amend)
        self.claim_resolved = False
        self.lead_numbers: dict[str, int] = {}
        self.domestic_serial = 0
        self.foreign_serial = 0
        self.code_serial = 0
        self.salt = self.rng.randrange(10**8)
        self.last_signed: _Project | None = None
        self.last_project: _Project | None = None

    # -- calendar -------------------------------------------------------------------------

    def _day(self, month: int, day: int) -> int:
        return (dt.date(self.year, month, day) - dt.date(self.year, 1, 1)).days

    def _schedule(self, day: int, order: int, kind: str, proj: _Project, arg: Any) -> None:
        if day >= self.ndays:
            return  # beyond the sample year: next year's business
        proj.sub += 1
        self.buckets[day].append((order, proj.seq, proj.sub, kind, proj, arg))

    def _draw_lead_days(self, leads: int) -> list[int]:
        # Fewer leads around the Spring Festival and the year's end; few on weekends.
        month_weight = (5, 5, 9, 10, 10, 10, 9, 9, 9, 9, 8, 6)
        weights = []
        for d in range(self.ndays):
            month = dt.date.fromisoformat(self.iso[d]).month
            weights.append(month_weight[month - 1] * (1.0 if self.weekday[d] < 5 else 0.15))
        return sorted(self.rng.choices(range(self.ndays), weights=weights, k=leads))

    def _draw_rates(self, rng: random.Random) -> list[tuple[float, float, float]]:
        # Shaped on 2022's central parity: a flat spring, a jump in May, a peak in autumn.
        usd_path = (
            (0, 6.37),
            (0.29, 6.37),
            (0.37, 6.70),
            (0.58, 6.75),
            (0.75, 7.10),
            (0.83, 7.20),
            (1.0, 6.97),
        )
        eurusd_path = (
            (0, 1.13),
            (0.2, 1.10),
            (0.37, 1.05),
            (0.55, 1.02),
            (0.72, 0.98),
            (0.87, 1.00),
            (1.0, 1.06),
        )

        def along(path: tuple[tuple[float, float], ...], t: float) -> float:
            for (t0, v0), (t1, v1) in itertools.pairwise(path):
                if t <= t1:
                    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
            return path[-1][1]

        out = []
        n_usd = n_eur = n_peg = 0.0
        for d in range(self.ndays):
            t = d / (self.ndays - 1)
            n_usd = 0.92 * n_usd + rng.gauss(0, 0.012)
            n_eur = 0.92 * n_eur + rng.gauss(0, 0.004)
            n_peg = 0.9 * n_peg + rng.gauss(0, 0.006)
            usd = along(usd_path, t) + n_usd
            eur = usd * (along(eurusd_path, t) + n_eur)
            hkd = usd / min(7.85, max(7.75, 7.80 + n_peg))  # the HKD's band against the USD
            out.append((round(usd, 4), round(eur, 4), round(hkd, 5)))
        return out

    def _draw_late_rate_days(self, rng: random.Random) -> tuple[int, ...]:
        days = []
        for month, day, span in LATE_RATE_WINDOWS:
            start = self._day(month, day)
            weekdays = [d for d in range(start, start + span) if self.weekday[d] < 5]
            days.append(rng.choice(weekdays))
        return tuple(days)

    def _plan_meetings(self) -> list[_Meeting]:
        # A landing review meeting (落地评审会) around the 20th of each month, on a weekday,
        # announced ten days ahead so units can file materials before the agenda closes.
        meetings = []
        for month in range(1, 13):
            on = self._day(month, 20)
            on += {5: -1, 6: 1}.get(self.weekday[on], 0)
            meetings.append(_Meeting(month, f"PS{self.year}-{month:02d}", on, on - 10))
        return meetings

    # -- leads ----------------------------------------------------------------------------

    def _lead_id(self, unit: str) -> str:
        n = self.lead_numbers.get(unit, 0) + 1
        self.lead_numbers[unit] = n
        return f"ZS{self.year}-{n:04d}"

    def _credit_code(self, division: str) -> str:
        self.code_serial += 1
        body = f"{(self.code_serial * 7919 + self.salt) % 10**8:08d}"
        return make_credit_code(f"91{division}{_org_code(body)}")

    def _investor(self, origin: str, industry: str, force: dict[str, Any]) -> tuple[Line, str, str]:
        """The investor, the currency its funds arrive in, and its brand for titles."""
        rng = self.rng
        word = vocab.INDUSTRY_WORDS.get(industry, "实业")
        code: str | None = None
        country: str | None = None
        currency = "CNY"
        if origin == "foreign":
            self.foreign_serial += 1
            brand = _brand(self.foreign_serial, vocab.FOREIGN_BRAND_CHARS, self.salt)
            country, country_zh, home = rng.choice(vocab.COUNTRIES)
            # Most pay in their home currency; some fund through a CNY account in China.
            currency = home if rng.random() < 0.8 else "CNY"
            if rng.random() < 0.25:
                code = self._credit_code(vocab.FOREIGN_INVESTED_DIVISION)
                name = f"{brand}（中国）{word}有限公司"
            else:
                name = f"{country_zh}{brand}{word}{rng.choice(vocab.FOREIGN_SUFFIXES)}"
        else:
            self.domestic_serial += 1
            brand = _brand(self.domestic_serial, vocab.DOMESTIC_BRAND_CHARS, self.salt)
            place, division = rng.choice(vocab.PLACES[origin])
            prefix = place if origin in ("outside_province", "outside_city") else ""
            name = f"{prefix}{brand}{word}{rng.choice(vocab.DOMESTIC_SUFFIXES)}"
            code = self._credit_code(division)
        foreign = origin == "foreign"
        investor: Line = {"name": name}
        if code is not None:
            investor["credit_code"] = code
        investor["origin"] = origin
        if country is not None:
            investor["country"] = country
        investor["fortune_global_500"] = force.get(
            "fortune_global_500", rng.random() < (0.15 if foreign else 0.015)
        )
        investor["china_top_500"] = force.get("china_top_500", not foreign and rng.random() < 0.04)
        if investor["china_top_500"]:
            # Its rank on the list (scoring's `china_top_n` decides how high counts), drawn
            # from the name so that the random stream, and so the rest of the year, is unchanged.
            digest = hashlib.sha256(name.encode("utf-8")).digest()
            investor["china_rank"] = 1 + int.from_bytes(digest[:4], "big") % 500
        investor["little_giant"] = force.get("little_giant", not foreign and rng.random() < 0.05)
        investor["single_champion"] = force.get(
            "single_champion", not foreign and rng.random() < 0.03
        )
        return investor, currency, brand

    def _title(self, kind: str, industry: str, brand: str) -> str:
        rng = self.rng
        if kind == "headquarters":
            return brand + rng.choice(vocab.HEADQUARTERS_TITLES)
        if kind == "real_estate":
            return brand + rng.choice(vocab.REAL_ESTATE_TITLES)
        if kind == "urban_complex":
            return brand + rng.choice(vocab.URBAN_COMPLEX_TITLES)
        if kind == "financial_institution":
            return brand + rng.choice(vocab.FINANCIAL_TITLES)
        template, low, high = rng.choice(vocab.TITLES[industry])
        core = template.format(n=rng.randint(low, high))
        if kind == "expansion":
            return brand + core.replace("项目", "改扩建项目", 1)
        return brand + core if rng.random() < 0.5 else core

    def _industry(self, kind: str, unit: str, force: dict[str, Any]) -> str:
        rng = self.rng
        if "industry" in force:
            return str(force["industry"])
        if kind in ("industrial", "expansion"):
            if kind == "industrial" and rng.random() < 0.025:
                return rng.choice(vocab.OUT_OF_CATALOGUE)
            if unit == "CHEMPARK" and rng.random() < 0.85:
                return rng.choice(("high_end_chemicals", "high_end_chemicals", "new_materials"))
            if unit == "BIOPARK" and rng.random() < 0.85:
                return rng.choice(("biomedicine", "biomedicine", "healthcare"))
            return rng.choices(list(vocab.MANUFACTURING), list(vocab.MANUFACTURING.values()))[0]
        if kind == "financial_institution":
            return "modern_finance"
        if kind == "real_estate":
            return "real_estate"
        if kind == "urban_complex":
            return "modern_services"
        if kind == "other":
            return rng.choice(("boutique_tourism", "cultural_creative", "modern_agriculture"))
        if kind == "headquarters":
            return rng.choice(("modern_services", "modern_finance", "new_generation_it"))
        return rng.choices(list(vocab.SERVICES), list(vocab.SERVICES.values()))[0]

    def _landing(self, unit: str, kind: str, industry: str) -> str:
        rng = self.rng
        if kind in ("real_estate", "urban_complex", "financial_institution"):
            # Housing, malls and branches go where people live: the county seat's streets first.
            return unit if unit in TOWNSHIPS else rng.choice(("TS01", "TS01", "TS02", "TS03"))
        if unit in PARKS and rng.random() < 0.85:
            return unit
        if unit in TOWNSHIPS and rng.random() < 0.7:
            return unit
        if industry == "high_end_chemicals":
            return "CHEMPARK"
        if industry in ("biomedicine", "healthcare") and rng.random() < 0.7:
            return "BIOPARK"
        if industry in vocab.MANUFACTURING and rng.random() < 0.6:
            return "DEVZONE"
        return rng.choice(TOWNSHIPS)

    def _planned(self, kind: str, force: dict[str, Any]) -> int:
        rng = self.rng

        def log_uniform(low: float, high: float) -> float:
            return math.exp(rng.uniform(math.log(low), math.log(high)))

        if kind in MAJOR_KINDS:
            major = force.get("major", rng.random() < 0.45)
            x = log_uniform(1e8, 5e9) if major else log_uniform(3e6, 9.9e7)
        else:
            low, high = {
                "real_estate": (2e8, 3e9),
                "urban_complex": (3e8, 2e9),
                "financial_institution": (5e7, 1e9),
            }.get(kind, (5e6, 3e8))
            x = log_uniform(low, high)
        return _money(x, 10_000)  # reported in 万元

    def _lead(
        self, unit: str, lead_id: str, day: int, force: dict[str, Any]
    ) -> tuple[Line, _Facts]:
        rng = self.rng
        weights = KIND_WEIGHTS[_unit_kind(unit)]
        kind = force.get("kind") or rng.choices(list(weights), list(weights.values()))[0]
        industry = self._industry(kind, unit, force)
        origin = (
            force.get("origin")
            or rng.choices(list(ORIGIN_WEIGHTS), list(ORIGIN_WEIGHTS.values()))[0]
        )
        investor, currency, brand = self._investor(origin, industry, force)
        landing = self._landing(unit, kind, industry)
        planned = self._planned(kind, force)
        if kind in ("industrial", "real_estate", "urban_complex"):
            land = "new_land" if kind != "industrial" or rng.random() < 0.6 else "existing_land"
        elif kind == "expansion":
            land = "existing_land" if rng.random() < 0.75 else "new_land"
        elif kind == "financial_institution":
            land = "none"
        else:
            land = rng.choice(("existing_land", "existing_land", "none", "new_land"))
        flags = {
            name: force.get(name, rng.random() < 0.06)
            for name in (
                "provincial_dispatch_list",
                "city_leader_campaign",
                "city_observation_stop",
            )
        }
        failed = force.get("environment_failed", rng.random() < 0.03)
        environment: Line
        if kind in ("industrial", "expansion"):
            environment = {
                "energy_tce": f"{math.exp(rng.uniform(math.log(200), math.log(60000))):.1f}",
                "water_m3": str(round(math.exp(rng.uniform(math.log(5e3), math.log(2e6))))),
                "emissions_ok": True,
                "safety_ok": True,
                "energy_ok": True,
            }
        elif failed or rng.random() < 0.6:
            environment = {"emissions_ok": True, "safety_ok": True, "energy_ok": True}
        else:
            environment = {}  # not yet assessed: never fails a rule
        if failed:
            environment[rng.choice(("emissions_ok", "safety_ok", "energy_ok"))] = False
        data: Line = {
            "unit": unit,
            "lead_id": lead_id,
            "title": self._title(kind, industry, brand),
            "attracting_unit": unit,
            "landing_area": landing,
            "kind": kind,
            "industry": industry,
            "planned_investment": str(planned),
            "land": land,
            "investor": investor,
            "flags": flags,
        }
        if kind == "urban_complex":
            above = force.get("area_above", rng.random() < 0.5)
            area = rng.randint(105, 260) if above else rng.randint(40, 95)
            data["commercial_floor_area_m2"] = str(area * 1000)
        data["environment"] = environment
        data["reported_on"] = self.iso[day]
        data["documents"] = []
        terminated = (industry not in vocab.CATALOGUE and kind != "real_estate") or failed
        facts = _Facts(
            kind=kind,
            land=land,
            landing=landing,
            planned=planned,
            terminated=bool(terminated),
            currency=currency,
            has_code="credit_code" in investor,
        )
        return data, facts

    def _new_project(self, i: int, day: int) -> None:
        rng = self.rng
        force = self.checklist.get(i, {})
        unit = rng.choices(list(REPORTING_WEIGHTS), list(REPORTING_WEIGHTS.values()))[0]
        lead_id = self._lead_id(unit)
        p = _Project(seq=i, pid=f"{unit}-{lead_id}", unit=unit, lead_id=lead_id)
        p.lead, facts = self._lead(unit, lead_id, day, force)
        p.landing = facts.landing
        p.standard_industrial = (
            facts.kind in ("industrial", "expansion") and facts.planned < MAJOR_MIN_INVESTMENT
        )
        p.origin = str(p.lead["investor"]["origin"])
        self._schedule(day, LEAD, "lead", p, None)
        if (
            self.duplicate_from
            and i >= self.duplicate_from[0]
            and facts.has_code
            and not facts.terminated
            and day + 40 < self.ndays
        ):
            self.duplicate_from.pop(0)
            self._duplicate_claim(p, day)
        # Screening terminates these (告知终止洽谈): the unit reports nothing more. Real estate
        # is terminated too but its developer builds anyway, so its progress still comes in
        # and scoring must ignore it.
        if not facts.terminated:
            self._plan(p, day, facts)

    def _duplicate_claim(self, source: _Project, day: int) -> None:
        """Another unit reports the same investor at the same landing area, later."""
        assert source.lead is not None
        others = [u for u in TOWNSHIPS + DEPARTMENTS if u not in (source.unit, source.landing)]
        unit = self.rng.choice(others)
        lead_id = self._lead_id(unit)
        when = day + self.rng.randint(10, 30)
        data = {
            **source.lead,
            "unit": unit,
            "lead_id": lead_id,
            "attracting_unit": unit,
            "reported_on": self.iso[when],
        }
        line = self._line(unit, "lead", f"{unit}-{lead_id}/lead", data, "duplicate_claim")
        self._schedule(when, LATE, "line", self.center, line)
        if not self.claim_resolved:
            # The Center assigns the first held claim to the unit that reported it first.
            self.claim_resolved = True
            claim = {
                "unit": CENTER,
                "project_id": f"{unit}-{lead_id}",
                "resolution": "assign",
                "assign_to": source.pid,
                "reason": f"{source.unit} reported it first and brought the investor / 首报单位引进",
            }
            line = self._line(CENTER, "claim", f"CENTER/claim/{unit}-{lead_id}", claim, "claim")
            self._schedule(when + 20, LATE, "line", self.center, line)

    def _session_with_room(self, meeting: _Meeting) -> _Meeting:
        session, base = 1, meeting.meeting_id
        while len(meeting.agenda) >= AGENDA_MAX:
            session += 1
            if meeting.overflow is None:
                meeting.overflow = _Meeting(
                    meeting.number, f"{base}-{session}", meeting.on, meeting.announced
                )
                self._schedule(meeting.announced, MEETING, "meeting", self.center, meeting.overflow)
            meeting = meeting.overflow
        return meeting

    # -- a project's year -----------------------------------------------------------------

    def _plan(self, p: _Project, day: int, facts: _Facts) -> None:
        rng = self.rng
        major = facts.kind in MAJOR_KINDS and facts.planned >= MAJOR_MIN_INVESTMENT
        if major:
            meeting = next((m for m in self.meetings if m.announced >= day + 7), None)
            if meeting is None:
                return  # reported too late for this year's last meeting
            meeting = self._session_with_room(meeting)
            meeting.agenda.append(p.pid)
            complete = self._plan_materials(p, day, meeting)
            approved = rng.random() < (0.9 if complete else 0.35)
            self._schedule(meeting.on, DECISION, "decision", p, (meeting, approved))
            if not approved:
                return
            p.sponsor = rng.choices(LEADERS, SPONSOR_WEIGHTS)[0]
            self._schedule(meeting.on + rng.randint(2, 6), VISIT, "visit", p, None)
            if rng.random() > 0.95:
                return
            signed = meeting.on + rng.randint(3, 30)
        else:
            if rng.random() > 0.72:
                return  # still negotiating at the year's end
            signed = day + rng.randint(10, 100)
        if signed < self.ndays:
            self._plan_signed(p, facts, signed)

    def _plan_materials(self, p: _Project, day: int, meeting: _Meeting) -> bool:
        """Files the four committee materials; whether all were in by the agenda deadline."""
        rng = self.rng
        deadline = meeting.on - AGENDA_LEAD_DAYS
        lacking: set[str] = set()
        if rng.random() < 0.15:
            lacking = set(rng.sample(COMMITTEE_MATERIALS, rng.randint(1, 2)))
        for doc in COMMITTEE_MATERIALS:
            if doc not in lacking:
                self._schedule(rng.randint(day + 1, deadline), DOCUMENT, "document", p, doc)
            elif rng.random() < 0.5:
                # Filed after the agenda closed: too late for this meeting.
                self._schedule(
                    rng.randint(deadline + 1, meeting.on - 1), DOCUMENT, "document", p, doc
                )
        return not lacking

    def _plan_signed(self, p: _Project, facts: _Facts, signed: int) -> None:
        rng = self.rng
        amount = _money(facts.planned * rng.uniform(0.7, 1.0), 10_000)
        self._schedule(signed, MILESTONE, "milestone", p, ("signed", str(amount)))
        filed = signed + rng.randint(7, 45) if rng.random() < 0.9 else None
        registered = signed + rng.randint(5, 40) if rng.random() < 0.8 else None
        land_day: int | None = None
        if facts.land == "new_land":
            if rng.random() < 0.55:
                land_day = signed + rng.randint(20, 120)
            else:
                waiting = signed + rng.randint(15, 60)
                self._schedule(waiting, MILESTONE, "milestone", p, ("waiting_for_land", None))
                if rng.random() < 0.5:
                    land_day = waiting + rng.randint(30, 150)
        lacking = signed + rng.randint(30, 150) if rng.random() < 0.1 else None
        started: int | None = None
        if (facts.land != "new_land" or land_day is not None) and rng.random() < 0.75:
            started = (land_day if land_day is not None else signed) + rng.randint(10, 60)
        completed = started + rng.randint(90, 300) if started and rng.random() < 0.4 else None
        for kind, on in (
            ("filed", filed),
            ("registered", registered),
            ("land_assigned", land_day),
            ("lacking_funds", lacking),
            ("started", started),
            ("completed", completed),
        ):
            if on is not None:
                self._schedule(on, MILESTONE, "milestone", p, (kind, None))

        first_funds = self._plan_funds(p, facts, signed, amount, short=lacking is not None)

        if rng.random() < 0.65:  # these units file their landing proofs this year
            proofs: list[tuple[str, int | None]] = [
                ("signed_contract", signed + rng.randint(0, 5)),
                ("investment_proof", signed + rng.randint(10, 60)),
                ("filing_approval", filed + rng.randint(0, 7) if filed else None),
                ("business_license", registered + rng.randint(0, 7) if registered else None),
                ("funds_voucher", first_funds + rng.randint(0, 10) if first_funds else None),
            ]
            if started is not None:
                proofs.append(("progress_images", started + rng.randint(15, 60)))
            elif facts.land != "new_land":
                proofs.append(("progress_images", signed + rng.randint(30, 120)))
            if facts.land == "new_land" and land_day is not None:
                proofs.append(("land_use_certificate", land_day + rng.randint(10, 40)))
            if facts.land == "existing_land":
                proofs.append(("premises_agreement", signed + rng.randint(0, 30)))
            if facts.kind == "financial_institution":
                proofs.append(("financial_license", signed + rng.randint(10, 60)))
            complete = True
            if rng.random() < 0.25:
                complete = False
                for gone in rng.sample(proofs, min(len(proofs), rng.randint(1, 2))):
                    proofs.remove(gone)
            days = [on for _, on in proofs]
            new_land_certified = facts.land != "new_land" or land_day is not None
            if complete and new_land_certified and None not in days:
                p.proofs_by = max(d for d in days if d is not None)
            for doc, on in proofs:
                if on is not None:
                    self._schedule(on, DOCUMENT, "document", p, doc)

    def _plan_funds(
        self, p: _Project, facts: _Facts, signed: int, amount: int, short: bool
    ) -> int | None:
        """Schedules the funds in place (到位资金); returns the first arrival day."""
        rng = self.rng
        first = signed + rng.randint(5, 30)
        last = min(self.ndays - 1, signed + 330)
        if first > last:
            return None
        count = rng.choices(range(1, 10), (4, 6, 8, 10, 10, 8, 6, 4, 3))[0]
        if short:
            count = max(1, count // 2)
        days = sorted([first] + [rng.randint(first, last) for _ in range(count - 1)])
        if facts.currency != "CNY":
            # Land some foreign funds on days whose rates come late, so scoring must hold them.
            for late in self.late_rate_days:
                if first <= late <= last and self.forced[late] < FORCED_FOREIGN_FUNDS_PER_LATE_DAY:
                    self.forced[late] += 1
                    nearest = min(range(count), key=lambda k: abs(days[k] - late))
                    days[nearest] = late
                    days.sort()
                    break
        share = rng.uniform(0.15, 0.8) * amount
        weights = [rng.uniform(0.5, 1.5) for _ in range(count)]
        total = sum(weights)
        for k, on in enumerate(days, start=1):
            rmb = share * weights[k - 1] / total
            if facts.currency == "CNY":
                value = f"{rmb:.2f}" if rng.random() < 0.2 else str(_money(rmb, 100))
            else:
                rate = self.rates[on][CURRENCIES.index(facts.currency)]
                value = str(_money(rmb / rate, 100))
            form = rng.choices(("cash", "tangible", "intangible"), (70, 20, 10))[0]
            if form == "cash":
                voucher = "bank_receipt" if rng.random() < 0.85 else "capital_verification_report"
            else:
                voucher = "equipment_invoice" if form == "tangible" else "valuation_report"
            ref_no = rng.randrange(10**6)
            self._schedule(on, FUNDS, "funds", p, (k, value, facts.currency, form, voucher, ref_no))
        return days[0]

    # -- rendering ------------------------------------------------------------------------

    def _line(self, unit: str, kind: str, msg_id: str, data: Line, case: str | None = None) -> Line:
        line: Line = {"subject": subjects.inbound(unit, kind), "msg_id": msg_id}
        if case:
            line["case"] = case
        line["data"] = data
        return line

    def render(self, day: int, event: tuple[Any, ...]) -> Line | None:
        _order, _tie, _sub, kind, p, arg = event
        iso = self.iso[day]
        if kind == "line":
            return arg
        if kind == "lead":
            data, p.lead = p.lead, None
            self.last_project = p
            return self._line(p.unit, "lead", f"{p.pid}/lead", data)
        if kind == "document":
            unit = p.landing if arg == "land_use_certificate" else p.unit
            ref = f"{p.unit}/{self.year}/{p.lead_id}/{arg}{DOC_EXTENSIONS.get(arg, '.pdf')}"
            data = {
                "unit": unit,
                "project_id": p.pid,
                "type": arg,
                "ref": ref,
                "sha256": hashlib.sha256(ref.encode()).hexdigest(),
                "issued_on": iso,
            }
            return self._line(unit, "document", f"{p.pid}/document/{arg}", data)
        if kind == "milestone":
            milestone, amount = arg
            # The township or park handles land: it reports the land milestones.
            unit = p.landing if milestone in ("land_assigned", "waiting_for_land") else p.unit
            data = {"unit": unit, "project_id": p.pid, "milestone": milestone, "on": iso}
            if amount is not None:
                data["amount"] = amount
                self.last_signed = p
            return self._line(unit, "milestone", f"{p.pid}/milestone/{milestone}", data)
        if kind == "funds":
            return self._funds(day, p, arg)
        if kind == "visit":
            gap = self.rng.randint(4, 7)
            if self.rng.random() < 0.08:
                gap = self.rng.randint(15, 35)  # a busy spell: weeks without a visit
            self._schedule(day + gap, VISIT, "visit", p, None)
            data = {"unit": p.unit, "project_id": p.pid, "leader": p.sponsor, "on": iso}
            return self._line(p.unit, "visit", f"{p.pid}/visit/{iso}", data)
        if kind == "decision":
            return self._decision(p, arg)
        if kind == "meeting":
            if not arg.agenda:
                return None
            data = {
                "unit": CENTER,
                "meeting_id": arg.meeting_id,
                "on": self.iso[arg.on],
                "agenda": arg.agenda,
            }
            return self._line(CENTER, "meeting", f"CENTER/meeting/{arg.meeting_id}", data)
        if kind == "rates":
            on, case = arg
            usd, eur, hkd = self.rates[on]
            rates = {"USD": f"{usd:.4f}", "EUR": f"{eur:.4f}", "HKD": f"{hkd:.5f}"}
            data = {"unit": CENTER, "on": self.iso[on], "rates": rates}
            return self._line(CENTER, "rates", f"CENTER/rates/{self.iso[on]}", data, case)
        if kind == "bad":
            return self._bad(day, arg)
        raise AssertionError(kind)

    def _funds(self, day: int, p: _Project, arg: tuple[Any, ...]) -> Line:
        k, value, currency, form, voucher, ref_no = arg
        compact = self.iso[day].replace("-", "")
        ref = {
            "bank_receipt": f"BR-{compact}-{ref_no:06d}",
            "capital_verification_report": f"验字〔{self.year}〕第{ref_no % 1000 + 1}号",
            "equipment_invoice": f"FP-{compact[:4]}{ref_no:08d}",
            "valuation_report": f"评报字〔{self.year}〕第{ref_no % 1000 + 1}号",
        }[voucher]
        funds_id = f"F{k:03d}"
        data = {
            "unit": p.unit,
            "project_id": p.pid,
            "funds_id": funds_id,
            "amount": value,
            "currency": currency,
            "arrived_on": self.iso[day],
            "form": form,
            "voucher": {"kind": voucher, "ref": ref},
        }
        case = "rate_missing" if currency != "CNY" and day in self.forced else None
        return self._line(p.unit, "funds", f"{p.pid}/funds/{funds_id}", data, case)

    def _decision(self, p: _Project, arg: tuple[_Meeting, bool]) -> Line:
        meeting, approved = arg
        data: Line = {
            "unit": CENTER,
            "project_id": p.pid,
            "meeting_id": meeting.meeting_id,
            "decision": "approved" if approved else "rejected",
            "minutes_ref": f"县招商引资落地评审会纪要〔{self.year}〕{meeting.number}号",
        }
        if approved:
            rng = self.rng
            members = [p.unit]
            if p.landing != p.unit:
                members.append(p.landing)
            for unit in rng.sample(("DRC", "NRB", "MIIT", "COMMERCE"), rng.randint(2, 3)):
                if unit not in members:
                    members.append(unit)
            data["responsible_leader"] = rng.choice(LEADERS)
            data["sponsor_leader"] = p.sponsor
            data["hq"] = {"commander": p.sponsor, "members": members}
        msg_id = f"{p.pid}/decision/{meeting.meeting_id}"
        return self._line(CENTER, "decision", msg_id, data)

    def _bad(self, day: int, what: str) -> Line:
        case = f"bad:{what}"
        iso = self.iso[day]
        target = self.last_signed or self.last_project
        pid = target.pid if target else f"TS01-ZS{self.year}-0001"
        unit = target.unit if target else "TS01"
        if what in ("credit_code", "unit_mismatch", "attracting_unit_mismatch"):
            sender = {"credit_code": "TS05", "unit_mismatch": "TS03"}.get(what, "TS06")
            lead_id = self._lead_id(sender)
            data, _ = self._lead(sender, lead_id, day, {"origin": "outside_province"})
            if what == "credit_code":
                code = data["investor"]["credit_code"]
                wrong = "0" if code[-1] != "0" else "1"
                data["investor"] = {**data["investor"], "credit_code": code[:-1] + wrong}
            elif what == "unit_mismatch":
                data["unit"] = "TS05"
            else:
                data["attracting_unit"] = "TS07"
            return self._line(sender, "lead", f"{sender}-{lead_id}/lead", data, case)
        if what == "negative_amount":
            data = {
                "unit": unit,
                "project_id": pid,
                "funds_id": "F900",
                "amount": "-500000",
                "currency": "CNY",
                "arrived_on": iso,
                "form": "cash",
                "voucher": {"kind": "bank_receipt", "ref": f"BR-{iso.replace('-', '')}-900000"},
            }
            return self._line(unit, "funds", f"{pid}/funds/F900", data, case)
        if what == "unknown_kind":
            data = {"unit": "TS02", "note": "听说有客商下周来考察 (a rumour, not an event)"}
            return self._line("TS02", "gossip", f"TS02/gossip/{iso}", data, case)
        if what == "impossible_date":
            data = {
                "unit": unit,
                "project_id": pid,
                "milestone": "started",
                "on": f"{self.year}-02-30",
            }
            return self._line(unit, "milestone", f"{pid}/milestone/started-bad-date", data, case)
        if what == "unknown_project":
            ghost = f"TS04-NOSUCH-{self.year}"
            data = {"unit": "TS04", "project_id": ghost, "milestone": "started", "on": iso}
            return self._line("TS04", "milestone", f"{ghost}/milestone/started", data, case)
        if what == "not_json":
            body = json.dumps(
                {"unit": unit, "project_id": pid, "milestone": "started", "on": iso},
                ensure_ascii=False,
            )
            line = self._line(unit, "milestone", f"{pid}/milestone/started-truncated", {}, case)
            del line["data"]
            line["raw"] = body[: len(body) // 2]  # cut off mid-message, as a broken upload
            return line
        raise AssertionError(what)

    def run(self, progress: Progress | None) -> Iterator[Line]:
        next_lead = 0
        emitted = 0
        for day in range(self.ndays):
            while next_lead < self.leads and self.lead_days[next_lead] == day:
                self._new_project(next_lead, day)
                next_lead += 1
            bucket = self.buckets[day]
            self.buckets[day] = []  # rendering schedules only later days; free this one
            bucket.sort()
            for event in bucket:
                line = self.render(day, event)
                if line is None:
                    continue
                self._maybe_resend(day, line)
                self._maybe_amend(day, line, event[4])
                emitted += 1
                yield line
            if progress is not None:
                progress(day + 1, self.ndays, emitted)

    def _maybe_amend(self, day: int, line: Line, p: _Project) -> None:
        """One funds record corrected (更正) a few days after it came, in the second half of
        the year, and one withdrawn (撤回) later on: plain CNY records of a standard-track
        industrial project (no committee; its environment assessed) whose landing proofs are
        all filed by then, so the record is credited when its correction comes."""
        if "case" in line or _kind_of(line) != "funds" or line["data"]["currency"] != "CNY":
            return
        recognisable = p.proofs_by is not None and day > p.proofs_by + 3
        if not (p.standard_industrial and recognisable and p.origin != "inside_county"):
            return
        data, unit = line["data"], line["subject"].split(".")[1]
        target = {"kind": "funds", "project_id": data["project_id"], "funds_id": data["funds_id"]}
        if not self.amended and day >= self.ndays // 2:
            self.amended.append("correction")
            amount = (Decimal(data["amount"]) * 9 / 10).quantize(Decimal("0.01"))
            fix = {
                "unit": unit,
                "correction_id": f"{data['funds_id']}-fix1",
                "target": target,
                "changes": {"amount": str(amount)},
                "reason": "到位金额录入有误，以银行进账单为准 / amount entered wrong; per the bank receipt",
            }
            msg_id = f"{data['project_id']}/correction/{data['funds_id']}-fix1"
            fixed = self._line(unit, "correction", msg_id, fix, "correction")
            self._schedule(day + 3, LATE, "line", self.center, fixed)
        elif self.amended == ["correction"] and day >= 3 * self.ndays // 4:
            self.amended.append("withdrawal")
            gone = {"unit": unit, "target": target, "reason": "重复录入 / entered twice"}
            msg_id = f"{data['project_id']}/withdrawal/{data['funds_id']}"
            withdrawn = self._line(unit, "withdrawal", msg_id, gone, "withdrawal")
            self._schedule(day + 5, LATE, "line", self.center, withdrawn)

    def _maybe_resend(self, day: int, line: Line) -> None:
        if "case" in line:
            return
        kind = line["subject"].rsplit(".", 1)[1]
        for trigger in self.resends:
            if trigger[0] == kind and day >= trigger[1]:
                self.resends.remove(trigger)
                copy = {"subject": line["subject"], "msg_id": line["msg_id"], "case": "resend"}
                copy["data"] = line["data"]
                self._schedule(day + 2, LATE, "line", self.center, copy)
                return


def generate(leads: int, year: int, seed: int, progress: Progress | None = None) -> Iterator[Line]:
    """The year's inbound messages, in the order the units would send them.

    `progress(days_done, days_in_year, messages_so_far)` is called after each day.
    """
    if leads < 0:
        raise ValueError("leads must be >= 0")
    return _Year(leads, year, seed).run(progress)


def dumps(line: Line) -> str:
    """One JSON Lines record: compact, UTF-8 kept readable, key order as generated."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def write(lines: Iterable[Line], out: IO[str]) -> int:
    count = 0
    for line in lines:
        out.write(dumps(line))
        out.write("\n")
        count += 1
    return count


def _stderr_progress(leads: int) -> Progress | None:
    if leads < 10_000:
        return None
    step = [10]

    def report(done: int, total: int, messages: int) -> None:
        pct = done * 100 // total
        if pct >= step[0]:
            print(f"samples: {pct}% of the year, {messages} messages", file=sys.stderr)
            step[0] = pct // 10 * 10 + 10

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=300, help="leads in the year (default 300)")
    parser.add_argument("--year", type=int, default=2022)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument(
        "--out",
        default=None,
        help="output file, '-' for stdout (default samples/year-<YEAR>.jsonl)",
    )
    args = parser.parse_args(argv)
    out = args.out or str(Path(__file__).resolve().parent / f"year-{args.year}.jsonl")
    started = time.perf_counter()
    lines = generate(args.leads, args.year, args.seed, _stderr_progress(args.leads))
    if out == "-":
        count = write(lines, sys.stdout)
    else:
        # Write beside the target and rename, so a failed run never leaves half a sample.
        tmp = f"{out}.tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as fp:
            count = write(lines, fp)
        os.replace(tmp, out)
    elapsed = time.perf_counter() - started
    print(f"samples: {count} messages to {out} in {elapsed:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
