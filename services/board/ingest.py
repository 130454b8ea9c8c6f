"""Storing consumed events into the board's tables, in one transaction per run of messages.

An event already stored (same stream and sequence: a redelivery) changes nothing. Events
the board cannot use (no project, an unknown kind) are kept in the timeline table only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from shared import subjects
from shared.contract.events import NotInContract, check_event

from . import readmodel as rm
from .store import (
    BoardCount,
    BoardDayCount,
    BoardEvent,
    BoardFunds,
    BoardFundsMonth,
    BoardMeeting,
    BoardNotification,
    BoardPoints,
    BoardProject,
    BoardRates,
    BoardRatesYear,
    BoardRuleset,
    BoardState,
)

AMENDMENTS = (subjects.canonical("correction"), subjects.canonical("withdrawal"))
CHECKED = (subjects.SCORE_RATES, *AMENDMENTS, subjects.canonical("claim"))


class BadEvent(ValueError):
    """Not JSON, or not an object: dead-lettered with this reason."""


@dataclass(frozen=True)
class Item:
    stream: str
    seq: int
    subject: str
    event: dict[str, Any]
    raw: str


def parse(stream: str, seq: int, subject: str, data: bytes) -> Item:
    try:
        raw = data.decode("utf-8")
        event = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadEvent(f"$: not JSON ({exc}) / 不是合法的JSON") from exc
    if not isinstance(event, dict):
        raise BadEvent("$: expected a JSON object / 须为JSON对象")
    if subject in CHECKED:
        # County-wide figures, and amendments, replace what the board holds: only a whole,
        # valid one may.
        try:
            check_event(subject, data)
        except NotInContract as exc:
            raise BadEvent(f"{exc} / 不符合 {subject} 事件约定") from exc
    return Item(stream, seq, subject, event, raw)


_EVENTS = BoardEvent.__table__  # type: ignore[attr-defined]
_NOTIFICATIONS = BoardNotification.__table__  # type: ignore[attr-defined]


class _Rows:
    """The batch's project and funds rows, loaded in one query each: one SELECT per event
    (with its autoflush) made the sample year take 30 s to store."""

    def __init__(self, session: Session, items: list[Item], t: rm.Thresholds) -> None:
        ids = sorted(
            {i.event.get("project_id") for i in items if isinstance(i.event.get("project_id"), str)}
        )
        self.t = t
        self.projects: dict[str, BoardProject] = {}
        # Each project's tally key as loaded (none: new): the counts move by the change.
        self.tallied: dict[str, rm.TallyKey] = {}
        self.funds: dict[tuple[str, str], BoardFunds] = {}
        # Each funds row's (unit, month, fen, held) as loaded: the sums move by the change.
        self.before: dict[tuple[str, str], tuple[str, str, int, bool]] = {}
        self.meetings: dict[str, BoardMeeting] = {}  # met in this batch (not flushed yet)
        # Each funds record's points rows, the batch's new ones too: one SELECT per funds and
        # score event was a sixth of the board's busy time (docs/profiles/board.md).
        self.points: dict[tuple[str, str], list[BoardPoints]] = {}
        # Timeline and notification rows, inserted with one executemany each (`write`): an
        # ORM instance per message only to insert it cost more than the INSERT.
        self.events: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            for p in session.exec(
                select(BoardProject).where(col(BoardProject.project_id).in_(part))
            ):
                self.track(p)
            for f in session.exec(select(BoardFunds).where(col(BoardFunds.project_id).in_(part))):
                self.funds[(f.project_id, f.funds_id)] = f
                self.before[(f.project_id, f.funds_id)] = _funds_key(f)
            for row in session.exec(
                select(BoardPoints)
                .where(col(BoardPoints.project_id).in_(part))
                .order_by(col(BoardPoints.id))
            ):
                self.points.setdefault((row.project_id, row.funds_id), []).append(row)

    def points_of(self, project_id: str, funds_id: str) -> list[BoardPoints]:
        return self.points.get((project_id, funds_id), [])

    def write(self, session: Session) -> None:
        """The timeline and notification rows so far, in the order they came."""
        for table, rows in ((_EVENTS, self.events), (_NOTIFICATIONS, self.notifications)):
            if rows:
                session.connection().execute(insert(table), rows)
                rows.clear()

    def track(self, p: BoardProject) -> BoardProject:
        """`p` as stored, before this batch changes it; the batch's own row if it has one."""
        mine = self.projects.setdefault(p.project_id, p)
        if mine is p and p.project_id not in self.tallied:
            self.tallied[p.project_id] = rm.tally_key(p, self.t)
        return mine


def _funds_key(f: BoardFunds) -> tuple[str, str, int, bool]:
    if f.withdrawn:  # 撤回: neither in place nor held
        return (f.unit, f.month, 0, False)
    return (f.unit, f.month, f.rmb_fen or 0, f.state == "held")


def _project(session: Session, project_id: str, rows: _Rows) -> BoardProject:
    p = rows.projects.get(project_id)
    if p is None:
        p = BoardProject(project_id=project_id)
        rows.projects[project_id] = p
        session.add(p)
    return p


def _funds(session: Session, project_id: str, funds_id: str, rows: _Rows) -> BoardFunds:
    f = rows.funds.get((project_id, funds_id))
    if f is None:
        f = BoardFunds(project_id=project_id, funds_id=funds_id)
        p = rows.projects.get(project_id)
        f.withdrawn = bool(p is not None and p.withdrawn)  # a withdrawn project's record
        rows.funds[(project_id, funds_id)] = f
        session.add(f)
    return f


def _months(session: Session, rows: _Rows) -> None:
    """Move board_funds_month by what this batch changed in each funds row."""
    delta: dict[tuple[str, str], list[int]] = {}
    held: dict[str, int] = {}
    for key, f in rows.funds.items():
        old = rows.before.get(key, ("", "", 0, False))
        new = _funds_key(f)
        if old == new:
            continue
        for (unit, month, fen, is_held), sign in ((old, -1), (new, 1)):
            if unit and month and fen:
                d = delta.setdefault((unit, month), [0, 0])
                d[0] += sign * fen
                d[1] += sign
            if is_held:
                held[unit] = held.get(unit, 0) + sign
        rows.before[key] = new
    for (unit, month), (fen, n) in delta.items():
        row = session.get(BoardFundsMonth, (unit, month)) or BoardFundsMonth(unit=unit, month=month)
        row.rmb_fen += fen
        row.records += n
        session.add(row)
    _add_counts(session, {(unit, HELD): n for unit, n in held.items()}, {})


HELD = "funds.held"


def _stage_key(stage: str) -> str:
    return f"stage.{stage}"


def _tallies(session: Session, rows: _Rows) -> None:
    """Move board_count / board_day_count by what this batch changed in each project."""
    counts: dict[tuple[str, str], int] = {}
    days: dict[tuple[str, str, dt.date], int] = {}
    for pid, p in rows.projects.items():
        old = rows.tallied.get(pid)
        new = rm.tally_key(p, rows.t)
        if old == new:
            continue
        for key, sign in ((old, -1), (new, 1)):
            if key is None:
                continue
            unit, stage, yellow_on, red_on, signed_on = key
            c = (unit, _stage_key(stage))
            counts[c] = counts.get(c, 0) + sign
            for kind, day in (("yellow", yellow_on), ("red", red_on), ("signed", signed_on)):
                if day is not None:
                    days[(unit, kind, day)] = days.get((unit, kind, day), 0) + sign
        rows.tallied[pid] = new
    _add_counts(session, counts, days)


def _add_counts(
    session: Session,
    counts: dict[tuple[str, str], int],
    days: dict[tuple[str, str, dt.date], int],
) -> None:
    for (unit, key), n in counts.items():
        if n:
            row = session.get(BoardCount, (unit, key)) or BoardCount(unit=unit, key=key)
            row.n += n
            session.add(row)
    for (unit, kind, day), n in days.items():
        if n:
            d = session.get(BoardDayCount, (unit, kind, day))
            d = d or BoardDayCount(unit=unit, kind=kind, day=day)
            d.n += n
            session.add(d)


def relight_all(session: Session, t: rm.Thresholds) -> int:
    """Recompute every active project's first yellow and red days (a threshold changed),
    then the counts the overview reads (they depend on those days and the signing threshold)."""
    n = 0
    for p in session.exec(select(BoardProject).where(col(BoardProject.stage).not_in(rm.INACTIVE))):
        before = (p.yellow_on, p.red_on)
        rm.relight(p, t)
        if (p.yellow_on, p.red_on) != before:
            session.add(p)
            n += 1
    basis = _basis(t)
    if n or (session.get(BoardState, "tally_basis") or BoardState(key="")).value != basis:
        session.flush()
        rebuild_tallies(session, t)
    return n


def _basis(t: rm.Thresholds) -> str:
    """What the counts were built with: other thresholds (or a board without them) rebuild."""
    return json.dumps({k: v for k, v in t.as_json().items() if k != "source"}, sort_keys=True)


def rebuild_tallies(session: Session, t: rm.Thresholds) -> None:
    """board_count and board_day_count from board_project and board_funds, in SQL (a
    threshold changed, a board from before the counts, tables filled in bulk)."""
    from sqlalchemy import delete, func

    P = BoardProject
    session.exec(delete(BoardCount))  # type: ignore[call-overload]
    session.exec(delete(BoardDayCount))  # type: ignore[call-overload]
    for unit, stage, n in session.exec(
        select(P.attracting_unit, P.stage, func.count()).group_by(P.attracting_unit, P.stage)
    ).all():
        session.add(BoardCount(unit=unit, key=_stage_key(stage), n=int(n)))
    for unit, n in session.exec(
        select(BoardFunds.unit, func.count())
        .where(col(BoardFunds.state) == "held", col(BoardFunds.withdrawn).is_(False))
        .group_by(BoardFunds.unit)
    ).all():
        session.add(BoardCount(unit=unit, key=HELD, n=int(n)))
    signed = col(P.signed_fen) >= t.signing_min * 100
    for kind, column, where in (
        ("yellow", col(P.yellow_on), None),
        ("red", col(P.red_on), None),
        ("signed", col(P.signed_on), signed),
    ):
        query = select(P.attracting_unit, column, func.count()).where(column.is_not(None))
        if where is not None:
            query = query.where(where)
        for unit, day, n in session.exec(query.group_by(P.attracting_unit, column)).all():
            session.add(BoardDayCount(unit=unit, kind=kind, day=day, n=int(n)))
    _set_state(session, "tally_basis", _basis(t))


def rebuild_months(session: Session) -> None:
    """board_funds_month from board_funds (a repair, and for tables filled in bulk)."""
    from sqlalchemy import delete, func

    session.exec(delete(BoardFundsMonth))  # type: ignore[call-overload]
    for unit, month, fen, n in session.exec(
        select(BoardFunds.unit, BoardFunds.month, func.sum(BoardFunds.rmb_fen), func.count())
        .where(
            col(BoardFunds.rmb_fen).is_not(None),
            col(BoardFunds.withdrawn).is_(False),
            col(BoardFunds.unit) != "",
            col(BoardFunds.month) != "",
        )
        .group_by(BoardFunds.unit, BoardFunds.month)
    ).all():
        session.add(BoardFundsMonth(unit=unit, month=month, rmb_fen=int(fen or 0), records=int(n)))


def _set_state(session: Session, key: str, value: str) -> None:
    row = session.get(BoardState, key)
    if row is None:
        session.add(BoardState(key=key, value=value))
    else:
        row.value = value
        session.add(row)


def ingest(session: Session, items: list[Item], t: rm.Thresholds | None = None) -> int:
    """Store `items` in order; returns how many were new. `t`: the thresholds the lights'
    first yellow and red days are computed with (default: the parameters file in force)."""
    t = t or rm.Thresholds.load()
    if not items:
        return 0
    seen: set[tuple[str, int]] = set()
    for stream in {i.stream for i in items}:
        seqs = [i.seq for i in items if i.stream == stream]
        seen |= {
            (stream, q)
            for q in session.exec(
                select(BoardEvent.seq).where(
                    col(BoardEvent.stream) == stream,
                    col(BoardEvent.seq) >= min(seqs),
                    col(BoardEvent.seq) <= max(seqs),
                )
            ).all()
        }
    rows = _Rows(session, items, t)
    # Held till the end of the batch (the identity map keeps an unchanged row only weakly,
    # so each later look-up read it again).
    states = {
        s.key: s
        for s in session.exec(
            select(BoardState).where(col(BoardState.key).in_(("clock", "version")))
        )
    }
    clock = rm.parse_day((states.get("clock") or BoardState(key="")).value)
    new = 0
    for item in items:
        if (item.stream, item.seq) in seen:
            continue
        seen.add((item.stream, item.seq))
        new += 1
        day = rm.business_day(item.subject, item.event)
        if day is not None and (clock is None or day > clock):
            clock = day
        project_id = item.event.get("project_id")
        rows.events.append(
            {
                "stream": item.stream,
                "seq": item.seq,
                "subject": item.subject,
                "project_id": project_id if isinstance(project_id, str) else None,
                "day": day,
                "body": item.raw,
            }
        )
        with session.no_autoflush:
            _apply(session, item, clock, rows)
    rows.write(session)
    for p in rows.projects.values():
        rm.relight(p, t)
    _months(session, rows)
    _tallies(session, rows)
    if new:
        if clock is not None:
            _put_state(session, states, "clock", clock.isoformat())
        version = int((states.get("version") or BoardState(key="", value="0")).value)
        _put_state(session, states, "version", str(version + 1))
    return new


def _put_state(session: Session, states: dict[str, BoardState], key: str, value: str) -> None:
    row = states.get(key)
    if row is None:
        row = states[key] = BoardState(key=key, value=value)
    row.value = value
    session.add(row)


def _apply(session: Session, item: Item, clock: dt.date | None, rows: _Rows) -> None:
    subject, event = item.subject, item.event
    family = subject.split(".", 1)[0]
    pid = event.get("project_id")
    if subject == "project.meeting":
        data = event.get("data") or {}
        meeting_id = str(data.get("meeting_id"))
        meeting = rows.meetings.get(meeting_id) or session.get(BoardMeeting, meeting_id)
        on = rm.parse_day(data.get("on"))
        if on is not None:
            if meeting is None:
                meeting = BoardMeeting(meeting_id=meeting_id, on=on)
            rows.meetings[meeting_id] = meeting
            meeting.on = on
            meeting.agenda = json.dumps(data.get("agenda") or [])
            session.add(meeting)
            # A decision seen before its meeting: its date arrives now.
            for p in session.exec(
                select(BoardProject).where(
                    col(BoardProject.meeting_id) == meeting.meeting_id,
                    col(BoardProject.decided_on).is_(None),
                )
            ).all():
                p = rows.track(p)
                p.decided_on = on
                rm.derive(p)
                session.add(p)
        return
    if family == "notify":
        rows.notifications.append(
            {
                "project_id": pid if isinstance(pid, str) else None,
                "ok": subject == "notify.sent",
                "cause": str(event.get("cause", "")),
                "recipient": str(event.get("recipient", "")),
                "channel": str(event.get("channel", "")),
                "attempts": int(event.get("attempts") or 0),
                "error": event.get("error"),
                "day": clock,
            }
        )
        return
    if subject == subjects.SCORE_RATES:
        apply_rates(session, event)
        return
    if not isinstance(pid, str) or not pid:
        return  # exchange rates and other county-wide facts: timeline table only
    if subject in AMENDMENTS:
        _amend(session, item, rows)
        return
    if family == "project":
        meeting_day = None
        if subject == "project.decision":
            meeting_id = str((event.get("data") or {}).get("meeting_id"))
            # A meeting earlier in this batch is not flushed yet (no_autoflush): look here first.
            meeting = rows.meetings.get(meeting_id) or session.get(BoardMeeting, meeting_id)
            meeting_day = meeting.on if meeting else clock
        p = _project(session, pid, rows)
        rm.apply_project_event(p, subject, event, meeting_day)
        if subject == subjects.canonical("claim") and event.get("released") == pid:
            p.duplicate_of = None  # the Center assigned the project to this held report
        session.add(p)
        if subject == "project.funds":
            data = event.get("data") or {}
            f = _funds(session, pid, str(data.get("funds_id")), rows)
            rm.apply_funds_arrived(f, event, p.attracting_unit)
            session.add(f)
            for row in rows.points_of(pid, f.funds_id):
                row.arrived_on = f.arrived_on
                session.add(row)
    elif family == "review":
        p = _project(session, pid, rows)
        rm.apply_review_event(p, subject, event)
        session.add(p)
    elif family == "score":
        f = _funds(session, pid, str(event.get("funds_id")), rows)
        if subject == "score.reversed" or subject == "score.credited":
            for row in rows.points_of(pid, f.funds_id):
                if row.active:
                    # A reversal takes the credit back; a new credit replaces the old one.
                    row.active = False
                    session.add(row)
        rm.apply_score_event(f, subject, event)
        session.add(f)
        if subject == "score.credited":
            fen = rm.to_fen(event.get("points"))
            for code in event.get("credited_to") or []:
                row = BoardPoints(
                    project_id=pid,
                    funds_id=f.funds_id,
                    subject=str(code),
                    points_fen=fen,
                    year=int(event.get("year") or 0),
                    quarter=int(event.get("quarter") or 0),
                    arrived_on=f.arrived_on,
                )
                rows.points.setdefault((pid, f.funds_id), []).append(row)
                session.add(row)


def _amend(session: Session, item: Item, rows: _Rows) -> None:
    """project.correction / project.withdrawal (validated by `parse`): the record as it now
    stands replaces what the board folded from it; a withdrawn record no longer counts."""
    event = item.event
    pid = str(event["project_id"])
    target = (event.get("data") or {}).get("target") or {}
    kind = target.get("kind")
    withdrawn = item.subject == subjects.canonical("withdrawal")
    p = _project(session, pid, rows)
    p.events += 1
    if kind == "lead":
        if withdrawn:
            p.withdrawn = True
            p.withdrawn_reason = str((event.get("data") or {}).get("reason") or "")
            for (owner, _), f in rows.funds.items():
                if owner == pid:  # a withdrawn project's funds count no more
                    f.withdrawn = True
                    session.add(f)
        else:
            rm.fold_lead(p, event.get("after") or {}, "")
        rm.derive(p)
    elif kind == "funds":
        f = _funds(session, pid, str(target.get("funds_id")), rows)
        if withdrawn:
            f.withdrawn = True
        else:
            rm.funds_corrected(f, event.get("after") or {}, p.attracting_unit)
            for row in rows.points_of(pid, f.funds_id):
                row.arrived_on = f.arrived_on
                session.add(row)
        session.add(f)
        rm.refold_funds_days(p, [g for (owner, _), g in rows.funds.items() if owner == pid])
    elif kind == "milestone":
        # Milestones have no id and are folded into dates: fold them again, from the
        # project's PROJECT events as stored (this batch's too: written and flushed first).
        rows.write(session)
        session.flush()
        stored = session.exec(
            select(BoardEvent.subject, BoardEvent.body)
            .where(
                col(BoardEvent.project_id) == pid,
                col(BoardEvent.stream) == item.stream,
                col(BoardEvent.subject).in_(("project.milestone", *AMENDMENTS)),
            )
            .order_by(col(BoardEvent.seq))
        ).all()
        rm.refold_milestones(p, rm.milestone_records([(s, json.loads(b)) for s, b in stored]))
    session.add(p)


def apply_rates(session: Session, event: dict[str, Any]) -> None:
    """score.rates (validated by `parse`): county and unit figures replace the year's,
    project figures are upserted, dropped projects removed. An older revision, or a part
    of this one already applied (a copy published again after a restart), changes nothing."""
    session.flush()  # an earlier part in this batch: its rows are to be found, not added again
    year, revision, part = int(event["year"]), int(event["revision"]), int(event["part"])
    state = session.get(BoardRatesYear, year) or BoardRatesYear(year=year)
    parts = rm.loads(state.parts, [])
    if revision < state.revision or (revision == state.revision and part in parts):
        return
    if revision > state.revision:
        state.revision, parts = revision, []
    state.parts = json.dumps(sorted([*parts, part]))
    state.projects = int(event.get("projects") or 0)
    state.definitions = json.dumps(event.get("definitions") or {}, ensure_ascii=False)
    state.explanation = json.dumps(event.get("explanation") or {}, ensure_ascii=False)
    session.add(state)

    def put(scope: str, code: str, figures: Any) -> None:
        row = session.get(BoardRates, (year, scope, code)) or BoardRates(
            year=year, scope=scope, code=code, figures=""
        )
        row.figures = json.dumps(figures, sort_keys=True)
        session.add(row)

    put("county", "", event["county"])
    units = event.get("by_unit") or {}
    for old in session.exec(
        select(BoardRates).where(col(BoardRates.year) == year, col(BoardRates.scope) == "unit")
    ).all():
        if old.code not in units:
            session.delete(old)
    for code, figures in units.items():
        put("unit", str(code), figures)
    for code, figures in (event.get("by_project") or {}).items():
        put("project", str(code), figures)
    for code in event.get("dropped") or []:
        row = session.get(BoardRates, (year, "project", str(code)))
        if row is not None:
            session.delete(row)


def record_ruleset(session: Session, service: str, status: dict[str, Any]) -> None:
    session.add(
        BoardRuleset(
            service=service,
            key=str(status.get("key", "")),
            revision=int(status.get("revision") or 0),
            loaded=bool(status.get("loaded")),
            error=status.get("error"),
            received_at=dt.datetime.now(dt.UTC),
        )
    )
