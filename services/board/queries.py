"""The board's reads: every page's numbers, scoped to the viewer, from the board's own tables.

Lights are evaluated in SQL for counts and filters (`light_sql`) and in Python for the rows
shown (`readmodel.light`); tests/board/test_readmodel.py checks that both agree.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_
from sqlmodel import Session, col, select

from .access import Viewer
from .readmodel import (
    INACTIVE,
    STAGE_KEYS,
    Thresholds,
    amendment,
    from_fen,
    light,
    loads,
    parse_day,
)
from .store import (
    BoardCount,
    BoardDayCount,
    BoardEvent,
    BoardFunds,
    BoardFundsMonth,
    BoardNotification,
    BoardPoints,
    BoardProject,
    BoardRates,
    BoardRatesYear,
    BoardRuleset,
    BoardState,
)

P = BoardProject
PAGE_SIZE = 50


# --- the clock and the data version -------------------------------------------------------------


def state(session: Session, key: str) -> str | None:
    row = session.get(BoardState, key)
    return row.value if row else None


def business_clock(session: Session) -> dt.date | None:
    return parse_day(state(session, "clock"))


def version(session: Session) -> int:
    return int(state(session, "version") or 0)


# --- scope and lights -------------------------------------------------------------------------


def scope(viewer: Viewer) -> ColumnElement[bool] | None:
    """The projects a viewer may see: all, its own (招商单位), or those it sponsors (包保)."""
    if viewer.sees_all:
        return None
    if viewer.role == "unit":
        return col(P.attracting_unit) == viewer.code
    if viewer.role == "leader":
        return col(P.sponsor_leader) == viewer.code
    return false()


def _scoped(query: Any, viewer: Viewer) -> Any:
    where = scope(viewer)
    return query if where is None else query.where(where)


def may_see(viewer: Viewer, p: BoardProject) -> bool:
    if viewer.sees_all:
        return True
    if viewer.role == "unit":
        return p.attracting_unit == viewer.code
    if viewer.role == "leader":
        return p.sponsor_leader == viewer.code
    return False


def light_sql(t: Thresholds, clock: dt.date) -> dict[str, ColumnElement[bool]]:
    """red / yellow / green as SQL conditions on the precomputed first yellow and red days
    (readmodel.light_dates, kept by ingest): two indexed comparisons per light."""
    del t  # the thresholds are in yellow_on / red_on already (ingest.relight_all on a change)
    red_on, yellow_on = col(P.red_on), col(P.yellow_on)
    active = col(P.stage).not_in(INACTIVE)
    red = and_(red_on.is_not(None), red_on <= clock)
    warned = and_(yellow_on.is_not(None), yellow_on <= clock)
    return {
        "red": red,
        "yellow": and_(warned, or_(red_on.is_(None), red_on > clock)),
        "green": and_(active, or_(yellow_on.is_(None), yellow_on > clock)),
    }


# --- overview -----------------------------------------------------------------------------------


def quarter_bounds(year: int, q: int) -> tuple[dt.date, dt.date]:
    start = dt.date(year, 3 * q - 2, 1)
    end = dt.date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1) - dt.timedelta(days=1)
    return start, end


@dataclass(frozen=True)
class Signing:
    """The plan's quarterly signing targets (签约过亿元项目) and what they ask of the board."""

    targets: dict[str, int]
    min_amount: int
    check_after: Fraction
    expected_share: Fraction


def overview(
    session: Session, viewer: Viewer, clock: dt.date, t: Thresholds, signing: Signing
) -> dict[str, Any]:
    """The overview. The Center, admin and units read the counts ingest keeps per unit
    (board_count, board_day_count: a few hundred rows); a leader's projects span units and
    are counted from board_project, scoped by sponsor (few rows, an index)."""
    if viewer.sees_all or viewer.role == "unit":
        unit = None if viewer.sees_all else viewer.code
        by_stage, red, warned, signed_days = _counted(session, unit, clock)
    else:
        by_stage, red, warned, signed_days = _counted_scoped(session, viewer, clock, signing)
    active = sum(n for s, n in by_stage.items() if s not in INACTIVE)
    lights = {"red": red, "yellow": warned - red, "green": active - warned}
    return _overview(session, viewer, clock, signing, by_stage, lights, signed_days)


def _counted(
    session: Session, unit: str | None, clock: dt.date
) -> tuple[dict[str, int], int, int, list[tuple[dt.date, int]]]:
    """(projects by stage, red, turned yellow, the year's counted signings per day) from
    the counts ingest keeps: `unit`'s, or every unit's."""
    by_stage = dict.fromkeys(STAGE_KEYS, 0)
    counts = select(BoardCount.key, func.sum(BoardCount.n)).where(
        col(BoardCount.key).startswith("stage.")
    )
    days = select(BoardDayCount.kind, func.sum(BoardDayCount.n)).where(
        col(BoardDayCount.kind).in_(("yellow", "red")), col(BoardDayCount.day) <= clock
    )
    signed = select(BoardDayCount.day, func.sum(BoardDayCount.n)).where(
        col(BoardDayCount.kind) == "signed",
        col(BoardDayCount.day) >= dt.date(clock.year, 1, 1),
        col(BoardDayCount.day) <= clock,
    )
    if unit is not None:
        counts = counts.where(col(BoardCount.unit) == unit)
        days = days.where(col(BoardDayCount.unit) == unit)
        signed = signed.where(col(BoardDayCount.unit) == unit)
    for key, n in session.exec(counts.group_by(BoardCount.key)).all():
        stage = key.removeprefix("stage.")
        by_stage[stage] = by_stage.get(stage, 0) + int(n or 0)
    turned = {k: int(n or 0) for k, n in session.exec(days.group_by(BoardDayCount.kind)).all()}
    per_day = [
        (day, int(n or 0)) for day, n in session.exec(signed.group_by(BoardDayCount.day)).all()
    ]
    return by_stage, turned.get("red", 0), turned.get("yellow", 0), per_day


def _counted_scoped(
    session: Session, viewer: Viewer, clock: dt.date, signing: Signing
) -> tuple[dict[str, int], int, int, list[tuple[dt.date, int]]]:
    """The same counts from board_project, for a scope the kept counts do not have."""
    by_stage = dict.fromkeys(STAGE_KEYS, 0)
    rows = session.exec(_scoped(select(P.stage, func.count()).group_by(P.stage), viewer)).all()
    for stage, n in rows:
        by_stage[stage] = by_stage.get(stage, 0) + int(n)

    # Every red project has turned yellow first (yellow_on <= red_on).
    def turned(column: Any) -> int:
        query = select(func.count()).select_from(P).where(column.is_not(None), column <= clock)
        return int(session.exec(_scoped(query, viewer)).one())

    signed_days = session.exec(
        _scoped(
            select(P.signed_on).where(
                col(P.signed_on) >= dt.date(clock.year, 1, 1),
                col(P.signed_on) <= clock,
                col(P.signed_fen) >= signing.min_amount * 100,
            ),
            viewer,
        )
    ).all()
    return (
        by_stage,
        turned(col(P.red_on)),
        turned(col(P.yellow_on)),
        [(day, 1) for day in signed_days if day is not None],
    )


def _overview(
    session: Session,
    viewer: Viewer,
    clock: dt.date,
    signing: Signing,
    by_stage: dict[str, int],
    lights: dict[str, int],
    signed_days: list[tuple[dt.date, int]],
) -> dict[str, Any]:
    year = clock.year
    per_quarter = dict.fromkeys(range(1, 5), 0)
    for day, n in signed_days:
        per_quarter[(day.month - 1) // 3 + 1] += n
    signings = []
    for q in range(1, 5):
        start, end = quarter_bounds(year, q)
        actual = per_quarter[q]
        target = signing.targets.get(f"Q{q}")
        elapsed = Fraction(
            max(0, min((clock - start).days + 1, (end - start).days + 1)), (end - start).days + 1
        )
        behind = (
            target is not None
            and start <= clock
            and elapsed >= signing.check_after
            and Fraction(int(actual)) < signing.expected_share * target
        )
        signings.append({"quarter": q, "target": target, "actual": int(actual), "behind": behind})

    funds: dict[str, dict[str, str]] = {}
    if not (viewer.sees_all or viewer.role == "unit"):
        # A leader's projects span units: sum their funds rows (few: the sponsor's projects).
        funds_q = _scoped(
            select(BoardFunds.unit, BoardFunds.month, func.sum(BoardFunds.rmb_fen))
            .join(P, col(P.project_id) == col(BoardFunds.project_id))
            .where(
                col(BoardFunds.month).startswith(str(year)), col(BoardFunds.withdrawn).is_(False)
            )
            .group_by(BoardFunds.unit, BoardFunds.month),
            viewer,
        )
        held_q = _scoped(
            select(func.count())
            .select_from(BoardFunds)
            .join(P, col(P.project_id) == col(BoardFunds.project_id))
            .where(col(BoardFunds.state) == "held", col(BoardFunds.withdrawn).is_(False)),
            viewer,
        )
    else:
        funds_q = select(
            BoardFundsMonth.unit, BoardFundsMonth.month, BoardFundsMonth.rmb_fen
        ).where(col(BoardFundsMonth.month).startswith(str(year)), col(BoardFundsMonth.rmb_fen) != 0)
        held_q = select(func.coalesce(func.sum(BoardCount.n), 0)).where(
            col(BoardCount.key) == "funds.held"
        )
        if viewer.role == "unit":
            funds_q = funds_q.where(col(BoardFundsMonth.unit) == viewer.code)
            held_q = held_q.where(col(BoardCount.unit) == viewer.code)
    for unit, month, fen in session.exec(funds_q).all():
        if fen:
            funds.setdefault(unit, {})[month] = str(from_fen(fen))
    held = session.exec(held_q).one()
    return {
        "clock": clock.isoformat(),
        "year": year,
        # A withdrawn lead (撤回) was entered by mistake: shown by stage, not a project.
        "projects": sum(n for s, n in by_stage.items() if s != "withdrawn"),
        "by_stage": by_stage,
        "lights": lights,
        "signings": signings,
        "min_signing": signing.min_amount,
        "funds_by_unit_month": funds,
        "funds_held": int(held),
        "rates": rates(session, viewer, year),
    }


def rates(session: Session, viewer: Viewer, year: int) -> dict[str, Any] | None:
    """履约率、落地率、资金到位率 of `year` as scoring last published them (score.rates), or of
    the latest year before it (January, before a signing); None before any. The county's
    for everyone, every unit's for the Center and admin, a unit its own."""
    state = session.exec(
        select(BoardRatesYear)
        .where(col(BoardRatesYear.year) <= year)
        .order_by(col(BoardRatesYear.year).desc())
        .limit(1)
    ).first()
    if state is None:
        return None
    year = state.year
    query = select(BoardRates).where(
        col(BoardRates.year) == year, col(BoardRates.scope).in_(("county", "unit"))
    )
    if not viewer.sees_all:
        unit = viewer.code if viewer.role == "unit" else ""
        query = query.where(or_(col(BoardRates.scope) == "county", col(BoardRates.code) == unit))
    county: dict[str, Any] | None = None
    by_unit: dict[str, Any] = {}
    for row in session.exec(query.order_by(col(BoardRates.code))).all():
        if row.scope == "county":
            county = loads(row.figures, {})
        else:
            by_unit[row.code] = loads(row.figures, {})
    explanation = loads(state.explanation, {})
    return {
        "year": year,
        "revision": state.revision,
        "ruleset": f"{explanation.get('ruleset_id')}@{explanation.get('version')}",
        "definitions": loads(state.definitions, {}),
        "explanation": explanation,
        "county": county,
        "by_unit": by_unit,
    }


def project_rates(session: Session, project_id: str) -> dict[str, Any]:
    """year → the project's figures, for every year scoring counted it in."""
    rows = session.exec(
        select(BoardRates).where(
            col(BoardRates.scope) == "project", col(BoardRates.code) == project_id
        )
    ).all()
    return {str(r.year): loads(r.figures, {}) for r in sorted(rows, key=lambda r: r.year)}


# --- project list and page ----------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    unit: str | None = None
    landing_area: str | None = None
    stage: str | None = None
    light: str | None = None
    sponsor: str | None = None
    q: str | None = None
    page: int = 1


def projects(
    session: Session, viewer: Viewer, clock: dt.date, t: Thresholds, f: Filters
) -> dict[str, Any]:
    query = _scoped(select(P), viewer)
    count_q = _scoped(select(func.count()).select_from(P), viewer)
    conds: list[ColumnElement[bool]] = []
    if f.unit:
        conds.append(col(P.attracting_unit) == f.unit)
    if f.landing_area:
        conds.append(col(P.landing_area) == f.landing_area)
    if f.stage:
        conds.append(col(P.stage) == f.stage)
    if f.sponsor:
        conds.append(col(P.sponsor_leader) == f.sponsor)
    if f.light:
        conds.append(light_sql(t, clock)[f.light])
    if f.q:
        like = f"%{f.q}%"
        conds.append(or_(col(P.title).like(like), col(P.project_id).like(like)))
    for c in conds:
        query = query.where(c)
        count_q = count_q.where(c)
    total = int(session.exec(count_q).one())
    page = max(1, f.page)
    rows = session.exec(
        query.order_by(col(P.project_id)).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
    ).all()
    return {
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "rows": [card(p, clock, t) for p in rows],
    }


def card(p: BoardProject, clock: dt.date, t: Thresholds) -> dict[str, Any]:
    colour, reasons = light(p, clock, t)
    return {
        "project_id": p.project_id,
        "title": p.title,
        "attracting_unit": p.attracting_unit,
        "landing_area": p.landing_area,
        "stage": p.stage,
        "sponsor_leader": p.sponsor_leader,
        "planned_investment": p.planned_investment,
        "reported_on": p.reported_on.isoformat() if p.reported_on else None,
        "light": colour,
        "reasons": [
            {"code": r.code, "light": r.light, "days": r.days, "threshold": r.threshold}
            for r in reasons
        ],
    }


def project_page(
    session: Session, p: BoardProject, clock: dt.date, t: Thresholds
) -> dict[str, Any]:
    events = session.exec(
        select(BoardEvent)
        .where(col(BoardEvent.project_id) == p.project_id)
        .order_by(col(BoardEvent.id))
    ).all()
    timeline = []
    for e in events:
        body = loads(e.body, {})
        timeline.append(
            {
                "subject": e.subject,
                "day": e.day.isoformat() if e.day else None,
                "data": body.get("data", body),
                "explanation": body.get("explanation"),
                "amendment": amendment(e.subject, body),
            }
        )
    funds = session.exec(
        select(BoardFunds)
        .where(col(BoardFunds.project_id) == p.project_id)
        .order_by(col(BoardFunds.arrived_on))
    ).all()
    notes = session.exec(
        select(BoardNotification)
        .where(col(BoardNotification.project_id) == p.project_id)
        .order_by(col(BoardNotification.id))
    ).all()
    return {
        "project": card(p, clock, t)
        | {
            "kind": p.kind,
            "industry": p.industry,
            "investor": p.investor,
            "track": p.track,
            "decision": p.decision,
            "decided_on": p.decided_on.isoformat() if p.decided_on else None,
            "responsible_leader": p.responsible_leader,
            "hq_commander": p.hq_commander,
            "hq_members": loads(p.hq_members, []),
            "signed_on": p.signed_on.isoformat() if p.signed_on else None,
            "signed_amount": p.signed_amount,
            "started_on": p.started_on.isoformat() if p.started_on else None,
            "last_visit": p.last_visit.isoformat() if p.last_visit else None,
            "terminated_by": loads(p.reasons, []),
            "documents": loads(p.documents, []),
            "materials_missing": loads(p.materials_missing, []),
            "materials_deadline": p.materials_deadline.isoformat()
            if p.materials_deadline
            else None,
            "recognized": p.recognized,
            "duplicate_of": p.duplicate_of,
            "withdrawn": p.withdrawn,
            "withdrawn_reason": p.withdrawn_reason,
        },
        "timeline": timeline,
        "rates": project_rates(session, p.project_id),
        "funds": [
            {
                "funds_id": f.funds_id,
                "amount": f.amount,
                "currency": f.currency,
                "arrived_on": f.arrived_on.isoformat() if f.arrived_on else None,
                "state": "withdrawn" if f.withdrawn else f.state,
                "amount_rmb": f.amount_rmb,
                "points": f.points,
                "multiplier": f.multiplier,
                "hold_reason": f.hold_reason,
                "credited_to": loads(f.credited_to, []),
            }
            for f in funds
        ],
        "notifications": [
            {
                "ok": n.ok,
                "cause": n.cause,
                "recipient": n.recipient,
                "channel": n.channel,
                "attempts": n.attempts,
                "error": n.error,
            }
            for n in notes
        ],
    }


def red_list(
    session: Session, viewer: Viewer, clock: dt.date, t: Thresholds, limit: int = 500
) -> list[dict[str, Any]]:
    rows = session.exec(
        _scoped(select(P).where(light_sql(t, clock)["red"]), viewer)
        .order_by(col(P.attracting_unit), col(P.project_id))
        .limit(limit)
    ).all()
    return [card(p, clock, t) for p in rows]


# --- ranking (红黑榜) ---------------------------------------------------------------------------


def _points(session: Session, year: int, upto: dt.date | None) -> dict[str, int]:
    query = (
        select(BoardPoints.subject, func.sum(BoardPoints.points_fen))
        .where(col(BoardPoints.year) == year, col(BoardPoints.active).is_(True))
        .group_by(BoardPoints.subject)
    )
    if upto is not None:
        query = query.where(
            or_(col(BoardPoints.arrived_on).is_(None), col(BoardPoints.arrived_on) <= upto)
        )
    return {s: int(v or 0) for s, v in session.exec(query).all()}


def _ranks(points: dict[str, int], subjects: list[str]) -> dict[str, int]:
    """Competition ranking (1, 2, 2, 4): equal points share a rank."""
    ordered = sorted(subjects, key=lambda s: (-points.get(s, 0), s))
    ranks: dict[str, int] = {}
    for i, s in enumerate(ordered):
        prev = ordered[i - 1] if i else None
        same = prev is not None and points.get(prev, 0) == points.get(s, 0)
        ranks[s] = ranks[prev] if same and prev is not None else i + 1
    return ranks


def ranking(
    session: Session,
    viewer: Viewer,
    clock: dt.date,
    subjects: list[str],
    signing: Signing,
) -> dict[str, Any]:
    year = clock.year
    now = _points(session, year, None)
    before = _points(session, year, clock - dt.timedelta(days=7))
    rank_now, rank_before = _ranks(now, subjects), _ranks(before, subjects)
    min_fen = signing.min_amount * 100
    start = dt.date(year, 1, 1)
    signed_unit = dict(
        session.exec(
            select(P.attracting_unit, func.count())
            .where(
                col(P.signed_on) >= start, col(P.signed_on) <= clock, col(P.signed_fen) >= min_fen
            )
            .group_by(P.attracting_unit)
        ).all()
    )
    signed_leader = dict(
        session.exec(
            select(P.sponsor_leader, func.count())
            .where(
                col(P.signed_on) >= start, col(P.signed_on) <= clock, col(P.signed_fen) >= min_fen
            )
            .group_by(P.sponsor_leader)
        ).all()
    )
    rows = []
    for s in sorted(subjects, key=lambda s: (rank_now[s], s)):
        if not viewer.sees_all and s != viewer.code:
            continue  # a unit or leader sees its own rank only
        rows.append(
            {
                "subject": s,
                "points": str(from_fen(now.get(s, 0))),
                "rank": rank_now[s],
                "rank_last_week": rank_before[s],
                "change": rank_before[s] - rank_now[s],
                "signed": int(signed_unit.get(s, 0) or signed_leader.get(s, 0) or 0),
            }
        )
    plan = sum(signing.targets.values()) if signing.targets else None
    actual = sum(int(v) for v in signed_unit.values())
    return {
        "year": year,
        "clock": clock.isoformat(),
        "of": len(subjects),
        "rows": rows,
        "plan": plan,
        "actual": actual,
        "min_signing": signing.min_amount,
    }


# --- ops ----------------------------------------------------------------------------------------


def ruleset_history(session: Session, limit: int = 200) -> list[BoardRuleset]:
    return list(
        session.exec(select(BoardRuleset).order_by(col(BoardRuleset.id).desc()).limit(limit)).all()
    )


def failed_notifications(session: Session, limit: int = 200) -> list[BoardNotification]:
    return list(
        session.exec(
            select(BoardNotification)
            .where(col(BoardNotification.ok).is_(False))
            .order_by(col(BoardNotification.id).desc())
            .limit(limit)
        ).all()
    )


def money_str(value: Decimal | str | None) -> str:
    if value is None:
        return "—"
    return f"{Decimal(str(value)):,.2f}"


def pct_str(value: Decimal | str | None) -> str:
    """A published ratio ("0.5000") as a percentage ("50.0%"); — where it is undefined."""
    if value is None:
        return "—"
    return f"{Decimal(str(value)) * 100:.1f}%"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
