"""The weekly report on the sample year: its numbers against the data, computed independently."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session

from investflow.main import main as investflow
from services.notify import facts, replay
from services.notify.params import load_params
from services.notify.scheduler import Scheduler
from shared.contract import Credited, Explanation
from shared.db import make_engine
from shared.settings import REPO_ROOT
from tests.notify.support import DIRECTORY, RENDERER, RULESETS

SAMPLES = REPO_ROOT / "samples" / "year-2022.jsonl"
ON = dt.date(2022, 6, 6)  # a Monday: facts up to Sunday 2022-06-05


@pytest.fixture(scope="module")
def replayed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Notify's facts of the sample year in a database file (replayed once: it is the slow part)."""
    path = tmp_path_factory.mktemp("report") / "notify.db"
    engine = make_engine(f"sqlite:///{path}")
    replay.facts_from_file(SAMPLES, DIRECTORY, engine)
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def sample_engine(replayed_db: Path):  # type: ignore[no-untyped-def]
    copy = replayed_db.with_name("notify-credited.db")
    shutil.copyfile(replayed_db, copy)
    engine = make_engine(f"sqlite:///{copy}")
    credit = Credited(
        project_id="TS03-ZS2022-0001",
        funds_id="F001",
        year=2022,
        quarter=2,
        amount_rmb=Decimal("1000000"),
        multiplier=Decimal("1.5"),
        points=Decimal("1500000"),
        matched=[],
        deciding_rule=None,
        credited_to=["TS03", "DEVZONE", "L06"],
        explanation=Explanation(
            ruleset_id="scoring", version="2022.1", matched=[], parameters={}, deciding_rule=None
        ),
    )
    replay.apply_events(engine, [("score.credited", json.loads(credit.model_dump_json()))])
    return engine


def expected_from_the_file(on: dt.date, path: Path = SAMPLES) -> dict:
    """Straight from the JSON Lines, without notify's code: only lines intake accepts count
    (no `case` mark except the late rates and the rate-missing funds)."""
    as_of = on - dt.timedelta(days=1)
    ok = lambda line: "data" in line and line.get("case", "") in ("", "late_rates", "rate_missing")  # noqa: E731
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    lines = [x for x in lines if ok(x)]
    leads = {
        f"{x['data']['unit']}-{x['data']['lead_id']}"
        for x in lines
        if x["subject"].endswith(".lead") and x["data"]["reported_on"] <= as_of.isoformat()
    }
    meetings = {
        x["data"]["meeting_id"]: x["data"]["on"] for x in lines if x["subject"].endswith(".meeting")
    }
    approved = {}
    for x in lines:
        if x["subject"].endswith(".decision") and x["data"]["decision"] == "approved":
            on_ = meetings[x["data"]["meeting_id"]]
            if on_ <= as_of.isoformat():
                approved[x["data"]["project_id"]] = dt.date.fromisoformat(on_)
    done = {
        x["data"]["project_id"]
        for x in lines
        if x["subject"].endswith(".milestone")
        and x["data"]["milestone"] == "completed"
        and x["data"]["on"] <= as_of.isoformat()
    }
    visits = defaultdict(list)
    for x in lines:
        if x["subject"].endswith(".visit") and x["data"]["on"] <= as_of.isoformat():
            visits[x["data"]["project_id"]].append(dt.date.fromisoformat(x["data"]["on"]))
    overdue = {}
    for pid, day in approved.items():
        if pid in done:
            continue
        last = max([day, *visits[pid]])
        if (as_of - last).days > 7:
            overdue[pid] = (as_of - last).days
    rates = {
        (x["data"]["on"], c): Decimal(r)
        for x in lines
        if x["subject"].endswith(".rates")
        for c, r in x["data"]["rates"].items()
    }
    funds = Decimal(0)
    seen = set()
    for x in lines:
        d = x["data"]
        if not x["subject"].endswith(".funds") or not (
            "2022-01-01" <= d["arrived_on"] <= as_of.isoformat()
        ):
            continue
        if (d["project_id"], d["funds_id"]) in seen or d["project_id"] not in leads:
            continue
        seen.add((d["project_id"], d["funds_id"]))
        rate = Decimal(1) if d["currency"] == "CNY" else rates[(d["arrived_on"], d["currency"])]
        funds += Decimal(d["amount"]) * rate
    signed_q = defaultdict(set)
    for x in lines:
        d = x["data"]
        if (
            x["subject"].endswith(".milestone")
            and d["milestone"] == "signed"
            and Decimal(d["amount"]) >= 100_000_000
            and d["on"] <= as_of.isoformat()
        ):
            signed_q[(int(d["on"][5:7]) - 1) // 3 + 1].add(d["project_id"])
    return {
        "projects": len(leads),
        "overdue": overdue,
        "funds": funds,
        "signed": {q: len(v) for q, v in signed_q.items()},
        "approved": len(approved),
    }


def test_sample_year_report_numbers_match_the_data(sample_engine) -> None:
    with Session(sample_engine) as session:
        snapshot = facts.load_snapshot(session)
    sched = Scheduler(sample_engine, RENDERER, DIRECTORY, load_params(), RULESETS, lambda: None)
    report = sched.report(snapshot, ON, None)
    want = expected_from_the_file(ON)
    assert report["as_of"] == "2022-06-05"
    assert report["projects"] == want["projects"] > 100
    assert {o["project_id"]: o["days"] for o in report["overdue"]} == want["overdue"] and want[
        "overdue"
    ]
    assert Decimal(report["funds_year_rmb"]) == want["funds"].quantize(Decimal("0.01"))
    assert [s["actual"] for s in report["signings"]] == [
        want["signed"].get(q, 0) for q in (1, 2)
    ] + [0, 0]
    assert [s["target"] for s in report["signings"]] == [6, 15, 15, 6]
    assert (
        report["by_status"]["rejected"] > 0
        and sum(report["by_status"].values()) == report["projects"]
    )
    assert report["scoreboard_top"][0] == {"code": "DEVZONE", "points": "1500000.00"}
    assert {e["code"] for e in report["scoreboard_top"][:3]} == {"TS03", "DEVZONE", "L06"}
    assert all(e["points"] == "0.00" for e in report["scoreboard_bottom"])


def test_leader_report_covers_only_their_projects(sample_engine) -> None:
    with Session(sample_engine) as session:
        snapshot = facts.load_snapshot(session)
    sched = Scheduler(sample_engine, RENDERER, DIRECTORY, load_params(), RULESETS, lambda: None)
    county = sched.report(snapshot, ON, None)
    per_leader = [sched.report(snapshot, ON, f"L0{i}") for i in range(1, 7)]
    assert sum(r["sponsored"] for r in per_leader) == county["sponsored"]
    assert sorted(o["project_id"] for r in per_leader for o in r["overdue"]) == sorted(
        o["project_id"] for o in county["overdue"]
    )
    assert per_leader[5]["own_score"] == {
        "code": "L06",
        "points": "1500000.00",
        "rank": 2,
        "of": 21,
    }  # ties by code: DEVZONE, L06, TS03


def test_report_weekly_command_renders_the_sample_year(
    tmp_path: Path, replayed_db: Path, capsys
) -> None:
    out = tmp_path / "report.html"
    args = ["report", "weekly", "--on", ON.isoformat(), "--out", str(out)]
    assert investflow([*args, "--database-url", f"sqlite:///{replayed_db}"]) == 0
    html = out.read_text(encoding="utf-8")
    want = expected_from_the_file(ON)
    assert "挂图作战" in html and 'src="data:image/png;base64,' in html
    assert re.search(r'id="projects" class="big">(\d+)<', html).group(1) == str(want["projects"])
    assert re.search(r'id="funds-year" data-rmb="([0-9.]+)"', html).group(1) == str(
        want["funds"].quantize(Decimal("0.01"))
    )
    assert len(re.findall(r'<tr data-project="', html)) == len(want["overdue"])
    assert "wrote" in capsys.readouterr().out

    # --samples replays a file itself: the year's first 500 lines (its first weeks).
    head = tmp_path / "head.jsonl"
    head.write_text("".join(SAMPLES.read_text(encoding="utf-8").splitlines(True)[:500]))
    assert investflow([*args, "--samples", str(head)]) == 0
    html = out.read_text(encoding="utf-8")
    want = expected_from_the_file(ON, head)
    assert 0 < want["projects"] < expected_from_the_file(ON)["projects"]
    assert re.search(r'id="projects" class="big">(\d+)<', html).group(1) == str(want["projects"])
    assert re.search(r'id="funds-year" data-rmb="([0-9.]+)"', html).group(1) == str(
        want["funds"].quantize(Decimal("0.01"))
    )
    assert len(re.findall(r'<tr data-project="', html)) == len(want["overdue"])
    assert investflow([*args[:2], "--on", "2022-13-01", "--samples", str(head), *args[4:]]) == 2


def test_report_weekly_refuses_a_samples_path_that_is_not_a_jsonl_file(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "report.html"
    args = ["report", "weekly", "--on", ON.isoformat(), "--out", str(out), "--samples"]
    assert investflow([*args, str(SAMPLES.parent)]) == 2
    assert "is not a file" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text(SAMPLES.read_text(encoding="utf-8").splitlines()[0] + "\n{oops\n")
    assert investflow([*args, str(broken)]) == 2
    assert f"{broken}:2: not JSON" in capsys.readouterr().err
    assert not out.exists()
