"""What the board knows, as plain functions of the events it consumed (no NATS, no SQL).

`apply_*` fold one event into a project or funds row; `derive` recomputes what follows from
the row (stage, open stalls, the visit clock); `light` says a project's red/yellow/green
light (红黄绿灯) and why, from thresholds read out of the rulesets (`Thresholds.load`).

Streams are consumed independently, so a `review.*` or `score.*` event may reach the board
before the `project.*` event it follows: every apply creates what it needs and never
overwrites what another stream said.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .store import BoardFunds, BoardProject

# The plan's stages (项目阶段), in the order a project moves through them.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("reported", "已报送", "reported"),
    ("review", "联审联批", "under review"),
    ("approved", "已批准", "approved"),
    ("signed", "已签约", "signed"),
    ("started", "已开工", "started"),
    ("funds", "到资", "funds arriving"),
    ("completed", "竣工投产", "completed"),
    ("terminated", "已终止", "terminated"),
    ("withdrawn", "已撤回", "withdrawn"),  # 撤回: the lead was withdrawn (entered by mistake)
)
STAGE_KEYS = tuple(s[0] for s in STAGES)
STAGE_LABEL = {k: {"zh": zh, "en": en} for k, zh, en in STAGES}
INACTIVE = ("completed", "terminated", "withdrawn")

LIGHTS = ("red", "yellow", "green")
LIGHT_LABEL = {
    "red": {"zh": "红灯", "en": "red"},
    "yellow": {"zh": "黄灯", "en": "yellow"},
    "green": {"zh": "绿灯", "en": "green"},
}


def loads(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def money(raw: Any) -> Decimal:
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def to_fen(raw: Any) -> int:
    return int((money(raw) * 100).to_integral_value())


def from_fen(fen: int | None) -> Decimal:
    return (Decimal(fen or 0) / 100).quantize(Decimal("0.01"))


def parse_day(raw: Any) -> dt.date | None:
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(str(raw)[:10]) if raw else None
    except ValueError:
        return None


def business_day(subject: str, event: dict[str, Any]) -> dt.date | None:
    """The date a project.* event states (reported, reached, arrived, visited, met)."""
    if not subject.startswith("project."):
        return None
    data = event.get("data") or {}
    for key in ("reported_on", "on", "arrived_on"):
        day = parse_day(data.get(key))
        if day is not None:
            return day
    return None


def _later(a: dt.date | None, b: dt.date | None) -> dt.date | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _earlier(a: dt.date | None, b: dt.date | None) -> dt.date | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# --- folding events into rows ------------------------------------------------------------------


def apply_project_event(
    p: BoardProject, subject: str, event: dict[str, Any], meeting_day: dt.date | None
) -> None:
    """Fold a `project.<kind>` event into its project's row."""
    kind = subject.split(".", 1)[1]
    data = event.get("data") or {}
    p.events += 1
    if kind == "lead":
        fold_lead(p, data, str(event.get("unit") or ""))
    elif kind == "document":
        docs = set(loads(p.documents, []))
        docs.add(str(data.get("type")))
        p.documents = json.dumps(sorted(docs))
    elif kind == "milestone":
        fold_milestone(p, data)
    elif kind == "funds":
        on = parse_day(data.get("arrived_on"))
        p.first_funds_on = _earlier(p.first_funds_on, on)
        p.last_funds_on = _later(p.last_funds_on, on)
    elif kind == "visit":
        p.last_visit = _later(p.last_visit, parse_day(data.get("on")))
    elif kind == "decision":
        p.decision = str(data.get("decision"))
        p.meeting_id = data.get("meeting_id")
        p.decided_on = meeting_day
        if p.decision == "approved":
            p.sponsor_leader = data.get("sponsor_leader")
        p.responsible_leader = data.get("responsible_leader") or p.responsible_leader
        hq = data.get("hq") or {}
        if hq:
            p.hq_commander = hq.get("commander")
            p.hq_members = json.dumps(hq.get("members") or [])
    elif kind == "duplicate":
        p.duplicate_of = event.get("duplicate_of")
    derive(p)


def fold_lead(p: BoardProject, data: dict[str, Any], unit: str) -> None:
    """The lead's fields, as reported or as a correction leaves them (its `after`)."""
    investor = data.get("investor") or {}
    p.title = str(data.get("title", ""))
    p.attracting_unit = str(data.get("attracting_unit") or unit or p.attracting_unit)
    p.landing_area = str(data.get("landing_area", ""))
    p.kind = str(data.get("kind", ""))
    p.industry = str(data.get("industry", ""))
    p.land = str(data.get("land", ""))
    p.investor = str(investor.get("name", ""))
    p.planned_investment = str(data.get("planned_investment", "0"))
    p.reported_on = parse_day(data.get("reported_on"))
    docs = loads(p.documents, [])
    docs += [d.get("type") for d in data.get("documents") or [] if d.get("type")]
    p.documents = json.dumps(sorted(set(docs)))


MILESTONE_FIELDS = (
    "signed_on",
    "signed_amount",
    "signed_fen",
    "started_on",
    "completed_on",
    "land_assigned_on",
    "waiting_land_latest",
    "lacking_funds_latest",
)


def fold_milestone(p: BoardProject, data: dict[str, Any]) -> None:
    on = parse_day(data.get("on"))
    milestone = data.get("milestone")
    if milestone == "signed":
        if p.signed_on is None or (on is not None and on < p.signed_on):
            p.signed_on = on
            amount = data.get("amount")
            p.signed_amount = str(amount) if amount else None
            p.signed_fen = to_fen(amount) if amount else None
    elif milestone == "started":
        p.started_on = _earlier(p.started_on, on)
    elif milestone == "completed":
        p.completed_on = _earlier(p.completed_on, on)
    elif milestone == "land_assigned":
        p.land_assigned_on = _later(p.land_assigned_on, on)
    elif milestone == "waiting_for_land":
        p.waiting_land_latest = _later(p.waiting_land_latest, on)
    elif milestone == "lacking_funds":
        p.lacking_funds_latest = _later(p.lacking_funds_latest, on)


def milestone_records(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The project's milestones as they stand after its corrections and withdrawals, from its
    PROJECT events in stream order. A milestone has no id: a correction or withdrawal names
    the latest one of its kind, as intake resolves it (services/intake/amend.py)."""
    records: list[list[Any]] = []  # [data, withdrawn]
    for subject, event in events:
        if subject == "project.milestone":
            records.append([dict(event.get("data") or {}), False])
            continue
        target = (event.get("data") or {}).get("target") or {}
        if target.get("kind") != "milestone":
            continue
        latest = next(
            (r for r in reversed(records) if r[0].get("milestone") == target.get("milestone")), None
        )
        if latest is None:
            continue
        if subject == "project.correction":
            latest[0] = dict(event.get("after") or {})
        elif subject == "project.withdrawal":
            latest[1] = True
    return [data for data, withdrawn in records if not withdrawn]


def refold_milestones(p: BoardProject, records: list[dict[str, Any]]) -> None:
    for name in MILESTONE_FIELDS:
        setattr(p, name, None)
    for data in records:
        fold_milestone(p, data)
    derive(p)


def funds_corrected(f: BoardFunds, after: dict[str, Any], unit: str) -> None:
    """A funds record replaced by its corrected version. A CNY amount is its own RMB amount;
    any other currency waits for scoring's new credit to convert it (score.credited)."""
    f.amount_rmb = f.rmb_fen = None
    apply_funds_arrived(f, {"data": after}, unit)


def refold_funds_days(p: BoardProject, funds: list[BoardFunds]) -> None:
    """First and last arrival over the project's funds records that still count."""
    days = [f.arrived_on for f in funds if not f.withdrawn and f.arrived_on is not None]
    p.first_funds_on = min(days) if days else None
    p.last_funds_on = max(days) if days else None
    derive(p)


AMENDMENT_LABEL = {
    "project.correction": {"zh": "更正", "en": "correction"},
    "project.withdrawal": {"zh": "撤回", "en": "withdrawal"},
    "project.claim": {"zh": "认领认定", "en": "claim resolved"},
}
RECORD_LABEL = {
    "lead": {"zh": "项目线索", "en": "lead"},
    "funds": {"zh": "到位资金", "en": "funds record"},
    "milestone": {"zh": "项目节点", "en": "milestone"},
}


def amendment(subject: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """What a correction or withdrawal says, for the timeline: which record, the version it
    makes, who sent it and when, the record's owner, why, and each field old → new."""
    if subject not in ("project.correction", "project.withdrawal"):
        return None
    data = event.get("data") or {}
    target = data.get("target") or {}
    kind = str(target.get("kind", ""))
    return {
        "label": AMENDMENT_LABEL[subject],
        "record": target,
        "record_label": RECORD_LABEL.get(kind, {"zh": kind, "en": kind}),
        "version": event.get("version"),
        "sent_by": event.get("unit"),
        "owner": event.get("owner"),
        "received_at": event.get("received_at"),
        "reason": data.get("reason"),
        "changes": [
            {"field": c.get("field"), "old": c.get("old"), "new": c.get("new")}
            for c in event.get("changes") or []
        ],
    }


def apply_review_event(p: BoardProject, subject: str, event: dict[str, Any]) -> None:
    kind = subject.split(".", 1)[1]
    p.events += 1
    if kind == "screened":
        p.outcome = event.get("outcome")
        p.track = event.get("track")
        p.reasons = json.dumps(event.get("reasons") or [])
    elif kind == "materials":
        p.materials_complete = bool(event.get("complete"))
        p.materials_missing = json.dumps(event.get("missing_materials") or [])
        p.materials_deadline = parse_day(event.get("deadline"))
    elif kind == "recognition":
        p.recognized = bool(event.get("recognized"))
    elif kind == "decided":
        # The same decision as project.decision, as review recorded it (with the HQ).
        p.decision = event.get("decision") or p.decision
        if event.get("sponsor_leader"):
            p.sponsor_leader = event["sponsor_leader"]
        p.responsible_leader = event.get("responsible_leader") or p.responsible_leader
        if event.get("hq_commander"):
            p.hq_commander = event["hq_commander"]
            p.hq_members = json.dumps(event.get("hq_members") or [])
    derive(p)


def apply_funds_arrived(f: BoardFunds, event: dict[str, Any], unit: str) -> None:
    data = event.get("data") or {}
    f.unit = unit
    f.amount = str(data.get("amount", "0"))
    f.currency = str(data.get("currency", "CNY"))
    f.arrived_on = parse_day(data.get("arrived_on"))
    f.month = f.arrived_on.isoformat()[:7] if f.arrived_on else ""
    if f.currency == "CNY" and f.amount_rmb is None:
        f.amount_rmb = f.amount
        f.rmb_fen = to_fen(f.amount)


def apply_score_event(f: BoardFunds, subject: str, event: dict[str, Any]) -> None:
    kind = subject.split(".", 1)[1]
    if kind == "credited":
        f.state = "credited"
        f.amount_rmb = str(event.get("amount_rmb"))
        f.rmb_fen = to_fen(event.get("amount_rmb"))
        f.points = str(event.get("points"))
        f.multiplier = str(event.get("multiplier"))
        f.credited_to = json.dumps(event.get("credited_to") or [])
        f.hold_reason = None
    elif kind == "held":
        if f.state != "credited":
            f.state = "held"
        f.hold_reason = event.get("reason")
    elif kind == "reversed":
        f.state = "reversed"
        f.hold_reason = event.get("reason")


def stage_of(p: BoardProject) -> str:
    """The furthest of the plan's stages the project has reached (撤回, then 已终止 trumps all)."""
    if p.withdrawn:
        return "withdrawn"
    if p.outcome == "terminated" or p.decision == "rejected":
        return "terminated"
    if p.completed_on:
        return "completed"
    if p.first_funds_on:
        return "funds"
    if p.started_on:
        return "started"
    if p.signed_on:
        return "signed"
    if p.decision == "approved":
        return "approved"
    if p.track == "major" and p.outcome == "accepted":
        return "review"
    return "reported"


def derive(p: BoardProject) -> None:
    """Stage, open stalls and the visit clock, from the row's own facts (notify's reading)."""
    p.stage = stage_of(p)
    land_end = _later(_later(p.land_assigned_on, p.started_on), p.completed_on)
    wl = p.waiting_land_latest
    p.waiting_land_since = wl if wl is not None and (land_end is None or land_end < wl) else None
    lf = p.lacking_funds_latest
    funds_end = _later(_later(p.started_on, p.completed_on), p.last_funds_on)
    p.lacking_funds_since = (
        lf if lf is not None and (funds_end is None or funds_end <= lf) else None
    )
    sponsored = p.decision == "approved" and p.stage not in INACTIVE and p.sponsor_leader
    p.visit_since = _later(p.decided_on, p.last_visit) if sponsored and p.decided_on else None


# --- lights ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Days after which a reason turns a light yellow or red, all read from the rulesets.

    visit: notify's visit_overdue_days (yellow: the sponsor is reminded) and
    visit_escalate_days (red: the Center is told). Stalls: after_days (yellow: the first
    reminder) and after_days + repeat_days (red: still stalled at the second reminder).
    Materials: materials_due_within_days before the agenda deadline (yellow), past it (red).
    """

    visit_yellow: int
    visit_red: int
    signed_yellow: int
    signed_red: int
    land_yellow: int
    land_red: int
    funds_yellow: int
    funds_red: int
    materials_within: int
    source: str
    # 签约过亿元项目: the smallest signed amount (yuan) a signing counts with (notify's
    # signing_behind.min_amount); the overview's day counts of signings are kept with it.
    signing_min: int = 100_000_000

    @classmethod
    def load(cls, path: Path | None = None) -> Thresholds:
        from services.notify.params import load_params

        params = load_params(path)
        s = params.stalled
        return cls(
            visit_yellow=params.visit_overdue_days,
            visit_red=params.visit_escalate_days,
            signed_yellow=s.signed_not_started.after_days,
            signed_red=s.signed_not_started.after_days + s.signed_not_started.repeat_days,
            land_yellow=s.waiting_for_land.after_days,
            land_red=s.waiting_for_land.after_days + s.waiting_for_land.repeat_days,
            funds_yellow=s.lacking_funds.after_days,
            funds_red=s.lacking_funds.after_days + s.lacking_funds.repeat_days,
            materials_within=params.materials_due_within_days,
            signing_min=params.signing_behind.min_amount,
            source=str(path or os.environ.get("NOTIFY_TRIGGERS") or "rulesets/notify-*.yaml"),
        )

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Reason:
    code: str  # visit | signed_not_started | waiting_for_land | lacking_funds | materials[_late]
    light: str  # red | yellow
    days: int
    threshold: int
    since: dt.date | None

    def text(self, lang: str) -> str:
        words = REASON_WORDS[self.code][lang]
        return words.format(days=self.days, threshold=self.threshold)


REASON_WORDS = {
    "visit": {
        "zh": "包保县级领导{days}天未现场调度（阈值{threshold}天）",
        "en": "no sponsor visit for {days} days (threshold {threshold})",
    },
    "signed_not_started": {
        "zh": "签约{days}天未开工（阈值{threshold}天）",
        "en": "signed {days} days ago, not started (threshold {threshold})",
    },
    "waiting_for_land": {
        "zh": "等待土地指标{days}天（阈值{threshold}天）",
        "en": "waiting for land for {days} days (threshold {threshold})",
    },
    "lacking_funds": {
        "zh": "缺资金{days}天（阈值{threshold}天）",
        "en": "lacking funds for {days} days (threshold {threshold})",
    },
    "materials_late": {
        "zh": "评审会材料未齐，已过议题截止{days}天",
        "en": "committee materials missing, {days} days past the agenda deadline",
    },
    "materials": {
        "zh": "评审会材料未齐，距议题截止{days}天（提前{threshold}天提醒）",
        "en": "committee materials missing, {days} days to the agenda deadline (alert {threshold} days before)",
    },
}


def _graded(
    code: str, since: dt.date | None, clock: dt.date, yellow: int, red: int
) -> Reason | None:
    if since is None:
        return None
    days = (clock - since).days
    if days > red:
        return Reason(code, "red", days, red, since)
    if days > yellow:
        return Reason(code, "yellow", days, yellow, since)
    return None


def light_dates(p: BoardProject, t: Thresholds) -> tuple[dt.date | None, dt.date | None]:
    """(first yellow day, first red day) of an active project: the day each reason passes
    its threshold ("more than N days"), the earliest over the reasons; (None, None) if no
    reason can ever turn it. `light` on any day agrees (tests/board/test_lights.py)."""
    if p.stage in INACTIVE:
        return None, None
    day = dt.timedelta(days=1)
    pairs: list[tuple[dt.date, dt.date]] = []
    for since, yellow, red in (
        (p.visit_since, t.visit_yellow, t.visit_red),
        (p.signed_on if p.started_on is None else None, t.signed_yellow, t.signed_red),
        (p.waiting_land_since, t.land_yellow, t.land_red),
        (p.lacking_funds_since, t.funds_yellow, t.funds_red),
    ):
        if since is not None:
            pairs.append(
                (since + dt.timedelta(days=yellow) + day, since + dt.timedelta(days=red) + day)
            )
    if p.materials_complete is False and p.materials_deadline is not None:
        pairs.append(
            (
                p.materials_deadline - dt.timedelta(days=t.materials_within),
                p.materials_deadline + day,
            )
        )
    if not pairs:
        return None, None
    return min(y for y, _ in pairs), min(r for _, r in pairs)


def relight(p: BoardProject, t: Thresholds) -> None:
    p.yellow_on, p.red_on = light_dates(p, t)


# (unit, stage, yellow_on, red_on, counted signing day): what a project adds to the counts
TallyKey = tuple[str, str, dt.date | None, dt.date | None, dt.date | None]


def tally_key(p: BoardProject, t: Thresholds) -> TallyKey:
    """What one project adds to board_count / board_day_count (ingest moves them by the
    change of this key, so the overview never counts board_project)."""
    big = p.signed_fen is not None and p.signed_fen >= t.signing_min * 100
    return (p.attracting_unit, p.stage, p.yellow_on, p.red_on, p.signed_on if big else None)


def light(p: BoardProject, clock: dt.date, t: Thresholds) -> tuple[str | None, list[Reason]]:
    """(red|yellow|green, reasons) for an active project; (None, []) for a finished one."""
    if p.stage in INACTIVE:
        return None, []
    reasons = [
        r
        for r in (
            _graded("visit", p.visit_since, clock, t.visit_yellow, t.visit_red),
            _graded(
                "signed_not_started",
                p.signed_on if p.started_on is None else None,
                clock,
                t.signed_yellow,
                t.signed_red,
            ),
            _graded("waiting_for_land", p.waiting_land_since, clock, t.land_yellow, t.land_red),
            _graded("lacking_funds", p.lacking_funds_since, clock, t.funds_yellow, t.funds_red),
        )
        if r is not None
    ]
    if p.materials_complete is False and p.materials_deadline is not None:
        left = (p.materials_deadline - clock).days
        if left < 0:
            reasons.append(Reason("materials_late", "red", -left, t.materials_within, None))
        elif left <= t.materials_within:
            reasons.append(Reason("materials", "yellow", left, t.materials_within, None))
    if any(r.light == "red" for r in reasons):
        return "red", reasons
    if reasons:
        return "yellow", reasons
    return "green", []
