"""Rates from CSV (errors by line and column), the scoreboard's ranking and formats, and the
`investflow scoreboard` / `rates load` commands. No NATS here."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from investflow.main import build_parser
from services.scoring import rates_csv, scoreboard
from tests.scoring import builders as b
from tests.scoring.harness import Scoring


def cli(argv: list[str]) -> tuple[int, str]:
    args = build_parser().parse_args(argv)
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


# --- rates CSV ------------------------------------------------------------------------------


def test_a_clean_file_gives_one_rates_event_per_day() -> None:
    days, problems = rates_csv.parse(
        "\ufeffDate, Currency ,CNY_per_unit\n"
        "2022-04-27,USD,6.4528\n"
        "2022-04-27,EUR,6.8126\n"
        "\n"
        "2022-04-28,USD,6.4600\n"
        "2022-04-28,USD,6.46\n"  # the same rate twice: harmless
    )
    assert problems == []
    assert [(str(d.rates.on), dict(d.rates.rates)) for d in days] == [
        ("2022-04-27", {"USD": Decimal("6.4528"), "EUR": Decimal("6.8126")}),
        ("2022-04-28", {"USD": Decimal("6.4600")}),
    ]
    assert days[0].subject == "intake.CENTER.rates"
    assert json.loads(days[0].body())["unit"] == "CENTER"
    again, _ = rates_csv.parse(
        "date,currency,cny_per_unit\n2022-04-27,EUR,6.8126\n2022-04-27,USD,6.4528\n"
    )
    assert again[0].msg_id == days[0].msg_id  # the same day's rates: the same key, in any order


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("date,currency\n2022-01-01,USD\n", ["line 1, column cny_per_unit: column missing"]),
        ("date,currency,cny_per_unit,note\n", ["line 1, column note: unknown column"]),
        ("", ["line 1: empty file"]),
        (
            "date,currency,cny_per_unit\n2022-13-01,USD,6.4\n2022-01-01,usd,6.4\n2022-01-02,USD,-1\n"
            "2022-01-03,USD,abc\n2022-01-04,CNY,1\n2022-01-05,USD,6.123456789\n2022-01-06,USD\n",
            [
                "line 2, column date: '2022-13-01' is not a date",
                "line 3, column currency: 'usd' is not a currency code",
                "line 4, column cny_per_unit: -1 must be greater than 0",
                "line 5, column cny_per_unit: 'abc' is not a number",
                "line 6, column currency: CNY is 1 CNY by definition",
                "line 7, column cny_per_unit: 6.123456789 has more than 8 decimal places",
                "line 8: 2 cells, the header has 3",
            ],
        ),
        (
            "date,currency,cny_per_unit\n2022-01-01,USD,6.4\n2022-01-01,USD,6.5\n",
            ["line 3, column cny_per_unit: USD on 2022-01-01 is 6.5 here but 6.4 on line 2"],
        ),
    ],
)
def test_every_problem_is_named_by_line_and_column(text: str, expected: list[str]) -> None:
    days, problems = rates_csv.parse(text)
    assert days == []
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert str(problem).startswith(start), str(problem)


def test_rates_load_refuses_a_bad_file_and_dry_runs_a_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,currency,cny_per_unit\n2022-01-01,USD,x\n", encoding="utf-8")
    code, _ = cli(["rates", "load", str(bad), "--url", "nats://127.0.0.1:1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.csv: line 2, column cny_per_unit" in err and "nothing published" in err

    good = tmp_path / "good.csv"
    good.write_text(
        "date,currency,cny_per_unit\n2022-01-01,USD,6.4\n2022-01-01,EUR,7.2\n", encoding="utf-8"
    )
    code, out = cli(["rates", "load", str(good), "--dry-run"])
    assert code == 0 and "2 rates on 1 days, all valid" in out


# --- scoreboard -----------------------------------------------------------------------------


def test_ranks_are_per_group_and_ties_share_a_rank() -> None:
    d = scoreboard.default_directory()
    rows = scoreboard.ranked(
        {
            "TS01": (Decimal(5), Decimal(5), 1),
            "TS02": (Decimal(9), Decimal(9), 1),
            "TS03": (Decimal(5), Decimal(5), 2),
            "TS04": (Decimal(1), Decimal(1), 1),
            "DEVZONE": (Decimal(3), Decimal(3), 1),
            "L01": (Decimal(2), Decimal(2), 1),
            "ZZZ": (Decimal(1), Decimal(1), 1),
        },
        d,
    )
    assert [(r.group, r.subject, r.rank) for r in rows] == [
        ("township", "TS02", 1),
        ("township", "TS01", 2),
        ("township", "TS03", 2),
        ("township", "TS04", 4),
        ("park", "DEVZONE", 1),
        ("leader", "L01", 1),
        ("other", "ZZZ", 1),
    ]


@pytest.mark.parametrize(("text", "q"), [("Q2", 2), ("q4", 4), ("1", 1), (None, None), ("", None)])
def test_quarters_are_read_as_people_write_them(text: str | None, q: int | None) -> None:
    assert scoreboard.parse_quarter(text) == q


def test_a_quarter_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="Q1, Q2, Q3 or Q4"):
        scoreboard.parse_quarter("Q5")


@pytest.fixture
def scored(database_url: str) -> Iterator[tuple[str, Scoring]]:
    s = Scoring(database_url)
    a = b.lead("TS01")
    c = b.lead("TS02", landing_area="CHEMPARK")
    for lead in (a, c):
        s.send(lead)
        s.send(b.recognition(lead.project_id or ""))
    s.send(b.decision(a.project_id or "", sponsor_leader="L01"))
    s.send(b.funds(a.project_id or "", "F1", amount="1000000", arrived_on="2022-02-01"))
    s.send(b.funds(a.project_id or "", "F2", amount="500000", arrived_on="2022-05-01"))
    s.send(b.funds(c.project_id or "", "F1", amount="2000000", arrived_on="2022-05-02"))
    s.send(b.funds(c.project_id or "", "F2", amount="10", currency="USD", arrived_on="2022-05-03"))
    s.send(b.signed(a.project_id or "", on="2022-02-10", amount="150000000"))
    s.send(b.signed(c.project_id or "", on="2022-05-10", amount="99999999.99"))  # below 100M
    yield database_url, s
    s.close()


def test_the_scoreboard_sums_per_subject_and_shows_targets(scored: tuple[str, Scoring]) -> None:
    url, s = scored
    board = scoreboard.build(s.engine, 2022, directory=scoreboard.default_directory())
    by = {r.subject: r for r in board.subjects}
    assert (by["TS01"].points, by["TS01"].projects) == (Decimal("1500000.00"), 1)
    assert by["L01"].points == Decimal("1500000.00") and by["L01"].group == "leader"
    assert (by["CHEMPARK"].points, by["DEVZONE"].points) == (
        Decimal("2000000.00"),
        Decimal("1500000.00"),
    )
    assert [(t.quarter, t.plan, t.actual) for t in board.targets] == [
        (1, 6, 1),
        (2, 15, 0),
        (3, 15, 0),
        (4, 6, 0),
    ]
    assert board.signed_by_unit == {"TS01": {1: 1}}
    assert board.held == {"exchange_rate": 1}

    q2 = scoreboard.build(s.engine, 2022, 2, directory=scoreboard.default_directory())
    assert {r.subject: r.points for r in q2.subjects}["TS01"] == Decimal("500000.00")

    code, out = cli(
        [
            "scoreboard",
            "--year",
            "2022",
            "--quarter",
            "Q2",
            "--format",
            "csv",
            "--database-url",
            url,
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["subject"]: r["points"] for r in rows if r["section"] == "subject"}[
        "TS02"
    ] == "2000000.00"
    assert [r["plan"] for r in rows if r["section"] == "target"] == ["15"]

    code, out = cli(["scoreboard", "--year", "2022", "--format", "json", "--database-url", url])
    assert json.loads(out)["targets"]["county"][0] == {"quarter": 1, "plan": 6, "actual": 1}
    code, out = cli(["scoreboard", "--year", "2022", "--database-url", url])
    assert "Scoreboard 2022" in out and "城关街道" in out and "1 waiting for exchange rate" in out


def test_the_scoreboard_says_where_it_looked_when_there_is_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(["scoreboard", "--year", "2022", "--data", str(tmp_path / "nowhere")])
    assert code == 2
    assert "no scoring database at" in capsys.readouterr().err


def test_render_for_demo_reads_the_demo_data_dir(tmp_path: Path) -> None:
    s = Scoring(f"sqlite:///{tmp_path / 'scoring.db'}")
    lead = b.lead("TS07")
    s.send(lead)
    s.send(b.recognition(lead.project_id or ""))
    s.send(b.funds(lead.project_id or ""))
    s.close()
    text = scoreboard.render_for_demo(year=2022, data_dir=tmp_path)
    assert "TS07" in text and "Signing targets" in text
