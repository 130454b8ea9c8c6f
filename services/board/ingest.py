"""Storing consumed events into the board's tables, in one transaction per run of messages.

An event already stored (same stream and sequence: a redelivery) changes nothing. Events
the board cannot use (no project, an unknown kind) are kept in the timeline table only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from . import readmodel as rm
from .store import (
    BoardEvent,
    BoardFunds,
    BoardFundsMonth,
    BoardMeeting,
    BoardNotification,
    BoardPoints,
    BoardProject,
    BoardRuleset,
    BoardState,
)


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
    return Item(stream, seq, subject, event, raw)


class _Rows:
    """The batch's project and funds rows, loaded in one query each: one SELECT per event
    (with its autoflush) made the sample year take 30 s to store."""

    def __init__(self, session: Session, items: list[Item]) -> None:
        ids = sorted(
            {i.event.get("project_id") for i in items if isinstance(i.event.get("project_id"), str)}
        )
        self.projects: dict[str, BoardProject] = {}
        self.funds: dict[tuple[str, str], BoardFunds] = {}
        # Each funds row's (unit, month, fen) as loaded: the monthly sums move by the change.
        self.before: dict[tuple[str, str], tuple[str, str, int]] = {}
        self.meetings: dict[str, BoardMeeting] = {}  # met in this batch (not flushed yet)
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            for p in session.exec(
                select(BoardProject).where(col(BoardProject.project_id).in_(part))
            ):
                self.projects[p.project_id] = p
            for f in session.exec(select(BoardFunds).where(col(BoardFunds.project_id).in_(part))):
                self.funds[(f.project_id, f.funds_id)] = f
                self.before[(f.project_id, f.funds_id)] = (f.unit, f.month, f.rmb_fen or 0)


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
        rows.funds[(project_id, funds_id)] = f
        session.add(f)
    return f


def _months(session: Session, rows: _Rows) -> None:
    """Move board_funds_month by what this batch changed in each funds row."""
    delta: dict[tuple[str, str], list[int]] = {}
    for key, f in rows.funds.items():
        old = rows.before.get(key, ("", "", 0))
        new = (f.unit, f.month, f.rmb_fen or 0)
        if old == new:
            continue
        for (unit, month, fen), sign in ((old, -1), (new, 1)):
            if unit and month and fen:
                d = delta.setdefault((unit, month), [0, 0])
                d[0] += sign * fen
                d[1] += sign
        rows.before[key] = new
    for (unit, month), (fen, n) in delta.items():
        row = session.get(BoardFundsMonth, (unit, month)) or BoardFundsMonth(unit=unit, month=month)
        row.rmb_fen += fen
        row.records += n
        session.add(row)


def relight_all(session: Session, t: rm.Thresholds) -> int:
    """Recompute every active project's first yellow and red days (a threshold changed)."""
    n = 0
    for p in session.exec(select(BoardProject).where(col(BoardProject.stage).not_in(rm.INACTIVE))):
        before = (p.yellow_on, p.red_on)
        rm.relight(p, t)
        if (p.yellow_on, p.red_on) != before:
            session.add(p)
            n += 1
    return n


def rebuild_months(session: Session) -> None:
    """board_funds_month from board_funds (a repair, and for tables filled in bulk)."""
    from sqlalchemy import delete, func

    session.exec(delete(BoardFundsMonth))  # type: ignore[call-overload]
    for unit, month, fen, n in session.exec(
        select(BoardFunds.unit, BoardFunds.month, func.sum(BoardFunds.rmb_fen), func.count())
        .where(
            col(BoardFunds.rmb_fen).is_not(None),
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
    rows = _Rows(session, items)
    clock = rm.parse_day((session.get(BoardState, "clock") or BoardState(key="")).value)
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
        session.add(
            BoardEvent(
                stream=item.stream,
                seq=item.seq,
                subject=item.subject,
                project_id=project_id if isinstance(project_id, str) else None,
                day=day,
                body=item.raw,
            )
        )
        with session.no_autoflush:
            _apply(session, item, clock, rows)
    for p in rows.projects.values():
        rm.relight(p, t)
    _months(session, rows)
    if new:
        if clock is not None:
            _set_state(session, "clock", clock.isoformat())
        version = int((session.get(BoardState, "version") or BoardState(key="", value="0")).value)
        _set_state(session, "version", str(version + 1))
    return new


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
                p = rows.projects.setdefault(p.project_id, p)
                p.decided_on = on
                rm.derive(p)
                session.add(p)
        return
    if family == "notify":
        session.add(
            BoardNotification(
                project_id=pid if isinstance(pid, str) else None,
                ok=subject == "notify.sent",
                cause=str(event.get("cause", "")),
                recipient=str(event.get("recipient", "")),
                channel=str(event.get("channel", "")),
                attempts=int(event.get("attempts") or 0),
                error=event.get("error"),
                day=clock,
            )
        )
        return
    if not isinstance(pid, str) or not pid:
        return  # rates and other county-wide facts: timeline table only
    if family == "project":
        meeting_day = None
        if subject == "project.decision":
            meeting_id = str((event.get("data") or {}).get("meeting_id"))
            # A meeting earlier in this batch is not flushed yet (no_autoflush): look here first.
            meeting = rows.meetings.get(meeting_id) or session.get(BoardMeeting, meeting_id)
            meeting_day = meeting.on if meeting else clock
        p = _project(session, pid, rows)
        rm.apply_project_event(p, subject, event, meeting_day)
        session.add(p)
        if subject == "project.funds":
            data = event.get("data") or {}
            f = _funds(session, pid, str(data.get("funds_id")), rows)
            rm.apply_funds_arrived(f, event, p.attracting_unit)
            session.add(f)
            for row in session.exec(
                select(BoardPoints).where(
                    col(BoardPoints.project_id) == pid, col(BoardPoints.funds_id) == f.funds_id
                )
            ).all():
                row.arrived_on = f.arrived_on
                session.add(row)
    elif family == "review":
        p = _project(session, pid, rows)
        rm.apply_review_event(p, subject, event)
        session.add(p)
    elif family == "score":
        f = _funds(session, pid, str(event.get("funds_id")), rows)
        if subject == "score.reversed" or subject == "score.credited":
            for row in session.exec(
                select(BoardPoints).where(
                    col(BoardPoints.project_id) == pid,
                    col(BoardPoints.funds_id) == f.funds_id,
                    col(BoardPoints.active).is_(True),
                )
            ).all():
                # A reversal takes the credit back; a new credit replaces the old one.
                row.active = False
                session.add(row)
        rm.apply_score_event(f, subject, event)
        session.add(f)
        if subject == "score.credited":
            fen = rm.to_fen(event.get("points"))
            for code in event.get("credited_to") or []:
                session.add(
                    BoardPoints(
                        project_id=pid,
                        funds_id=f.funds_id,
                        subject=str(code),
                        points_fen=fen,
                        year=int(event.get("year") or 0),
                        quarter=int(event.get("quarter") or 0),
                        arrived_on=f.arrived_on,
                    )
                )


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
