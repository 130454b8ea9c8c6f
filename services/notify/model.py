"""What notify knows of each project, as plain values, and what follows from it on a given day.

No database and no NATS here: `store.load_snapshot` fills these from notify's tables, the
replay tool from a sample file; triggers and the weekly report read only these.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

TERMINAL = ("terminated", "rejected", "completed", "withdrawn")


@dataclass(frozen=True)
class Alert:
    """Something someone must be told: a cause key (never delivered twice per recipient),
    the template that words it, who, and the facts it states."""

    cause: str
    kind: str
    recipients: tuple[str, ...]
    project_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class FundsRecord:
    funds_id: str
    amount: Decimal
    currency: str
    arrived_on: dt.date


@dataclass(frozen=True)
class Credit:
    project_id: str
    funds_id: str
    year: int
    quarter: int
    points: Decimal
    amount_rmb: Decimal
    credited_to: tuple[str, ...]


@dataclass(frozen=True)
class ProjectCard:
    """A project as its own row states it: all an event trigger may read. Deliberately without
    milestones, visits, funds or documents (those cost a query each for every consumed event);
    a trigger needing them fails loudly here instead of silently seeing none."""

    project_id: str
    title: str
    attracting_unit: str
    landing_area: str
    kind: str
    planned_investment: Decimal
    sponsor_leader: str | None = None


@dataclass
class ProjectView:
    project_id: str
    title: str
    attracting_unit: str
    landing_area: str
    kind: str
    planned_investment: Decimal
    reported_on: dt.date
    outcome: str | None = None
    track: str | None = None
    reasons: list[str] = field(default_factory=list)
    decision: str | None = None
    decided_on: dt.date | None = None
    sponsor_leader: str | None = None
    milestones: list[tuple[dt.date, str, Decimal | None]] = field(default_factory=list)
    # Site visits that count (包保): by the sponsor leader or the HQ commander only.
    visits: list[dt.date] = field(default_factory=list)
    # Visits by other leaders: recorded and shown, never resetting the weekly clock.
    other_visits: list[tuple[dt.date, str]] = field(default_factory=list)
    funds: list[FundsRecord] = field(default_factory=list)
    documents: set[str] = field(default_factory=set)
    materials_complete: bool | None = None
    materials_missing: list[str] = field(default_factory=list)
    materials_deadline: dt.date | None = None

    # --- as of a day (facts dated on or before it) ---

    def latest(self, milestone: str, day: dt.date) -> dt.date | None:
        dates = [on for on, m, _ in self.milestones if m == milestone and on <= day]
        return max(dates) if dates else None

    def signed(self, day: dt.date) -> tuple[dt.date, Decimal | None] | None:
        """The first signing (签约) on or before `day`, with its amount."""
        signed = sorted(
            (on, amount) for on, m, amount in self.milestones if m == "signed" and on <= day
        )
        return signed[0] if signed else None

    def approved_on(self, day: dt.date) -> dt.date | None:
        if self.decision == "approved" and self.decided_on is not None and self.decided_on <= day:
            return self.decided_on
        return None

    def last_visit(self, day: dt.date) -> dt.date | None:
        seen = [v for v in self.visits if v <= day]
        return max(seen) if seen else None

    def waiting_for_land_since(self, day: dt.date) -> dt.date | None:
        since = self.latest("waiting_for_land", day)
        if since is None:
            return None
        for ended in ("land_assigned", "started", "completed"):
            end = self.latest(ended, day)
            if end is not None and end >= since:
                return None
        return since

    def lacking_funds_since(self, day: dt.date) -> dt.date | None:
        since = self.latest("lacking_funds", day)
        if since is None:
            return None
        for ended in ("started", "completed"):
            end = self.latest(ended, day)
            if end is not None and end >= since:
                return None
        if any(since < f.arrived_on <= day for f in self.funds):
            return None
        return since

    def status(self, day: dt.date, fast_start_days: int = 90) -> str | None:
        """The project's category on `day` (None: not reported yet). The plan's follow-up
        categories: signed, not started, waiting for land, lacking funds, fast-moving, completed."""
        if self.reported_on > day:
            return None
        if self.outcome in ("terminated", "withdrawn"):  # withdrawn: its lead (撤回)
            return self.outcome
        if self.decision == "rejected" and self.decided_on is not None and self.decided_on <= day:
            return "rejected"
        if self.latest("completed", day):
            return "completed"
        started = self.latest("started", day)
        if started is not None:
            signed = self.signed(day)
            fast = signed is not None and (started - signed[0]).days <= fast_start_days
            return "fast" if fast else "started"
        if self.waiting_for_land_since(day):
            return "waiting_for_land"
        if self.lacking_funds_since(day):
            return "lacking_funds"
        if self.signed(day):
            return "signed_not_started"
        if self.approved_on(day):
            return "approved"
        if self.track == "major":
            return "in_review"
        return "reported"

    def sponsored(self, day: dt.date) -> bool:
        """Under a county leader's sponsorship (包保) on `day`: approved, not finished."""
        return self.approved_on(day) is not None and self.status(day) not in TERMINAL

    def missing_materials_now(self) -> list[str]:
        return [m for m in self.materials_missing if m not in self.documents]


STATUSES = (
    "reported",
    "in_review",
    "approved",
    "signed_not_started",
    "waiting_for_land",
    "lacking_funds",
    "started",
    "fast",
    "completed",
    "rejected",
    "terminated",
    "withdrawn",
)


@dataclass
class Snapshot:
    projects: dict[str, ProjectView] = field(default_factory=dict)
    rates: dict[tuple[dt.date, str], Decimal] = field(default_factory=dict)
    credits: list[Credit] = field(default_factory=list)

    def funds_rmb(self, record: FundsRecord) -> Decimal | None:
        """In yuan at the rate of its arrival day; None while that day's rate is unknown."""
        if record.currency == "CNY":
            return record.amount
        rate = self.rates.get((record.arrived_on, record.currency))
        return None if rate is None else record.amount * rate

    def funds_arrival(self) -> dict[tuple[str, str], dt.date]:
        return {
            (p.project_id, f.funds_id): f.arrived_on
            for p in self.projects.values()
            for f in p.funds
        }


def quarter_of(day: dt.date) -> tuple[int, dt.date, dt.date]:
    """(quarter, first day, last day)."""
    q = (day.month - 1) // 3 + 1
    start = dt.date(day.year, 3 * q - 2, 1)
    end = dt.date(day.year + 1, 1, 1) if q == 4 else dt.date(day.year, 3 * q + 1, 1)
    return q, start, end - dt.timedelta(days=1)


def period(days: int, after: int, every: int) -> int:
    """Which repeat of an alert `days` falls in: 0 while `days <= after`, then 1, 2, ... every `every` days."""
    return 0 if days <= after else (days - after - 1) // every + 1
