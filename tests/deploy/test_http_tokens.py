"""The units' HTTP bearer tokens: stored hashed, one unit each, 401 without, 403 on another's path.

The routes run in-process (FastAPI's TestClient, no broker started): the token check comes
before anything touches NATS, and a request it lets through with a bad body gets intake's
own 422, which shows it got past. The 202 of a real post with a token is in
test_compose_wiring.py, against the running service.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from services.intake import app as intake_app
from services.intake import store, tokens
from shared.db import create_tables, make_engine, unit_of_work
from tests.helpers import lead, uid

NOW = dt.datetime(2022, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    create_tables(eng, store.TABLES)
    yield eng
    eng.dispose()


def issue(engine: Engine, unit: str) -> tuple[str, str]:
    with unit_of_work(engine) as session:
        row, token = tokens.issue(session, unit, "test", NOW)
    return row.token_id, token


def test_only_the_hash_is_stored_and_the_token_speaks_for_its_unit(engine: Engine) -> None:
    token_id, token = issue(engine, "TS01")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM intake_api_token")).mappings().all()
    assert token not in json.dumps([dict(r) for r in rows], default=str)
    assert rows[0]["sha256"] == tokens.digest(token)
    assert token.startswith(f"ifk_{token_id}_") and len(token) > 40
    with unit_of_work(engine) as session:
        assert tokens.token_unit(session, token) == "TS01"
        # Same id, wrong secret; malformed; unknown id: none speaks for anyone.
        assert tokens.token_unit(session, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert tokens.token_unit(session, "not-a-token") is None
        assert tokens.token_unit(session, "ifk_00000000_" + "x" * 43) is None


def test_revoked_tokens_stop_working(engine: Engine) -> None:
    token_id, token = issue(engine, "TS01")
    _, second = issue(engine, "TS01")
    _, other = issue(engine, "TS02")
    with unit_of_work(engine) as session:
        assert tokens.revoke(session, token_id, NOW) is not None
    with unit_of_work(engine) as session:
        assert tokens.token_unit(session, token) is None
        assert tokens.token_unit(session, second) == "TS01"
        assert tokens.revoke_unit(session, "TS01", NOW) == 1
    with unit_of_work(engine) as session:
        assert tokens.token_unit(session, second) is None
        assert tokens.token_unit(session, other) == "TS02"
        assert tokens.revoke(session, "nosuchid", NOW) is None


@pytest.mark.parametrize(
    ("raw", "on"), [("1", True), ("true", True), ("", False), ("0", False), (None, False)]
)
def test_auth_is_on_only_when_asked(raw: str | None, on: bool) -> None:
    env = {} if raw is None else {"INTAKE_HTTP_AUTH": raw}
    assert tokens.auth_enabled(env) is on


def test_a_misspelt_switch_stops_the_service() -> None:
    with pytest.raises(SystemExit, match="INTAKE_HTTP_AUTH"):
        tokens.auth_enabled({"INTAKE_HTTP_AUTH": "yes please"})


@pytest.fixture
def client(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(intake_app, "_engine", engine)
    monkeypatch.setattr(intake_app.unit_token, "enabled", True)
    monkeypatch.setattr(intake_app.reader, "enabled", True)
    yield TestClient(intake_app.http)  # no `with`: the broker is never started


def post(client: TestClient, unit: str, token: str | None, body: object = None):  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": uid()}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(
        f"/v1/units/{unit}/lead",
        content=json.dumps(body if body is not None else {"lead_id": "x"}),
        headers=headers,
    )


def test_no_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    reply = post(client, "TS01", None, lead("TS01"))
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["errors"][0]["field"] == "Authorization"


def test_an_unknown_or_revoked_token_is_401(client: TestClient, engine: Engine) -> None:
    assert post(client, "TS01", "ifk_deadbeef_" + "y" * 43).status_code == 401
    assert post(client, "TS01", "garbage").status_code == 401
    token_id, token = issue(engine, "TS01")
    with unit_of_work(engine) as session:
        tokens.revoke(session, token_id, NOW)
    assert post(client, "TS01", token).status_code == 401


def test_unit_a_token_on_unit_b_path_is_403(client: TestClient, engine: Engine) -> None:
    _, token = issue(engine, "TS01")
    reply = post(client, "TS02", token, lead("TS02"))
    assert reply.status_code == 403
    assert "TS01" in reply.json()["errors"][0]["problem"]


def test_the_units_own_token_gets_through_to_validation(client: TestClient, engine: Engine) -> None:
    _, token = issue(engine, "TS01")
    reply = post(client, "TS01", token, {"lead_id": "x"})  # incomplete: intake's own 422
    assert reply.status_code == 422, reply.text
    assert {e["field"] for e in reply.json()["errors"]} >= {"title"}


def test_health_metrics_and_docs_stay_open(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["components"]["securitySchemes"]["HTTPBearer"]
    # /health needs the broker: it is checked open, with tokens on, by the compose healthcheck
    # in test_compose_wiring.py.


def test_a_unit_reads_only_its_own_projects_and_the_center_reads_all(
    client: TestClient, engine: Engine
) -> None:
    """Issue 11 item 14: GET /v1/projects/{id} with auth on (investor names, credit codes)."""
    with unit_of_work(engine) as session:
        session.add(
            store.Project(
                project_id="TS01-P1", attracting_unit="TS01", landing_area="DEVZONE",
                title="年产5万吨新材料项目", investor_name="某某有限公司",
                credit_code="91320100B56779677R", reported_on=dt.date(2022, 3, 1),
            )
        )  # fmt: skip
    assert client.get("/v1/projects/TS01-P1").status_code == 401
    tokens_of = {unit: issue(engine, unit)[1] for unit in ("TS01", "DEVZONE", "TS02", "CENTER")}

    def get(unit: str, pid: str = "TS01-P1"):  # type: ignore[no-untyped-def]
        return client.get(
            f"/v1/projects/{pid}", headers={"Authorization": f"Bearer {tokens_of[unit]}"}
        )

    for unit in ("TS01", "DEVZONE", "CENTER"):  # its unit, its landing area, the Center
        reply = get(unit)
        assert reply.status_code == 200 and reply.json()["credit_code"] == "91320100B56779677R"
    refused = get("TS02")
    assert refused.status_code == 404 and "某某" not in refused.text
    # Not one's own and not there read the same: no probing for other units' ids.
    assert get("TS02", "TS09-NOPE").json() == refused.json()


def test_with_auth_off_no_token_is_asked(client: TestClient) -> None:
    intake_app.unit_token.enabled = False  # restored by monkeypatch
    assert post(client, "TS01", None).status_code == 422


def test_the_cli_issues_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from investflow.main import main

    db = ["--database-url", f"sqlite:///{tmp_path / 'intake.db'}"]
    create_tables(make_engine(db[1]), store.TABLES)  # the system's intake made it
    assert main(["tokens", "issue", "TS03", "--label", "their ERP", *db]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    token_id = token.split("_")[1]
    assert main(["tokens", "list", *db]) == 0
    listing = capsys.readouterr().out
    assert token_id in listing and "TS03" in listing and "their ERP" in listing
    assert token not in listing and token.split("_", 2)[2] not in listing
    assert main(["tokens", "revoke", token_id, *db]) == 0
    assert main(["tokens", "list", "--unit", "TS03", *db]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["tokens", "issue", "NOPE", *db]) == 2
    assert "not a unit" in capsys.readouterr().err
