"""The what-if on the sample year (SQLite and PostgreSQL): a policy change shows up only where
it applies, the fast replay scores exactly as decide.score does, and nothing stored changes."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from investflow.main import build_parser
from services.scoring import store, whatif
from services.scoring.decide import Scored, score
from services.scoring.record import apply
from shared.db import create_tables, make_engine, unit_of_work
from shared.rules import default_registry, rulesets_dir
from tests.conftest import PG_SKIP_REASON, fresh_pg_database
from tests.scoring.sample_year import scoring_inputs

pytestmark = pytest.mark.timeout(300)
# Compared with the files, not a running system (`investflow whatif` is `rules whatif`).
AGAINST = ["--against", str(rulesets_dir())]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('whatif') / 'scoring.db'}"
        return
    if PG_SKIP_REASON:
        pytest.skip(PG_SKIP_REASON)
    with fresh_pg_database() as url:
        yield url


_applied: dict[str, list[dict[str, Any]]] = {}  # table -> rows, once per test process


def applied_sample_year() -> dict[str, list[dict[str, Any]]]:
    """Scoring's rows for the sample year, applied as the consumer applies events (SQLite)."""
    if not _applied:
        engine = make_engine("sqlite://")
        create_tables(engine, store.TABLES)
        rules = default_registry()
        now = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
        with unit_of_work(engine) as session:
            for seq, (subject, event, key) in enumerate(scoring_inputs(), start=1):
                apply(session, event, key, subject, seq, rules, now)
        with engine.connect() as conn:
            for t in store.TABLES:
                table = t.__table__  # type: ignore[attr-defined]
                _applied[table.name] = [dict(r._mapping) for r in conn.execute(select(table))]
        engine.dispose()
    return _applied


@pytest.fixture(scope="module")
def sample_db(database: str) -> Iterator[tuple[str, Engine]]:
    """Scoring's tables holding the sample year. Applied once (applying on each backend is
    covered by the scoring flow tests) and copied in, so the what-if reads the same rows on
    SQLite and PostgreSQL. Shared by the module's tests: a what-if changes nothing, which each
    test checks."""
    database_url = database
    engine = make_engine(database_url)
    create_tables(engine, store.TABLES)
    with engine.begin() as conn:
        for t in store.TABLES:
            table = t.__table__  # type: ignore[attr-defined]
            if rows := applied_sample_year()[table.name]:
                conn.execute(table.insert(), rows)
    yield database_url, engine
    engine.dispose()


def cli(argv: list[str]) -> tuple[int, str]:
    args = build_parser().parse_args(argv)
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            t.__tablename__: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)  # type: ignore[attr-defined]
            for t in store.TABLES
        }


def little_giant_at(tmp_path: Path, multiplier: int) -> Path:
    text = (rulesets_dir() / "scoring-2022.1.yaml").read_text(encoding="utf-8")
    rule = text.index("- id: little_giant")
    end = text.index("outcome: {multiplier: 2}", rule)
    changed = text[:end] + f"outcome: {{multiplier: {multiplier}}}" + text[end + 24 :]
    path = tmp_path / "scoring-proposal.yaml"
    path.write_text(changed, encoding="utf-8")
    return path


def holders_of(engine: Engine, rule: str) -> set[str]:
    """Subjects credited for projects on which `rule` matched."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(store.Entry.matched, store.Entry.credited_to).where(store.Entry.kind == "credit")
        ).all()
    return {s for matched, to in rows if rule in json.loads(matched) for s in json.loads(to)}


def test_little_giant_at_3_changes_only_its_holders_and_nothing_stored(
    sample_db: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = sample_db
    before = snapshot(engine)
    holders = holders_of(engine, "little_giant")
    assert holders, "the sample year credits some little-giant projects"

    file = little_giant_at(tmp_path, 3)
    args = ["whatif", "--ruleset", str(file), "--year", "2022", *AGAINST]
    code, out = cli([*args, "--database-url", url, "--format", "json"])
    assert code == 0
    result = json.loads(out)

    assert result["ruleset_changes"] == [
        f"scoring@2022.1 in force 2022-01-01..2022-12-31 (from {file})",
        "  rule little_giant: ×2 → ×3",
    ]
    assert result["stored_differs"] == []  # the old side reproduces the stored scores
    changed = {s["subject"] for s in result["subjects"] if s["changed"]}
    points_changed = {
        s["subject"]
        for s in result["subjects"]
        if (s["old"] or {}).get("points") != (s["new"] or {}).get("points")
    }
    assert points_changed and points_changed <= holders
    for s in result["subjects"]:
        if s["subject"] in points_changed:
            assert Decimal(s["new"]["points"]) > Decimal(s["old"]["points"])
    # a subject may move in rank only because a holder overtook it
    assert all(s in holders or s in changed for s in changed)
    assert snapshot(engine) == before


def test_the_fast_replay_scores_exactly_as_decide_score(sample_db: tuple[str, Engine]) -> None:
    _, engine = sample_db
    rules = default_registry()
    facts = whatif.load_facts(engine, 2022)
    (fast,) = whatif.replay(facts, [whatif.Replayer(rules)])

    slow = whatif.Totals()
    for pid, amount_fen, currency, day in facts.funds:
        project = facts.projects[pid]
        rate = Decimal(1) if currency == "CNY" else facts.rates.get((day, currency))
        result = score(
            project.lead,
            {"amount": Decimal(amount_fen) / 100, "currency": currency, "arrived_on": day},
            {currency: rate} if rate is not None else {},
            sponsor_leader=project.sponsor_leader,
            rules=rules,
        )
        if isinstance(result, Scored):
            slow.add(result.credited_to, pid, result.amount_rmb, result.points)
    assert fast.credited == slow.credited > 0
    assert fast.by_subject() == slow.by_subject()


def test_set_a_parameter_and_table_output(sample_db: tuple[str, Engine]) -> None:
    url, engine = sample_db
    before = snapshot(engine)
    code, text = cli(
        [
            "whatif",
            "--set",
            "foreign_multiplier=4",
            "--year",
            "2022",
            "--database-url",
            url,
            *AGAINST,
        ]
    )
    assert code == 0
    assert "foreign_multiplier = 4 (--set)" in text
    assert "old points" in text and "new rank" in text and "Nothing stored was changed." in text
    foreign = holders_of(engine, "foreign_funded")
    starred = {line.split()[1] for line in text.splitlines() if line.startswith("* ")}
    assert starred and all(s in foreign or s in starred for s in starred)
    assert snapshot(engine) == before


def test_a_proposal_that_does_not_validate_replays_nothing(
    sample_db: tuple[str, Engine], tmp_path: Path
) -> None:
    url, _ = sample_db
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        little_giant_at(tmp_path, 3)
        .read_text(encoding="utf-8")
        .replace("fact: kind,", "fact: knd,"),
        encoding="utf-8",
    )
    code, out = cli(
        ["whatif", "--ruleset", str(bad), "--year", "2022", "--database-url", url, *AGAINST]
    )
    assert code == 1
    assert "knd" in out and "nothing replayed" in out
