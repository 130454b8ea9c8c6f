"""Small things operators tripped over: tokens written where intake never looks, clipped reasons.

(A second `investflow up` on the same --data is in test_observability.py, beside a running one.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from investflow.main import main
from services.intake import store, tokens
from shared.db import create_tables, make_engine, unit_of_work


def test_tokens_issue_with_data_writes_to_that_systems_intake_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "system"
    data.mkdir()
    engine = make_engine(f"sqlite:///{data / 'intake.db'}")
    create_tables(engine, store.TABLES)  # as the running intake did
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for var in ("INTAKE_DATABASE_URL", "DATABASE_URL", "INVESTFLOW_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert main(["tokens", "issue", "TS01", "--data", str(data)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    with unit_of_work(engine) as session:
        assert tokens.token_unit(session, token) == "TS01"  # the system's intake knows it
    assert not (elsewhere / "data").exists()
    assert main(["tokens", "list", "--data", str(data)]) == 0
    assert "TS01" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["issue", "TS01"], ["list"], ["revoke", "--unit", "TS01"]])
def test_tokens_refuse_a_data_dir_without_an_intake_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    missing = tmp_path / "not-the-system"
    assert main(["tokens", *command, "--data", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing / "intake.db") in err and "--data" in err and "数据库" in err
    assert not (missing / "intake.db").exists()  # no empty database made on the way


def test_tokens_without_data_look_where_the_service_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("INTAKE_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("INVESTFLOW_DATA_DIR", str(tmp_path))
    assert main(["tokens", "issue", "TS01"]) == 1
    assert str(tmp_path / "intake.db") in capsys.readouterr().err
    create_tables(make_engine(f"sqlite:///{tmp_path / 'intake.db'}"), store.TABLES)
    assert main(["tokens", "issue", "TS01"]) == 0
    assert os.path.exists(tmp_path / "intake.db")


def test_rejection_reasons_are_cut_between_words() -> None:
    from investflow.summary import clip

    problem = (
        "day value is out of range for month; the date must be a real calendar day in the "
        "reporting year"
    )
    short = clip(problem)
    assert len(short) <= 70 and short.endswith("…")
    kept = short.removesuffix("…")
    assert problem.startswith(kept) and problem[len(kept)] == " "  # ends at a word's end
    assert clip("day value is out of range for month") == "day value is out of range for month"
    assert clip("x" * 100) == "x" * 69 + "…"  # one long token: cut, and it says so


async def test_the_demo_summary_shows_whole_words(tmp_path: Path) -> None:
    """The reasons the demo prints, read from intake.rejected.* on a real JetStream."""
    import json

    import nats

    from investflow.nats_server import NatsServer, free_port, wait_for_jetstream
    from investflow.summary import rejection_reasons
    from shared.streams import ensure_streams

    server = NatsServer(free_port(), tmp_path / "js", log_file=tmp_path / "nats.log")
    server.start()
    try:
        await wait_for_jetstream(server.url)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js, 2)
        problem = (
            "day value is out of range for month, and the date must be a real calendar day "
            "of the reporting year / 日期无效"
        )
        rejected = {"errors": [{"field": "arrived_on", "problem": problem}]}
        await js.publish("intake.rejected.TS01.funds", json.dumps(rejected).encode())
        reasons = await rejection_reasons(js)
        await nc.close()
    finally:
        server.stop()
    [(reason, n)] = reasons.items()
    assert n == 1 and reason.startswith("arrived_on: day value is out of range")
    assert reason.endswith("…"), reason  # it was too long, and says it was cut
    words = reason.removeprefix("arrived_on: ").removesuffix("…").replace(",", "").split()
    assert set(words) <= set(problem.replace(",", "").split()), reason  # no word cut short
