"""The weekly progress report (挂图作战，定期公布): one per sponsor leader and one county-wide.

`build_report` computes it from a Snapshot as of the start of the report day (facts dated
before it), as plain JSON-able values; `chart_png` draws it (matplotlib, Agg backend);
`render_html` lays it out with `templates/<lang>/weekly_report.html.j2`. The scheduler mails
what `investflow report weekly --on DATE` renders locally.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from shared.directory import Directory

from .model import STATUSES, ProjectView, Snapshot, quarter_of
from .render import Renderer
from .triggers import signings_in

TOP_N = 5


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def build_report(
    snapshot: Snapshot,
    on: dt.date,
    directory: Directory,
    targets: Callable[[dt.date], dict[str, int] | None],
    *,
    leader: str | None = None,
    overdue_days: int = 7,
    min_signing: int = 100_000_000,
    fast_start_days: int = 90,
    rate_definitions: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    as_of = on - dt.timedelta(days=1)
    projects: list[ProjectView] = [
        p
        for p in snapshot.projects.values()
        if p.reported_on <= as_of and (leader is None or p.sponsor_leader == leader)
    ]
    if leader is not None:
        projects = [p for p in projects if p.approved_on(as_of)]
    by_status = dict.fromkeys(STATUSES, 0)
    for p in projects:
        status = p.status(as_of, fast_start_days)
        if status:
            by_status[status] += 1

    overdue = []
    sponsored = 0
    for p in projects:
        approved = p.approved_on(as_of)
        if approved is None or not p.sponsored(as_of):
            continue
        sponsored += 1
        last = p.last_visit(as_of)
        since = max(approved, last or approved)
        days = (as_of - since).days
        if days > overdue_days:
            overdue.append(
                {
                    "project_id": p.project_id,
                    "title": p.title,
                    "sponsor_leader": p.sponsor_leader,
                    "last_visit": last.isoformat() if last else None,
                    "days": days,
                }
            )
    overdue.sort(key=lambda o: (-o["days"], o["project_id"]))

    year_start = dt.date(as_of.year, 1, 1)
    week_start = on - dt.timedelta(days=7)
    funds_year = funds_week = Decimal(0)
    awaiting_rate = 0
    for p in projects:
        for f in p.funds:
            if not year_start <= f.arrived_on <= as_of:
                continue
            rmb = snapshot.funds_rmb(f)
            if rmb is None:
                awaiting_rate += 1
                continue
            funds_year += rmb
            if f.arrived_on >= week_start:
                funds_week += rmb
    visits_week = sum(1 for p in projects for v in p.visits if week_start <= v <= as_of)

    scope = {p.project_id for p in projects}
    view = Snapshot(projects={pid: snapshot.projects[pid] for pid in scope}, rates=snapshot.rates)
    plan = targets(as_of) or {}
    signings = []
    for q in range(1, 5):
        _, start, end = quarter_of(dt.date(as_of.year, 3 * q - 2, 1))
        actual = 0 if start > as_of else len(signings_in(view, start, min(end, as_of), min_signing))
        signings.append({"quarter": q, "target": plan.get(f"Q{q}"), "actual": actual})

    scoreboard = _scoreboard(snapshot, as_of, directory)
    ranked = sorted(scoreboard.items(), key=lambda kv: (-kv[1], kv[0]))
    top = [{"code": c, "points": _money(v)} for c, v in ranked[:TOP_N]]
    bottom = [
        {"code": c, "points": _money(v)}
        for c, v in sorted(ranked, key=lambda kv: (kv[1], kv[0]))[:TOP_N]
    ]
    own = None
    if leader is not None:
        rank = [c for c, _ in ranked].index(leader) + 1 if leader in scoreboard else None
        own = {
            "code": leader,
            "points": _money(scoreboard.get(leader, Decimal(0))),
            "rank": rank,
            "of": len(ranked),
        }

    return {
        "on": on.isoformat(),
        "as_of": as_of.isoformat(),
        "week_start": week_start.isoformat(),
        "leader": leader,
        "projects": len(projects),
        "by_status": by_status,
        "sponsored": sponsored,
        "overdue": overdue,
        "visits_week": visits_week,
        "funds_year_rmb": _money(funds_year),
        "funds_week_rmb": _money(funds_week),
        "funds_awaiting_rate": awaiting_rate,
        "signings": signings,
        "min_signing": min_signing,
        "scoreboard_top": top,
        "scoreboard_bottom": bottom,
        "own_score": own,
        "credits": sum(1 for _ in scoreboard.values()),
        "rates": rates(projects, as_of, snapshot, rate_definitions),
    }


RATE_DEFAULTS = {"performance": ["started"], "landing": ["registered", "started"]}


def rates(
    projects: list[ProjectView],
    as_of: dt.date,
    snapshot: Snapshot,
    definitions: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """履约率、落地率、资金到位率 of the projects signed this year by `as_of` (the scoring
    ruleset's `rate_definitions`; terminated and rejected projects are not counted)."""
    d = definitions or RATE_DEFAULTS
    performance, landing = set(d.get("performance", [])), set(d.get("landing", []))
    signed = performed = landed = 0
    contracted = funds = Decimal(0)
    for p in projects:
        first = p.signed(as_of)
        if first is None or first[0].year != as_of.year or p.outcome in ("terminated", "withdrawn"):
            continue
        if p.decision == "rejected":
            continue
        reached = {m for on, m, _ in p.milestones if on <= as_of}
        signed += 1
        performed += bool(reached & performance)
        landed += bool(reached & landing)
        contracted += first[1] or Decimal(0)
        for f in p.funds:
            rmb = snapshot.funds_rmb(f) if f.arrived_on <= as_of else None
            funds += rmb or Decimal(0)

    def ratio(a: Decimal | int, b: Decimal | int) -> str | None:
        return f"{Decimal(a) * 100 / Decimal(b):.1f}%" if b else None

    return {
        "signed": signed,
        "performance_rate": ratio(performed, signed),
        "landing_rate": ratio(landed, signed),
        "funds_rate": ratio(funds, contracted),
    }


def _scoreboard(snapshot: Snapshot, as_of: dt.date, directory: Directory) -> dict[str, Decimal]:
    """Points per assessed subject (考核对象) in as_of's year, from the score.credited we consumed."""
    subjects = [c for c in directory.units if c != directory.CENTER] + list(directory.leaders)
    points = dict.fromkeys(subjects, Decimal(0))
    arrivals = snapshot.funds_arrival()
    for c in snapshot.credits:
        if c.year != as_of.year:
            continue
        arrived = arrivals.get((c.project_id, c.funds_id))
        if arrived is not None and arrived > as_of:
            continue
        for code in c.credited_to:
            points[code] = points.get(code, Decimal(0)) + c.points
    return points


# --- drawing -----------------------------------------------------------------------------------


def _cjk_font() -> str | None:
    from matplotlib import font_manager

    for family in (
        "Noto Sans CJK SC",
        "Source Han Sans SC",
        "WenQuanYi Zen Hei",
        "SimHei",
        "Microsoft YaHei",
    ):
        try:
            font_manager.findfont(family, fallback_to_default=False)
            return family
        except ValueError:
            continue
    return None


def chart_png(report: dict[str, Any], renderer: Renderer, lang: str = "zh") -> bytes:
    """Projects by status, and signings vs target per quarter. Chinese labels need a CJK font;
    without one installed the chart is labelled in English (the page around it stays Chinese)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    font = _cjk_font() if lang == "zh" else None
    label_lang = "zh" if font else "en"
    term = renderer.helpers(label_lang)["term"]
    statuses = [s for s, n in report["by_status"].items() if n]
    counts = [report["by_status"][s] for s in statuses]
    rc = {"font.family": font} if font else {}
    with plt.rc_context(rc):
        # Inside the context: axes take their tick labels' font when they are created.
        fig = Figure(figsize=(9.5, 3.8), dpi=100)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        left.barh([term("status", s) for s in statuses][::-1], counts[::-1], color="#b22222")
        for y, n in enumerate(counts[::-1]):
            left.text(n, y, f" {n}", va="center", fontsize=8)
        left.set_title("项目分类" if label_lang == "zh" else "Projects by status", fontsize=10)
        left.tick_params(labelsize=8)
        quarters = [f"Q{s['quarter']}" for s in report["signings"]]
        xs = range(len(quarters))
        left_bars = [s["target"] or 0 for s in report["signings"]]
        right.bar(
            [x - 0.2 for x in xs],
            left_bars,
            width=0.4,
            color="#cccccc",
            label="目标" if label_lang == "zh" else "target",
        )
        right.bar(
            [x + 0.2 for x in xs],
            [s["actual"] for s in report["signings"]],
            width=0.4,
            color="#1f4e79",
            label="实际" if label_lang == "zh" else "signed",
        )
        right.set_xticks(list(xs), quarters)
        right.set_title(
            "签约过亿元项目" if label_lang == "zh" else "Signed ≥ 100M yuan", fontsize=10
        )
        right.legend(fontsize=8)
        right.tick_params(labelsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def render_html(renderer: Renderer, report: dict[str, Any], lang: str, chart_src: str) -> str:
    template = renderer.template(f"{lang}/weekly_report.html.j2")
    return str(template.render(r=report, chart_src=chart_src, **renderer.helpers(lang)))


def standalone_html(renderer: Renderer, report: dict[str, Any], lang: str = "zh") -> str:
    """The report as one self-contained file: the chart inline as a data: URI."""
    png = chart_png(report, renderer, lang)
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    return render_html(renderer, report, lang, src)
