"""The weekly publication (定期公布) for any date: notify's own report, computed from the
board's tables, so the page and the Monday email say the same thing in the same words.

Only notify's pure code is used (its report builder, renderer and parameters); its database
is not read. The page adds an A4 print stylesheet served from the package.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from .readmodel import loads, money, parse_day
from .store import BoardEvent, BoardFunds, BoardPoints, BoardProject

PRINT_CSS = '<link rel="stylesheet" href="/static/print.css">'


def snapshot(session: Session) -> Any:
    from services.notify.model import Credit, FundsRecord, ProjectView, Snapshot

    projects: dict[str, ProjectView] = {}
    for p in session.exec(select(BoardProject).where(col(BoardProject.reported_on).is_not(None))):
        projects[p.project_id] = ProjectView(
            project_id=p.project_id,
            title=p.title,
            attracting_unit=p.attracting_unit,
            landing_area=p.landing_area,
            kind=p.kind,
            planned_investment=money(p.planned_investment),
            reported_on=p.reported_on,  # type: ignore[arg-type]
            # 撤回 as notify's facts hold it, so the page and the Monday email agree.
            outcome="withdrawn" if p.withdrawn else p.outcome,
            track=p.track,
            reasons=loads(p.reasons, []),
            decision=p.decision,
            decided_on=p.decided_on,
            sponsor_leader=p.sponsor_leader,
            documents=set(loads(p.documents, [])),
            materials_complete=p.materials_complete,
            materials_missing=loads(p.materials_missing, []),
            materials_deadline=p.materials_deadline,
        )
    rates: dict[tuple[dt.date, str], Decimal] = {}
    wanted = ("project.milestone", "project.visit", "project.rates")
    for e in session.exec(select(BoardEvent).where(col(BoardEvent.subject).in_(wanted))):
        data = loads(e.body, {}).get("data") or {}
        if e.subject == "project.rates":
            day = parse_day(data.get("on"))
            for currency, rate in (data.get("rates") or {}).items():
                if day is not None:
                    rates[(day, currency)] = money(rate)
            continue
        view = projects.get(e.project_id or "")
        on = parse_day(data.get("on"))
        if view is None or on is None:
            continue
        if e.subject == "project.visit":
            view.visits.append(on)
        else:
            amount = data.get("amount")
            view.milestones.append(
                (on, str(data.get("milestone")), money(amount) if amount else None)
            )
    for f in session.exec(select(BoardFunds).where(col(BoardFunds.arrived_on).is_not(None))):
        view = projects.get(f.project_id)
        if view is not None:
            view.funds.append(FundsRecord(f.funds_id, money(f.amount), f.currency, f.arrived_on))  # type: ignore[arg-type]
    credits: dict[tuple[str, str], dict[str, Any]] = {}
    for row in session.exec(select(BoardPoints).where(col(BoardPoints.active).is_(True))):
        c = credits.setdefault(
            (row.project_id, row.funds_id),
            {"year": row.year, "quarter": row.quarter, "points": row.points_fen, "to": []},
        )
        c["to"].append(row.subject)
    funds_rmb = {
        (f.project_id, f.funds_id): money(f.amount_rmb or 0)
        for f in session.exec(select(BoardFunds))
    }
    return Snapshot(
        projects=projects,
        rates=rates,
        credits=[
            Credit(
                pid,
                fid,
                c["year"],
                c["quarter"],
                Decimal(c["points"]) / 100,
                funds_rmb.get((pid, fid), Decimal(0)),
                tuple(c["to"]),
            )
            for (pid, fid), c in credits.items()
        ],
    )


def weekly_html(session: Session, on: dt.date | None, leader: str | None, lang: str) -> str:
    from services.notify.params import load_params, signing_targets
    from services.notify.render import Renderer
    from services.notify.report import build_report, standalone_html

    from .app import clock_now, context, settings

    params = load_params()
    day = on or clock_now(session) + dt.timedelta(days=1)
    report = build_report(
        snapshot(session),
        day,
        context.directory,
        lambda d: signing_targets(settings.rulesets_dir, d),
        leader=leader,
        overdue_days=params.visit_overdue_days,
        min_signing=params.signing_behind.min_amount,
        fast_start_days=params.weekly_report.fast_start_days,
    )
    html = standalone_html(Renderer(context.directory), report, lang)
    return html.replace("</head>", PRINT_CSS + "</head>", 1)
