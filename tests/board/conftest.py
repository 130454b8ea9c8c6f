"""One running system for the board's tests, with the board's tokens required.

The tests share it and keep out of each other's way by unit: each module reports its
projects from units no other module uses, and checks what those units' tokens see.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from services.board import access

SECRET = "test-board-secret-0123456789abcdef"
BOARD_ENV = {
    "BOARD_CLOCK": "business",
    # Review dates filed documents by the business clock too (as the demo does): this year's
    # receipt time would make every 2022 meeting's materials late.
    "REVIEW_CLOCK": "business",
    "BOARD_HTTP_AUTH": "1",
    "BOARD_TOKEN_SECRET": SECRET,
    "NOTIFY_CLOCK": "business",
    "NOTIFY_DRY_RUN": "1",
}


def token(role: str, code: str | None = None, days: int = 30) -> str:
    return access.issue(SECRET.encode(), role, code, dt.date.today() + dt.timedelta(days=days))[1]


@pytest.fixture(scope="package")
async def board_system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator:
    from tests.conftest import system_on

    data = tmp_path_factory.mktemp("board-system")
    revoked = data / "revoked.txt"
    env = BOARD_ENV | {"BOARD_REVOKED_FILE": str(revoked)}
    async with system_on("sqlite", data, extra_env=env) as running:
        running.board_url = running.http_urls["board"]  # type: ignore[attr-defined]
        running.revoked_file = revoked  # type: ignore[attr-defined]
        yield running
