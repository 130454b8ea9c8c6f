"""A poison message: dead-lettered with its error after max_deliver, the consumers go on,
and `investflow dlq list` / `replay` show and re-drive it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from investflow.nats_server import free_port
from investflow.runtime import running_system, wait_until_idle
from shared import subjects
from shared.settings import REPO_ROOT
from tests.helpers import lead, publish, read_subject

pytestmark = pytest.mark.timeout(300)
ENV = {
    "INVESTFLOW_MAX_DELIVER": "3",
    "INVESTFLOW_ACK_WAIT": "5",
    "NOTIFY_CLOCK": "business",
    "NOTIFY_DRY_RUN": "1",
}


def dlq(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "investflow.main", "dlq", *args, "--url", url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_poison_is_dead_lettered_listed_and_replayed(tmp_path: Path) -> None:
    async with running_system(
        tmp_path, free_port(), free_port(), echo=False, extra_env=ENV
    ) as system:
        # A canonical event no service can apply (as if a buggy producer wrote it).
        poison = {
            "event_id": "poison-1",
            "project_id": "TS01-POISON",
            "unit": "TS01",
            "idempotency_key": "p",
            "received_at": "2022-03-01T00:00:00Z",
            "data": {"not": "a lead"},
        }
        await publish(system.js, "project.lead", poison, "poison-1")
        good = lead("TS01")
        await publish(system.js, "intake.TS01.lead", good)
        await wait_until_idle(system.js, timeout=120)

        letters = await read_subject(system.js, "DLQ", "dlq.>")
        review_letters = [d for d in letters if d["service"] == "review"]
        assert len(review_letters) == 1
        assert (
            # It can never succeed: dead-lettered on its first delivery, not after max_deliver.
            review_letters[0]["deliveries"] == 1
        )
        # As published, for the replay: the stream's partition token is not in it.
        assert review_letters[0]["subject"] == subjects.keyed("project.lead", "TS01-POISON")
        assert "NotInContract" in review_letters[0]["error"]  # refused at the edge
        # The consumer went on: the good lead behind the poison was screened.
        screened = [
            e["project_id"] for e in await read_subject(system.js, "REVIEW", "review.screened")
        ]
        assert screened == [f"TS01-{good['lead_id']}"]

        listed = dlq("list", "--json", url=system.nats_url)
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        seq = next(r["seq"] for r in rows if r["service"] == "review")
        assert any(r["error"] == review_letters[0]["error"] for r in rows)

        replayed = dlq("replay", str(seq), url=system.nats_url)
        assert replayed.returncode == 0 and "replayed" in replayed.stdout, (
            replayed.stdout + replayed.stderr
        )
        await wait_until_idle(system.js, timeout=120)
        again = [
            d for d in await read_subject(system.js, "DLQ", "dlq.>") if d["service"] == "review"
        ]
        assert len(again) == 2  # re-driven through review, which still cannot apply it
        assert again[1]["headers"]["Nats-Msg-Id"].endswith(f":replay:{seq}")
        assert dlq("replay", "999999", url=system.nats_url).returncode == 1
