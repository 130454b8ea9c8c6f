"""Air-gapped: no page, script or stylesheet refers to anything outside the board itself."""

from __future__ import annotations

import re

from tests.helpers import idle

from .conftest import token
from .support import get, get_json, new_lead

CENTER = token("center")
# Any scheme-qualified or protocol-relative reference, anywhere in the text.
EXTERNAL = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*:)?//[a-z0-9\[]|@import|\burl\(\s*['\"]?(?!data:|/)"
)


def _external(text: str) -> list[str]:
    text = re.sub(r"data:[^\"')\s]+", "data:", text)  # inline images are inside the page
    return [text[max(0, m.start() - 40) : m.end() + 40] for m in EXTERNAL.finditer(text)]


def test_the_pattern_catches_what_it_should() -> None:
    for bad in (
        '<script src="https://cdn.example/x.js">',
        "<link href='//fonts.example/css'>",
        "@import 'x.css';",
        "src: url(fonts/x.woff2)",
        '<svg xmlns="http://www.w3.org/2000/svg">',
    ):
        assert _external(bad), bad
    for good in (
        '<link href="/static/board.css">',
        '<img src="data:image/png;base64,AA//AA">',
        "background: url(/static/x.png)",
    ):
        assert not _external(good), good


async def test_no_page_references_an_external_url(board_system) -> None:
    js, base = board_system.js, board_system.board_url
    pid = await new_lead(js, "TS05", reported_on="2022-04-01")
    await idle(js)
    status, _ = await get_json(base, f"/api/projects/{pid}", CENTER)
    assert status == 200
    paths = [
        "/",
        "/?lang=en",
        "/projects",
        "/projects?stage=review",
        f"/projects/{pid}",
        "/red",
        "/ranking",
        "/weekly",
        "/weekly?on=2022-06-06&lang=en",
        "/ops",
        "/login",
        "/static/board.css",
        "/static/board.js",
        "/static/print.css",
    ]
    for path in paths:
        status, body, _ = get(base, path, CENTER)
        assert status == 200, path
        found = _external(body.decode("utf-8"))
        assert not found, (path, found)
