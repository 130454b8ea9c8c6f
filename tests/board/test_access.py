"""Who sees what: signed board tokens, checked without any lookup, and every refusal."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from services.board import access
from tests.helpers import idle

from .conftest import SECRET, token
from .support import get, get_json, new_lead

KEY = SECRET.encode()
TODAY = dt.date(2026, 1, 10)


def test_a_token_names_its_role_and_code() -> None:
    token_id, tok = access.issue(KEY, "unit", "TS07", dt.date(2026, 2, 1))
    viewer = access.Verifier(KEY).verify(tok, TODAY)
    assert (viewer.role, viewer.code, viewer.token_id) == ("unit", "TS07", token_id)
    assert not viewer.sees_all and not viewer.ops
    assert access.Verifier(KEY).verify(access.issue(KEY, "center", None, TODAY)[1], TODAY).sees_all


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda t: t.replace("ifb.", "ifk_", 1), "not a board token"),
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "signature"),
        (lambda t: t + ".x", "not a board token"),
        (lambda t: "", "not a board token"),
    ],
)
def test_a_mangled_token_is_refused(mangle, problem) -> None:  # type: ignore[no-untyped-def]
    _, tok = access.issue(KEY, "unit", "TS07", dt.date(2026, 2, 1))
    with pytest.raises(access.TokenError, match=problem):
        access.Verifier(KEY).verify(mangle(tok), TODAY)


def test_a_unit_cannot_rewrite_its_token_to_another_unit() -> None:
    _, tok = access.issue(KEY, "unit", "TS01", dt.date(2026, 2, 1))
    prefix, payload, signature = tok.split(".")
    body = json.loads(access._unb64(payload))
    forged = access._b64(json.dumps(body | {"c": "TS02"}).encode())
    with pytest.raises(access.TokenError, match="signature"):
        access.Verifier(KEY).verify(f"{prefix}.{forged}.{signature}", TODAY)
    with pytest.raises(access.TokenError, match="signature"):  # another deployment's secret
        access.Verifier(b"another secret").verify(tok, TODAY)


def test_expired_revoked_and_unconfigured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_id, tok = access.issue(KEY, "leader", "L03", dt.date(2026, 1, 9))
    with pytest.raises(access.TokenError, match="expired"):
        access.Verifier(KEY).verify(tok, TODAY)
    token_id, tok = access.issue(KEY, "leader", "L03", dt.date(2026, 3, 1))
    revoked = tmp_path / "revoked"
    verifier = access.Verifier(KEY, revoked)
    assert verifier.verify(tok, TODAY).code == "L03"  # no file yet: nothing revoked
    revoked.write_text(f"# withdrawn 2026-01-10\n{token_id}  # lost laptop\n")
    with pytest.raises(access.TokenError, match="revoked"):
        verifier.verify(tok, TODAY)
    with pytest.raises(access.TokenError, match="BOARD_TOKEN_SECRET"):
        access.Verifier(None).verify(tok, TODAY)
    with pytest.raises(access.TokenError, match="role"):
        access.issue(KEY, "mayor", "L01", TODAY)
    with pytest.raises(access.TokenError, match="code"):
        access.issue(KEY, "unit", None, TODAY)


async def test_nothing_but_health_answers_without_a_token(board_system) -> None:
    base = board_system.board_url
    status, _, _ = get(base, "/health", None)
    assert status == 200
    for path in (
        "/",
        "/projects",
        "/red",
        "/ranking",
        "/ranking.xlsx",
        "/weekly",
        "/ops",
        "/api/overview",
        "/api/projects",
        "/api/version",
        "/metrics",
        "/static/board.css",
        "/projects/TS01-x",
        "/docs",
        "/openapi.json",
    ):
        status, body, headers = get(base, path, None)
        assert status == 401, path
        if path.startswith("/api/"):
            problem = json.loads(body)["errors"][0]
            assert problem["field"] == "Authorization" and "须提供" in problem["problem"]
            assert headers.get("www-authenticate", "").startswith("Bearer")
        else:
            assert b'name="token"' in body  # the login form, and nothing else
    status, body, _ = get(base, "/api/overview", "ifb.bogus.token")
    assert status == 401 and "签名" in json.loads(body)["errors"][0]["problem"]


async def test_roles_refused_where_they_do_not_belong(board_system) -> None:
    base = board_system.board_url
    unit, leader = token("unit", "TS08"), token("leader", "L06")
    for path in ("/ops", "/weekly"):
        status, body, _ = get(base, path, unit)
        assert status == 403, path
        assert json.loads(body)["errors"][0]["field"] == "Authorization"
    status, _, _ = get(base, "/ops", leader)
    assert status == 403
    status, body, _ = get(base, "/weekly?on=2022-06-06", leader)
    assert status == 200 and "挂图作战" in body.decode()
    status, _, _ = get(base, "/ops", token("admin"))
    assert status == 200


async def test_a_metrics_token_reads_metrics_and_nothing_else(board_system) -> None:
    """Prometheus scrapes the board with a token of its own that opens no page."""
    base, scraper = board_system.board_url, token("metrics")
    status, body, _ = get(base, "/metrics", scraper)
    assert status == 200 and b"investflow_board_messages_total" in body
    for path in ("/", "/projects", "/api/projects", "/api/overview", "/ops", "/ranking.xlsx"):
        status, body, _ = get(base, path, scraper)
        assert status == 403, path
        if path.startswith("/api/"):
            assert "/metrics" in json.loads(body)["errors"][0]["problem"]


async def test_a_revoked_token_stops_working(board_system) -> None:
    js, base = board_system.js, board_system.board_url
    await new_lead(js, "TS08", reported_on="2022-02-01")
    await idle(js)
    token_id, tok = access.issue(KEY, "unit", "TS08", dt.date.today() + dt.timedelta(days=5))
    status, body = await get_json(base, "/api/projects", tok)
    assert (
        status == 200 and body["rows"] and all(r["attracting_unit"] == "TS08" for r in body["rows"])
    )
    board_system.revoked_file.write_text(token_id + "\n")
    status, body = await get_json(base, "/api/projects", tok)
    assert status == 401 and "吊销" in body["errors"][0]["problem"]
    board_system.revoked_file.write_text("")


def test_the_cli_issues_a_token_the_board_accepts(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from investflow.main import main

    monkeypatch.setenv("BOARD_TOKEN_SECRET", SECRET)
    assert main(["board", "token", "unit", "TS02", "--days", "3"]) == 0
    tok = capsys.readouterr().out.strip().splitlines()[-1]
    viewer = access.Verifier(KEY).verify(tok)
    assert (viewer.role, viewer.code) == ("unit", "TS02")
    assert main(["board", "token", "unit", "NOPE"]) == 1
    assert "NOPE" in capsys.readouterr().err
    monkeypatch.delenv("BOARD_TOKEN_SECRET")
    assert main(["board", "token", "center"]) == 1
