"""The board's pages and JSON API. Every number comes from `queries`; this module words it."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.db import unit_of_work

from . import access, charts, queries
from .readmodel import LIGHT_LABEL, REASON_WORDS, STAGE_KEYS, STAGE_LABEL, loads
from .store import BoardProject

HERE = Path(__file__).resolve().parent
env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

WORDS: dict[str, dict[str, str]] = {
    "title": {"zh": "挂图作战", "en": "Battle map"},
    "overview": {"zh": "总览", "en": "Overview"},
    "projects": {"zh": "项目", "en": "Projects"},
    "red_list": {"zh": "红灯预警", "en": "Red list"},
    "ranking": {"zh": "红黑榜", "en": "Ranking"},
    "weekly": {"zh": "定期公布", "en": "Publication"},
    "ops": {"zh": "运维", "en": "Ops"},
    "by_stage": {"zh": "项目阶段", "en": "Projects by stage"},
    "lights": {"zh": "红黄绿灯预警", "en": "Lights"},
    "signings": {"zh": "签约过亿元项目（计划/实际）", "en": "Signed ≥ 100M yuan (plan / actual)"},
    "plan": {"zh": "计划", "en": "plan"},
    "actual": {"zh": "实际", "en": "actual"},
    "funds": {
        "zh": "到位资金（元，按单位、月份）",
        "en": "Funds in place (yuan, by unit and month)",
    },
    "funds_held": {"zh": "暂缓计分的到位资金笔数", "en": "funds records held"},
    "rates": {"zh": "履约率 / 落地率 / 资金到位率", "en": "Performance / landing / funds rates"},
    "rates_none": {
        "zh": "考核计分尚未发布本年度的比率（尚无签约项目）。",
        "en": "Scoring has not published this year's rates yet (no signed projects).",
    },
    "rates_signed": {"zh": "签约项目", "en": "signed"},
    "rates_funds": {"zh": "到位资金（折人民币）", "en": "funds in place (RMB)"},
    "rates_contracted": {"zh": "签约金额", "en": "contracted"},
    "rates_source": {"zh": "考核计分发布，规则集", "en": "published by scoring, ruleset"},
    "rates_not_counted": {
        "zh": "未计入比率（本年度未签约）。",
        "en": "Not counted in the rates (not signed in an assessment year).",
    },
    "county": {"zh": "全县", "en": "county"},
    "behind": {"zh": "落后于本季度目标", "en": "behind the quarter's target"},
    "clock": {"zh": "截至", "en": "as of"},
    "unit": {"zh": "招商单位", "en": "Unit"},
    "landing_area": {"zh": "落地区域", "en": "Landing area"},
    "stage": {"zh": "阶段", "en": "Stage"},
    "light": {"zh": "预警", "en": "Light"},
    "sponsor": {"zh": "包保县级领导", "en": "Sponsor"},
    "search": {"zh": "筛选", "en": "Filter"},
    "all": {"zh": "全部", "en": "all"},
    "project": {"zh": "项目", "en": "Project"},
    "timeline": {"zh": "时间线", "en": "Timeline"},
    "documents": {"zh": "材料", "en": "Documents"},
    "filed": {"zh": "已报送", "en": "filed"},
    "missing": {"zh": "缺少", "en": "missing"},
    "visits": {"zh": "现场调度", "en": "Visits"},
    "hq": {"zh": "项目指挥部", "en": "Headquarters"},
    "notifications": {"zh": "已发通知", "en": "Notifications"},
    "points": {"zh": "得分", "en": "Points"},
    "rank": {"zh": "名次", "en": "Rank"},
    "change": {"zh": "较上周", "en": "Change"},
    "subject": {"zh": "考核对象", "en": "Subject"},
    "signed": {"zh": "签约过亿元项目", "en": "Signed ≥ 100M"},
    "export": {"zh": "导出", "en": "Export"},
    "explanation": {"zh": "决策依据", "en": "Decision explanation"},
    "ruleset": {"zh": "规则集", "en": "Ruleset"},
    "matched": {"zh": "命中规则", "en": "Matched rules"},
    "parameters": {"zh": "参数", "en": "Parameters"},
    "deciding": {"zh": "决定性规则", "en": "Deciding rule"},
    "would_change": {"zh": "如何改变", "en": "What would change it"},
    "total": {"zh": "共", "en": "total"},
    "none": {"zh": "无", "en": "none"},
    "thresholds": {"zh": "预警阈值（来自规则集）", "en": "Thresholds (from the rulesets)"},
    "login": {"zh": "请输入看板令牌", "en": "Enter your board token"},
    "dlq": {"zh": "死信", "en": "Dead letters"},
    "failed": {"zh": "发送失败的通知", "en": "Failed notifications"},
    "rulesets": {"zh": "在用规则集", "en": "Rulesets in force"},
    "history": {"zh": "发布记录", "en": "Publication history"},
    "retry": {"zh": "重新投递", "en": "Replay"},
    "withdrawn": {"zh": "项目已撤回", "en": "Project withdrawn"},
    "version": {"zh": "版本", "en": "version"},
    "sent_by": {"zh": "报送方", "en": "sent by"},
    "owner": {"zh": "原报送单位", "en": "reported by"},
    "reason": {"zh": "原因", "en": "reason"},
    "received": {"zh": "收到", "en": "received"},
}


def _lang(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get("lang") or "zh"
    return "en" if lang == "en" else "zh"


def _viewer(request: Request) -> access.Viewer:
    return request.state.viewer  # set by app.authenticate


def _render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    from .app import context

    lang = _lang(request)
    directory = context.directory

    def name(code: str | None) -> str:
        if not code:
            return "—"
        entry = directory.units.get(code) or directory.leaders.get(code)
        if entry is None:
            return code
        return entry.name_zh if lang == "zh" else entry.name_en

    def query_with(**changes: Any) -> str:
        params = dict(request.query_params) | {k: v for k, v in changes.items()}
        return "?" + "&".join(f"{k}={v}" for k, v in params.items() if v not in (None, ""))

    html = env.get_template(template).render(
        lang=lang,
        w=lambda key: WORDS[key][lang],
        stage_label=lambda s: STAGE_LABEL.get(s, {}).get(lang, s),
        light_label=lambda s: LIGHT_LABEL.get(s, {}).get(lang, "—") if s else "—",
        reason_text=lambda r: REASON_WORDS[r["code"]][lang].format(**r),
        name=name,
        viewer=_viewer(request),
        path=request.url.path,
        query_with=query_with,
        money=queries.money_str,
        pct=queries.pct_str,
        dumps=queries.dumps,
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") in ("zh", "en"):
        response.set_cookie("lang", lang, samesite="strict")
    return response


def login_page(request: Request, problem: str, status: int) -> HTMLResponse:
    lang = _lang(request)
    html = env.get_template("login.html.j2").render(
        lang=lang, w=lambda key: WORDS[key][lang], problem=problem, next=request.url.path
    )
    return HTMLResponse(html, status_code=status)


def _read(work: Any) -> Any:
    from .app import engine

    with unit_of_work(engine()) as session:
        return work(session)


async def _in_thread(work: Any) -> Any:
    return await asyncio.to_thread(_read, work)


def register(http: FastAPI) -> None:
    from .app import COOKIE, context, verifier

    http.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @http.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return login_page(request, "", 200)

    @http.post("/login")
    async def login(request: Request) -> Response:
        # A plain urlencoded form, read by hand: no multipart dependency for two fields.
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        token = (form.get("token") or [""])[0]
        next = (form.get("next") or ["/"])[0]
        try:
            verifier.verify(token)
        except access.TokenError as exc:
            return login_page(request, str(exc), 401)
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        response = RedirectResponse(target if target != "/login" else "/", status_code=303)
        response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
        return response

    @http.get("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # --- overview -------------------------------------------------------------------------

    def _overview(request: Request) -> dict[str, Any]:
        from .app import clock_now

        viewer = _viewer(request)

        def work(session: Any) -> dict[str, Any]:
            clock = clock_now(session)
            return queries.overview(
                session, viewer, clock, context.thresholds, context.signing(clock)
            ) | {"version": queries.version(session)}

        return _read(work)

    @http.get("/api/overview")
    async def api_overview(request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(_overview, request))

    @http.get("/", response_class=HTMLResponse)
    async def overview_page(request: Request) -> HTMLResponse:
        data = await asyncio.to_thread(_overview, request)
        lang = _lang(request)
        colours = {"terminated": "#888888", "completed": "#2e7d32"}
        stage_chart = charts.hbars(
            [
                (STAGE_LABEL[s][lang], data["by_stage"][s], colours.get(s, "#b22222"))
                for s in STAGE_KEYS
            ]
        )
        signing_chart = charts.paired_columns(
            [(f"Q{s['quarter']}", s["target"], s["actual"]) for s in data["signings"]],
            (WORDS["plan"][lang], WORDS["actual"][lang]),
        )
        months = sorted({m for by in data["funds_by_unit_month"].values() for m in by})
        return _render(
            request,
            "overview.html.j2",
            d=data,
            stage_chart=stage_chart,
            signing_chart=signing_chart,
            months=months,
            thresholds=context.thresholds,
        )

    @http.get("/api/version")
    async def api_version() -> JSONResponse:
        return JSONResponse({"version": await _in_thread(queries.version)})

    # --- projects -------------------------------------------------------------------------

    def _filters(
        unit: str | None,
        landing_area: str | None,
        stage: str | None,
        light: str | None,
        sponsor: str | None,
        q: str | None,
        page: int,
    ) -> queries.Filters | JSONResponse:
        if stage and stage not in STAGE_KEYS:
            return _problem(
                "stage", f"unknown stage {stage!r}; one of {', '.join(STAGE_KEYS)} / 阶段无效"
            )
        if light and light not in ("red", "yellow", "green"):
            return _problem("light", "one of red, yellow, green / 预警须为红、黄、绿")
        return queries.Filters(
            unit or None,
            landing_area or None,
            stage or None,
            light or None,
            sponsor or None,
            q or None,
            page,
        )

    def _projects(request: Request, f: queries.Filters) -> dict[str, Any]:
        from .app import clock_now

        viewer = _viewer(request)

        def work(session: Any) -> dict[str, Any]:
            clock = clock_now(session)
            return queries.projects(session, viewer, clock, context.thresholds, f) | {
                "clock": clock.isoformat()
            }

        return _read(work)

    @http.get("/api/projects")
    async def api_projects(
        request: Request,
        unit: str | None = None,
        landing_area: str | None = None,
        stage: str | None = None,
        light: str | None = None,
        sponsor: str | None = None,
        q: str | None = None,
        page: int = Query(1, ge=1, le=100000),
    ) -> JSONResponse:
        f = _filters(unit, landing_area, stage, light, sponsor, q, page)
        if isinstance(f, JSONResponse):
            return f
        return JSONResponse(await asyncio.to_thread(_projects, request, f))

    @http.get("/projects", response_class=HTMLResponse)
    async def projects_page(
        request: Request,
        unit: str | None = None,
        landing_area: str | None = None,
        stage: str | None = None,
        light: str | None = None,
        sponsor: str | None = None,
        q: str | None = None,
        page: int = Query(1, ge=1, le=100000),
    ) -> Response:
        f = _filters(unit, landing_area, stage, light, sponsor, q, page)
        if isinstance(f, JSONResponse):
            return f
        data = await asyncio.to_thread(_projects, request, f)
        d = context.directory
        return _render(
            request,
            "projects.html.j2",
            d=data,
            f=f,
            units=[c for c in d.units if c != d.CENTER],
            areas=[c for c in d.units if d.is_landing_area(c)],
            leaders=list(d.leaders),
            stages=STAGE_KEYS,
        )

    def _project(request: Request, project_id: str) -> dict[str, Any] | None:
        from .app import clock_now

        viewer = _viewer(request)

        def work(session: Any) -> dict[str, Any] | None:
            p = session.get(BoardProject, project_id)
            if p is None or not queries.may_see(viewer, p):
                return None
            clock = clock_now(session)
            return queries.project_page(session, p, clock, context.thresholds) | {
                "clock": clock.isoformat()
            }

        return _read(work)

    def _not_found() -> JSONResponse:
        return _problem(
            "project_id", "no such project, or not yours to see / 项目不存在或无权查看", 404
        )

    @http.get("/api/projects/{project_id}")
    async def api_project(request: Request, project_id: str) -> JSONResponse:
        data = await asyncio.to_thread(_project, request, project_id)
        return _not_found() if data is None else JSONResponse(data)

    @http.get("/projects/{project_id}", response_class=HTMLResponse)
    async def project_page(request: Request, project_id: str) -> Response:
        data = await asyncio.to_thread(_project, request, project_id)
        if data is None:
            return _render(request, "missing.html.j2", status=404, project_id=project_id)
        return _render(request, "project.html.j2", d=data, explain=explain)

    # --- red list -------------------------------------------------------------------------

    def _red(request: Request) -> dict[str, Any]:
        from .app import clock_now

        viewer = _viewer(request)

        def work(session: Any) -> dict[str, Any]:
            clock = clock_now(session)
            return {
                "clock": clock.isoformat(),
                "rows": queries.red_list(session, viewer, clock, context.thresholds),
            }

        return _read(work)

    @http.get("/api/red")
    async def api_red(request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(_red, request))

    @http.get("/red", response_class=HTMLResponse)
    async def red_page(request: Request) -> HTMLResponse:
        data = await asyncio.to_thread(_red, request)
        return _render(request, "red.html.j2", d=data, thresholds=context.thresholds)

    # --- ranking --------------------------------------------------------------------------

    def _ranking(request: Request) -> dict[str, Any]:
        from .app import clock_now

        viewer = _viewer(request)

        def work(session: Any) -> dict[str, Any]:
            clock = clock_now(session)
            return queries.ranking(
                session, viewer, clock, context.subjects(), context.signing(clock)
            )

        return _read(work)

    @http.get("/api/ranking")
    async def api_ranking(request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(_ranking, request))

    @http.get("/ranking", response_class=HTMLResponse)
    async def ranking_page(request: Request) -> HTMLResponse:
        return _render(request, "ranking.html.j2", d=await asyncio.to_thread(_ranking, request))

    HEADER = {
        "zh": ["名次", "考核对象", "名称", "得分", "上周名次", "名次变化", "签约过亿元项目"],
        "en": ["rank", "subject", "name", "points", "rank last week", "change", "signed ≥ 100M"],
    }

    def _table(request: Request, data: dict[str, Any]) -> list[list[Any]]:
        lang = _lang(request)
        d = context.directory
        rows: list[list[Any]] = [HEADER[lang]]
        for r in data["rows"]:
            entry = d.units.get(r["subject"]) or d.leaders.get(r["subject"])
            label = (entry.name_zh if lang == "zh" else entry.name_en) if entry else r["subject"]
            rows.append(
                [
                    r["rank"],
                    r["subject"],
                    label,
                    r["points"],
                    r["rank_last_week"],
                    r["change"],
                    r["signed"],
                ]
            )
        return rows

    @http.get("/ranking.csv")
    async def ranking_csv(request: Request) -> Response:
        data = await asyncio.to_thread(_ranking, request)
        buf = io.StringIO()
        csv.writer(buf).writerows(_table(request, data))
        # The BOM lets Excel open a UTF-8 CSV with the Chinese intact.
        return Response(
            "\ufeff" + buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="ranking-{data["clock"]}.csv"'},
        )

    @http.get("/ranking.xlsx")
    async def ranking_xlsx(request: Request) -> Response:
        from decimal import Decimal

        from openpyxl import Workbook

        data = await asyncio.to_thread(_ranking, request)
        book = Workbook()
        sheet = book.active
        sheet.title = "红黑榜" if _lang(request) == "zh" else "Ranking"
        for i, row in enumerate(_table(request, data)):
            sheet.append([Decimal(v) if i and j == 3 else v for j, v in enumerate(row)])
            if i:
                sheet.cell(row=i + 1, column=4).number_format = "0.00"
        sheet.append([])
        sheet.append([WORDS["clock"][_lang(request)], data["clock"]])
        buf = io.BytesIO()
        book.save(buf)
        return Response(
            buf.getvalue(),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": f'attachment; filename="ranking-{data["clock"]}.xlsx"'},
        )

    # --- publication (定期公布) -----------------------------------------------------------

    @http.get("/weekly", response_class=HTMLResponse)
    async def weekly_page(
        request: Request, on: str | None = None, leader: str | None = None
    ) -> Response:
        from .weekly import weekly_html

        viewer = _viewer(request)
        if viewer.role == "unit":
            return _problem(
                "Authorization",
                "the publication is for leaders and the Center / 通报仅限领导与中心",
                403,
            )
        if viewer.role == "leader":
            leader = viewer.code  # a leader's report: their own projects
        try:
            day = dt.date.fromisoformat(on) if on else None
        except ValueError:
            return _problem("on", f"{on!r} is not a date YYYY-MM-DD / 日期格式须为YYYY-MM-DD")
        if leader and leader not in context.directory.leaders:
            return _problem("leader", f"{leader!r} is not a county leader / 不是县级领导")
        html = await asyncio.to_thread(_read, lambda s: weekly_html(s, day, leader, _lang(request)))
        return HTMLResponse(html)

    # --- ops (Center and admin only) ------------------------------------------------------

    def _ops_only(request: Request) -> JSONResponse | None:
        if not _viewer(request).ops:
            return _problem(
                "Authorization",
                "ops pages are for the Center and admin / 运维页面仅限中心与管理员",
                403,
            )
        return None

    @http.get("/ops", response_class=HTMLResponse)
    async def ops_page(request: Request) -> Response:
        refused = _ops_only(request)
        if refused:
            return refused
        from shared.rules.load import load_paths

        from .app import broker, settings

        def work(session: Any) -> dict[str, Any]:
            return {
                "history": queries.ruleset_history(session),
                "failed": queries.failed_notifications(session),
            }

        data = await _in_thread(work)
        try:
            in_force = [(r, f) for r, f in load_paths([settings.rulesets_dir])]
        except Exception as exc:  # a broken file is itself what the page must show
            in_force, data["rules_error"] = [], str(exc)
        letters: list[tuple[int, dict[str, Any]]] = []
        try:
            from investflow.dlq_cli import dead_letters

            assert broker.connection is not None
            letters = await dead_letters(broker.connection.jetstream())  # type: ignore[union-attr]
        except Exception as exc:
            data["dlq_error"] = str(exc)
        return _render(
            request,
            "ops.html.j2",
            d=data,
            in_force=in_force,
            letters=letters[-200:],
            thresholds=context.thresholds,
        )

    @http.post("/ops/dlq/{seq}/replay")
    async def replay(request: Request, seq: int) -> Response:
        refused = _ops_only(request)
        if refused:
            return refused
        from investflow.dlq_cli import dead_letters

        from .app import broker

        assert broker.connection is not None
        js = broker.connection.jetstream()  # type: ignore[union-attr]
        letters = dict(await dead_letters(js))
        if seq not in letters:
            return _problem("seq", f"no dead letter {seq} / 无此死信", 404)
        d = letters[seq]
        headers = {k: v for k, v in d["headers"].items() if k != "Nats-Msg-Id"}
        original = d["headers"].get("Nats-Msg-Id", f"seq{d.get('stream_seq')}")
        headers["Nats-Msg-Id"] = f"{original}:replay:{seq}"
        await js.publish(d["subject"], d["body"].encode(), headers=headers)
        return RedirectResponse("/ops", status_code=303)


def _problem(field: str, problem: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"errors": [{"field": field, "problem": problem}]}, status_code=status)


def explain(item: dict[str, Any], lang: str) -> dict[str, Any] | None:
    """A decision's explanation, worded: ruleset@version, matched, parameters, deciding rule,
    and what would change it (the deciding rule's inputs: its parameters and the facts)."""
    e = item.get("explanation")
    if not isinstance(e, dict):
        return None
    params = e.get("parameters") or {}
    deciding = e.get("deciding_rule")
    if deciding:
        change = (
            f"决定性规则 {deciding}：改变其所用参数（{', '.join(params) or '无'}）或项目事实，结论才会改变。"
            if lang == "zh"
            else f"Deciding rule {deciding}: only a change to its parameters ({', '.join(params) or 'none'}) "
            "or to the project's facts changes the outcome."
        )
    else:
        change = (
            "没有规则决定结论（默认结果）；命中某条规则才会改变。"
            if lang == "zh"
            else "No rule decided it (the default); a rule matching would change it."
        )
    return {
        "ruleset": f"{e.get('ruleset_id')}@{e.get('version')}",
        "matched": e.get("matched") or [],
        "parameters": json.dumps(params, ensure_ascii=False, sort_keys=True)[:2000],
        "deciding_rule": deciding,
        "would_change": change,
    }


__all__ = ["explain", "loads", "login_page", "register"]
