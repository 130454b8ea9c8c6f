"""Time triggers and the weekly report, on an injectable clock.

`Scheduler.tick()` evaluates every day from the day after the last one it evaluated up to
"today" (at most `catch_up_days` back), so a late tick or a clock that jumps never skips a
period, and plans what is due; every report weekday since the last tick (however far back)
gets its weekly report, once. The cause keys carry the period, so ticking again changes
nothing. "Today" comes from a clock:

- `WallClock` (NOTIFY_CLOCK=wall, the default for a running county system): the date in
  Asia/Shanghai.
- `BusinessClock` (NOTIFY_CLOCK=business, for the demo and replays of a past year): the
  latest business date seen in the events (a visit's, milestone's, funds', lead's or rates'
  own date) minus one day, since events arrive in date order and that day is complete.
Tests pass a plain function.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import Session

from shared.db import unit_of_work
from shared.directory import Directory

from . import facts, store
from .contacts import recipients
from .dispatch import utcnow
from .model import Alert, Snapshot
from .params import Params, params_in_force, signing_targets, targets_in_force
from .plan import plan
from .render import Renderer
from .report import build_report, chart_png, render_html
from .triggers import time_alerts

log = logging.getLogger("investflow.notify")
LAST_DAY = "scheduler_last_day"
WEEKLY_LAST_DAY = "scheduler_weekly_last_day"  # the last day whose weekly reports are planned
COUNTY = "county"


class WallClock:
    def __init__(self, tz: str = "Asia/Shanghai") -> None:
        self.tz = ZoneInfo(tz)

    def __call__(self) -> dt.date | None:
        return dt.datetime.now(self.tz).date()


class BusinessClock:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self) -> dt.date | None:
        with Session(self.engine) as session:
            latest = facts.business_date(session)
        return latest - dt.timedelta(days=1) if latest else None


class Scheduler:
    """`params`: fixed thresholds (NOTIFY_TRIGGERS, tests), or None to judge each day with the
    notify version `rules` has in force on it — the registry that follows the published
    rulesets, so `investflow rules publish` of a notify version decides from the next tick."""

    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        directory: Directory,
        params: Params | None,
        rulesets_dir: Path,
        today: Callable[[], dt.date | None],
        *,
        now: Callable[[], dt.datetime] = utcnow,
        catch_up_days: int = 31,
        rules: Any = None,
    ) -> None:
        if params is None and rules is None:
            raise ValueError("a Scheduler needs fixed params or a rules registry")
        self.engine = engine
        self.renderer = renderer
        self.directory = directory
        self.fixed = params
        self.rules = rules
        self.rulesets_dir = rulesets_dir
        self.today = today
        self.now = now
        self.catch_up_days = catch_up_days
        self._rulesets: list[Any] | None = None

    def params_on(self, day: dt.date) -> Params:
        if self.fixed is not None:
            return self.fixed
        return params_in_force(self.rules, day)

    def targets(self, day: dt.date) -> dict[str, int] | None:
        if self.rules is not None:
            return targets_in_force(self.rules, day)
        return signing_targets(self.rulesets_dir, day)

    def scoring_parameter(self, name: str, day: dt.date, default: Any) -> Any:
        """A parameter of the scoring ruleset in force on `day` (the one place policy numbers
        such as the signing threshold live), else `default`."""
        if self.rules is not None:  # the published versions, as scoring decides with them
            try:
                param = self.rules.in_force("scoring", day).parameters.get(name)
            except LookupError:
                return default
            return param.value if param is not None else default
        if self._rulesets is None:  # loaded once: validating them costs more than a report
            from shared.rules.load import load_paths

            self._rulesets = [r for r, _ in load_paths([self.rulesets_dir])]
        for ruleset in self._rulesets:
            if ruleset.id == "scoring" and ruleset.effective.covers(day):
                param = ruleset.parameters.get(name)
                return param.value if param is not None else default
        return default

    def tick(self) -> int:
        """Plan everything due up to today; returns how many notifications are new."""
        today = self.today()
        if today is None:
            return 0
        with unit_of_work(self.engine) as session:
            last = store.get_state(session, LAST_DAY)
            first = today - dt.timedelta(days=self.catch_up_days - 1)
            if last is not None:
                first = max(first, dt.date.fromisoformat(last) + dt.timedelta(days=1))
            if first > today:
                return 0
            snapshot = facts.load_snapshot(session)
            alerts: list[Alert] = []
            day = first
            while day <= today:
                alerts.extend(time_alerts(snapshot, day, self.params_on(day), self.targets))
                day += dt.timedelta(days=1)
            new = plan(session, alerts, self.renderer, self.now())
            store.set_state(session, LAST_DAY, today.isoformat())
            weekly_last = store.get_state(session, WEEKLY_LAST_DAY) or last
        # Every report day since the last one planned gets its report, once (the cause key):
        # a clock that jumps, or a service that was down, skips none of them. One short
        # transaction each: charts are drawn before the write, so consumers are not kept
        # waiting on the database meanwhile.
        since = dt.date.fromisoformat(weekly_last) + dt.timedelta(days=1) if weekly_last else today
        days = self.report_days(since, today)
        for on in days:
            with unit_of_work(self.engine) as session:
                # Drawing charts is most of a report's cost: a report caught up for a past
                # week goes out without one, the latest week's with it.
                new += self._weekly(session, snapshot, on, chart=on == days[-1])
                if on >= since:  # a crash after this resumes with the next report day
                    store.set_state(session, WEEKLY_LAST_DAY, on.isoformat())
        with unit_of_work(self.engine) as session:
            store.set_state(session, WEEKLY_LAST_DAY, today.isoformat())
        return new

    def report_days(self, first: dt.date, today: dt.date) -> list[dt.date]:
        """The report weekdays in [first, today], and the latest one on or before `today`."""
        days = {self.report_day(today)}
        day = self.report_day(first)
        if day < first:
            day += dt.timedelta(days=7)
        while day <= today:
            days.add(day)
            day += dt.timedelta(days=7)
        return sorted(days)

    # --- 挂图作战，定期公布 ---

    def report_day(self, today: dt.date) -> dt.date:
        """The latest report weekday on or before `today`."""
        back = (today.weekday() - self.params_on(today).weekly_report.weekday_index) % 7
        return today - dt.timedelta(days=back)

    def report(self, snapshot: Snapshot, on: dt.date, leader: str | None) -> dict[str, Any]:
        params = self.params_on(on)
        return build_report(
            snapshot,
            on,
            self.directory,
            self.targets,
            leader=leader,
            overdue_days=params.visit_overdue_days,
            min_signing=int(
                self.scoring_parameter("signing_min_amount", on, params.signing_behind.min_amount)
            ),
            rate_definitions=self.scoring_parameter("rate_definitions", on, None),
            fast_start_days=params.weekly_report.fast_start_days,
        )

    def _weekly(
        self, session: Session, snapshot: Snapshot, on: dt.date, *, chart: bool = True
    ) -> int:
        """Plan the report of report day `on` (nothing when planned before)."""
        as_of = on - dt.timedelta(days=1)
        if not any(p.reported_on <= as_of for p in snapshot.projects.values()):
            return 0
        audiences: dict[str, tuple[str, ...]] = {
            COUNTY: tuple(self.params_on(on).weekly_report.county_wide_to)
        }
        for p in snapshot.projects.values():
            if p.sponsor_leader and p.sponsored(as_of):
                audiences[p.sponsor_leader] = (p.sponsor_leader,)
        causes = {who: f"weekly_report:{on}:{who}" for who in audiences}
        done = {c for c, _, _ in store.existing_keys(session, list(causes.values()))}
        alerts, extra = [], {}
        for who, to in sorted(audiences.items()):
            cause = causes[who]
            if cause in done:
                continue
            report = self.report(snapshot, on, None if who == COUNTY else who)
            alerts.append(Alert(cause, "weekly_report", to, None, {"r": report}))
            people = recipients(session, to)
            for lang in sorted({people[c].language for c in to}):
                png = chart_png(report, self.renderer, lang) if chart else None
                html = render_html(self.renderer, report, lang, "cid:chart" if chart else "")
                for code in to:
                    extra[f"{cause}|{code}|{lang}"] = {"html": html, "image": png}
        return plan(session, alerts, self.renderer, self.now(), extra)
