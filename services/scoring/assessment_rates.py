"""score.rates: the three rates (履约率、落地率、资金到位率, 实施方案·三（三）) of every assessment
year with signings, per project, attracting unit and county, published when they change.

The figures are the scoreboard's (`scoreboard.read_assessment`, the reading GET
/v1/scoreboard shows), so the two never disagree; what they count is the scoring ruleset's
`rate_definitions`, carried in each event with the ruleset's id and version. Other services
(the board) hold them from these events and never read scoring's tables.

Recomputing reads every fact of the year, so it is not done per message: the app marks the
rates stale after each run of messages and `publish_changes` runs at most once per
SCORING_RATES_INTERVAL seconds (default 1). A revision goes out only when a figure changed:
county and unit figures whole, project figures only where they differ from the last
revision (`scoring_rates_project`), at most PART_SIZE projects per message. Message ids are
`score.rates:<year>:<revision>:<part>`; replicas racing on a revision collide on them (the
outbox's key), and the loser's retry finds the figures already published.

The year is read CHUNK projects at a time (a range of project ids, the same range in every
table), never whole: the rates of a project depend on its own facts alone, and the unit and
county figures are their sums. Reading the whole year each second made the scoring process's
memory the size of the year's facts (≈ 50 MB per 1,000 leads; docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from shared import subjects
from shared.contract import AssessmentRates, Explanation, RateDefinitions, RateFigures
from shared.rules import Rules

from . import store
from .assessment import RULESET, Rates, assess, parameter

PART_SIZE = 500  # project figures per message: ~300 bytes each, well under NATS's 1 MB
CHUNK = 200  # projects whose facts are held at once while the rates are computed


def figures(r: Rates) -> dict[str, Any]:
    """RateFigures as JSON: the scoreboard's own rendering of the same Rates."""
    return RateFigures.model_validate(r.to_json()).model_dump(mode="json")


def definitions(rules: Rules | None, year: int) -> tuple[RateDefinitions, Explanation]:
    """What the rates count in `year`, and the ruleset version that says so."""
    start = dt.date(year, 1, 1)
    value = parameter(rules, "rate_definitions", start)
    try:
        ruleset = rules.in_force(RULESET, start) if rules is not None else None
    except LookupError:
        ruleset = None
    param = ruleset.parameters.get("rate_definitions") if ruleset is not None else None
    defs = RateDefinitions(
        performance=[str(m) for m in value.get("performance", [])],
        landing=[str(m) for m in value.get("landing", [])],
        description=(
            {"zh": param.description.zh, "en": param.description.en}
            if param is not None
            else {
                "zh": "无生效的考核规则集，按默认口径计算",
                "en": "no scoring ruleset in force: the documented defaults",
            }
        ),
        reference=param.reference if param is not None else None,
    )
    explanation = Explanation(
        ruleset_id=RULESET,
        version=ruleset.version if ruleset is not None else "defaults",
        matched=[],
        parameters={"rate_definitions": value, "year": year},
        deciding_rule=None,
    )
    return defs, explanation


def years(session: Session) -> list[int]:
    """Every year with a signing, and every year published before (its figures may drop)."""
    lo, hi = session.exec(
        select(func.min(store.Signing.signed_on), func.max(store.Signing.signed_on))
    ).one()
    out = set(range(lo.year, hi.year + 1)) if lo is not None and hi is not None else set()
    out |= set(session.exec(select(store.RatesYear.year)).all())
    return sorted(out)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


Range = tuple[str | None, str | None]  # project ids (lo, hi]; None: unbounded


def ranges(session: Session, size: int | None = None) -> Iterator[Range]:
    """Consecutive ranges of project ids, `size` projects each, covering every id (also ids
    with facts but no project row): the first starts unbounded, the last ends so."""
    size = size or CHUNK
    lo: str | None = None
    while True:
        query = select(store.Project.project_id).order_by(col(store.Project.project_id))
        if lo is not None:
            query = query.where(col(store.Project.project_id) > lo)
        hi = session.exec(query.offset(size - 1).limit(1)).first()
        yield lo, hi
        if hi is None:
            return
        lo = hi


def _within(column: Any, r: Range) -> list[Any]:
    lo, hi = r
    return [
        c
        for c in (column > lo if lo is not None else None, column <= hi if hi is not None else None)
        if c is not None
    ]


@dataclass
class YearRates:
    """The rates of a year: county and units whole, projects one range at a time."""

    county: Rates = field(default_factory=Rates)
    units: dict[str, Rates] = field(default_factory=dict)

    def add(self, unit_rates: dict[str, Rates], county: Rates) -> None:
        self.county.add(county)
        for unit, r in unit_rates.items():
            self.units.setdefault(unit, Rates()).add(r)


def project_rates(
    session: Session,
    year: int,
    rules: Rules | None,
    r: Range,
    rates: dict[tuple[dt.date, str], Any],
    total: YearRates,
) -> dict[str, Rates]:
    """The rates of the projects in range `r`, as the scoreboard's reading computes them
    (`assess`, on that range's facts alone); their unit and county sums go into `total`."""
    a = assess(
        year,
        session.exec(select(store.Project).where(*_within(col(store.Project.project_id), r))).all(),
        session.exec(select(store.Signing).where(*_within(col(store.Signing.project_id), r))).all(),
        session.exec(
            select(store.Milestone).where(*_within(col(store.Milestone.project_id), r))
        ).all(),
        session.exec(
            select(store.FundsRecord).where(*_within(col(store.FundsRecord.project_id), r))
        ).all(),
        rates,
        rules,
    )
    total.add(a.unit_rates, a.county_rates)
    return a.project_rates


def exchange_rates(session: Session) -> dict[tuple[dt.date, str], Any]:
    return {
        (r.on, r.currency): r.rate
        for r in session.exec(select(store.Rate)).all()
        if r.rate is not None
    }


def settle_year(
    session: Session, year: int, rules: Rules | None, chunk: int | None = None
) -> list[store.Outbox]:
    """The outbox rows of `year`'s next revision, written with its state; [] if unchanged."""
    defs, explanation = definitions(rules, year)
    rates = exchange_rates(session)
    total = YearRates()
    changed: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    projects = 0
    for r in ranges(session, chunk):
        by_range = {
            p: figures(x) for p, x in project_rates(session, year, rules, r, rates, total).items()
        }
        projects += len(by_range)
        before = dict(
            session.exec(
                select(store.RatesProject.project_id, store.RatesProject.figures).where(
                    col(store.RatesProject.year) == year,
                    *_within(col(store.RatesProject.project_id), r),
                )
            ).all()
        )
        changed.update(
            (p, f) for p, f in by_range.items() if before.get(p) != json.dumps(f, sort_keys=True)
        )
        dropped.extend(set(before) - set(by_range))
    changed = dict(sorted(changed.items()))
    dropped.sort()
    county = figures(total.county)
    by_unit = {u: figures(x) for u, x in sorted(total.units.items())}
    head = {
        "county": county,
        "by_unit": by_unit,
        "definitions": defs.model_dump(mode="json"),
        "explanation": explanation.model_dump(mode="json"),
    }
    digest = _digest(head)
    state = session.get(store.RatesYear, year) or store.RatesYear(year=year)
    if state.revision and digest == state.digest and not changed and not dropped:
        return []
    if not state.revision and not projects and not dropped:
        return []  # nothing signed that year and nothing published: nothing to say
    state.revision += 1
    state.digest = digest
    session.add(state)
    for pid, f in changed.items():
        row = session.get(store.RatesProject, (year, pid)) or store.RatesProject(
            year=year, project_id=pid, figures=""
        )
        row.figures = json.dumps(f, sort_keys=True)
        session.add(row)
    if dropped:
        session.exec(  # type: ignore[call-overload]
            delete(store.RatesProject).where(
                col(store.RatesProject.year) == year,
                col(store.RatesProject.project_id).in_(dropped),
            )
        )
    items = list(changed.items())
    parts = max(1, -(-len(items) // PART_SIZE))
    rows = []
    for i in range(parts):
        event = AssessmentRates(
            year=year,
            revision=state.revision,
            part=i + 1,
            parts=parts,
            county=RateFigures.model_validate(county),
            by_unit={u: RateFigures.model_validate(f) for u, f in by_unit.items()},
            by_project={
                p: RateFigures.model_validate(f)
                for p, f in items[i * PART_SIZE : (i + 1) * PART_SIZE]
            },
            dropped=dropped if i == 0 else [],
            projects=projects,
            definitions=defs,
            explanation=explanation,
        )
        row = store.Outbox(
            msg_id=f"{subjects.SCORE_RATES}:{year}:{state.revision}:{i + 1}",
            source=f"rates:{year}:{state.revision}",
            subject=subjects.keyed(subjects.SCORE_RATES, year),  # a year's parts in order
            body=event.model_dump_json(),
        )
        store.add_outbox(session, row)
        rows.append(row)
    return rows


def settle(session: Session, rules: Rules | None) -> list[store.Outbox]:
    """Every year's next revision where its rates changed."""
    rows: list[store.Outbox] = []
    for year in years(session):
        rows += settle_year(session, year, rules)
    return rows
