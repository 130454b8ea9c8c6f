"""Lights: the SQL reading (counts, filters) and the Python one (rows shown) agree, and the
thresholds are the rulesets' numbers, not the code's."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

from sqlmodel import Session, col, select

from services.board import readmodel as rm
from services.board.queries import light_sql
from services.board.store import TABLES, BoardProject
from shared.db import create_tables, make_engine

T = rm.Thresholds.load()
D0 = dt.date(2022, 3, 1)


def _projects() -> list[BoardProject]:
    out = []
    options = itertools.product(
        (None, 0, 20),  # decided (approved) days after D0
        (None, 5, 30),  # last visit
        (None, 10),  # signed
        (None, 40),  # started
        (None, 15),  # waiting for land
        (None, False, True),  # materials complete
    )
    for i, (decided, visit, signed, started, land, complete) in enumerate(options):
        p = BoardProject(
            project_id=f"TS01-P{i}", attracting_unit="TS01", outcome="accepted", track="major"
        )
        day = lambda n: None if n is None else D0 + dt.timedelta(days=n)  # noqa: E731
        if decided is not None:
            p.decision, p.decided_on, p.sponsor_leader = "approved", day(decided), "L01"
        p.last_visit, p.signed_on, p.started_on = day(visit), day(signed), day(started)
        p.waiting_land_latest = day(land)
        if complete is not None:
            p.materials_complete, p.materials_deadline = complete, day(12)
        rm.derive(p)
        rm.relight(p, T)
        out.append(p)
    return out


def test_sql_and_python_lights_agree(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'board.db'}")
    create_tables(engine, TABLES)
    projects = _projects()
    with Session(engine) as session:
        session.add_all(projects)
        session.commit()
    seen = set()
    with Session(engine) as session:
        for offset in range(0, 160, 3):
            clock = D0 + dt.timedelta(days=offset)
            conds = light_sql(T, clock)
            by_sql = {
                pid: colour
                for colour, cond in conds.items()
                for pid in session.exec(select(BoardProject.project_id).where(cond)).all()
            }
            rows = session.exec(select(BoardProject).order_by(col(BoardProject.project_id))).all()
            by_py = {p.project_id: rm.light(p, clock, T)[0] for p in rows}
            assert by_sql == {k: v for k, v in by_py.items() if v is not None}, clock
            seen |= set(by_py.values())
    assert seen >= {"red", "yellow", "green"}


def test_thresholds_come_from_the_parameters_file(tmp_path: Path) -> None:
    from shared.settings import REPO_ROOT

    text = (REPO_ROOT / "rulesets" / "notify-2022.1.yaml").read_text(encoding="utf-8")
    changed = tmp_path / "notify.yaml"
    assert "    value: 14\n" in text  # visit_escalate_days
    changed.write_text(text.replace("    value: 14\n", "    value: 21\n", 1), encoding="utf-8")
    t = rm.Thresholds.load(changed)
    assert (T.visit_red, t.visit_red) == (14, 21)
    p = BoardProject(project_id="TS01-X", decision="approved", sponsor_leader="L01", decided_on=D0)
    rm.derive(p)
    clock = D0 + dt.timedelta(days=18)
    assert rm.light(p, clock, T)[0] == "red"
    assert rm.light(p, clock, t)[0] == "yellow"  # a policy change, no code change


def test_stages_follow_the_plan() -> None:
    p = BoardProject(project_id="TS01-S")
    rm.derive(p)
    assert p.stage == "reported"
    for change, stage in (
        ({"outcome": "accepted", "track": "major"}, "review"),
        ({"decision": "approved"}, "approved"),
        ({"signed_on": D0}, "signed"),
        ({"started_on": D0}, "started"),
        ({"first_funds_on": D0}, "funds"),
        ({"completed_on": D0}, "completed"),
        ({"outcome": "terminated"}, "terminated"),
        ({"withdrawn": True}, "withdrawn"),  # 撤回 trumps all
    ):
        for k, v in change.items():
            setattr(p, k, v)
        rm.derive(p)
        assert p.stage == stage
    assert rm.light(p, D0, T) == (None, [])
