"""A service following the rulesets bucket on a real nats-server (issue 11.9, 14.1): a bad
stored value never stops it from starting or from loading the next good publication, and a
publication is checked against the tests it carries, not the service's local checkout."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.rules import RulesetError, RulesetRegistry, published
from shared.rules.lifecycle import new_publication
from shared.rules.ruletest import gate_on_rule_tests
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.timeout(120)

SCORING = (REPO_ROOT / "rulesets" / "scoring-2022.1.yaml").read_text(encoding="utf-8")
TESTS = (REPO_ROOT / "rulesets" / "tests" / "scoring-2022.yaml").read_text(encoding="utf-8")


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    from investflow.nats_server import NatsServer, free_port, wait_for_jetstream

    server = NatsServer(free_port(), tmp_path / "js")
    server.start()
    try:
        await wait_for_jetstream(server.url)
        yield server.url
    finally:
        server.stop()


def publication(text: str = SCORING, tests: str = TESTS) -> bytes:
    return new_publication(
        "scoring",
        [{"file": "scoring-2022.1.yaml", "version": "2022.1", "text": text}],
        [("scoring-2022.yaml", tests)],
        "publish",
        "",
        None,
    ).to_bytes()


async def test_bad_values_stored_before_start_do_not_stop_the_start(nats_url: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    kv = await published.bucket(nc.jetstream())
    await kv.put("scoring", b"\xff\xfe not utf-8")
    await kv.put("review", b"[1, 2")
    await kv.put("review.2022.9", b"\xc3\x28")  # the older single-version form, not UTF-8
    sub = await nc.subscribe("rules.loaded.scoring")
    registry = RulesetRegistry.from_paths([REPO_ROOT / "rulesets"])
    try:
        stop = await published.start_following(nats_url, registry, "scoring", timeout=10)
        said = [json.loads((await sub.next_msg(timeout=10)).data) for _ in range(3)]
        assert all(s["loaded"] is False and s["error"] for s in said), said
        assert registry.in_force("scoring", dt.date(2022, 5, 1)).version == "2022.1"
        # The next good publication is loaded.
        assert "Investment-attraction assessment scoring (2022)" in SCORING
        better = SCORING.replace("scoring (2022)", "scoring (2022, republished)", 1)
        revision = await kv.put("scoring", publication(better))
        for _ in range(3):
            status = json.loads((await sub.next_msg(timeout=10)).data)
            if status["revision"] == revision:
                break
        assert status["loaded"] is True, status
        assert registry.snapshot()["scoring"]["revision"] == revision
        assert "republished" in registry.in_force("scoring", dt.date(2022, 5, 1)).title.en
        await stop()
    finally:
        registry.close()
        await nc.close()


def test_a_publication_is_checked_against_its_own_tests_not_the_local_ones(tmp_path: Path) -> None:
    """After a restart with changed local tests, what was published still loads."""
    changed = tmp_path / "tests"
    changed.mkdir()
    (changed / "scoring-2022.yaml").write_text(
        TESTS.replace("multiplier: 4\n", "multiplier: 7\n"), encoding="utf-8"
    )
    local_gate = gate_on_rule_tests(changed)
    with RulesetRegistry(gate=local_gate) as registry:
        assert local_gate(
            __import__("shared.rules", fromlist=["load_text"]).load_text(SCORING), "x"
        )
        what = published.apply_entry(registry, "scoring", 7, publication())
        assert what == "scoring@2022.1"
        assert registry.snapshot()["scoring"]["revision"] == 7
        # Its own tests failing: refused, nothing changed.
        with pytest.raises(RulesetError, match="rule test failed"):
            published.apply_entry(
                registry,
                "scoring",
                8,
                publication(tests=TESTS.replace("multiplier: 4\n", "multiplier: 7\n")),
            )
        assert registry.snapshot()["scoring"]["revision"] == 7


def test_two_versions_in_force_on_one_day_inside_a_publication_are_refused() -> None:
    other = SCORING.replace('version: "2022.1"', 'version: "2022.2"', 1)
    body = json.loads(publication())
    body["versions"].append({"file": "b.yaml", "version": "2022.2", "text": other})
    with RulesetRegistry() as registry, pytest.raises(RulesetError, match="overlaps"):
        published.apply_entry(registry, "scoring", 3, json.dumps(body).encode())


class EarlyMarker:
    """A real bucket whose watchers first yield the replay-done marker before any entry:
    what nats-py's watch does when the replay is still in flight (nats-io/nats.py#842)."""

    def __init__(self, kv: object) -> None:
        self.kv = kv

    async def get(self, key: str) -> object:
        return await self.kv.get(key)  # type: ignore[attr-defined]

    async def history(self, key: str) -> list[object]:
        """KeyValue.history(), as nats-py writes it: it stops at the first marker."""
        from nats.js.errors import NoKeysError

        watcher = await self.watch(key, include_history=True)
        entries = []
        async for entry in watcher:
            if not entry:
                break
            entries.append(entry)
        await watcher.stop()
        if not entries:
            raise NoKeysError
        return entries

    async def watch(self, key: str, **kw: object) -> object:
        watcher = await self.kv.watch(key, **kw)  # type: ignore[attr-defined]
        await watcher._updates.put(None)  # test-only: the race, made certain
        queued = []
        while not watcher._updates.empty():
            queued.append(watcher._updates.get_nowait())
        for item in [None, *queued]:
            watcher._updates.put_nowait(item)
        return watcher


async def test_history_reads_every_publication_even_when_the_replay_marker_comes_early(
    nats_url: str,
) -> None:
    import nats

    from shared.rules.lifecycle import history

    nc = await nats.connect(nats_url)
    try:
        kv = await published.bucket(nc.jetstream())
        await kv.put("scoring", publication())
        await kv.put("scoring", publication())
        rows = await history(EarlyMarker(kv), "scoring")
        assert [rev for rev, p, _ in rows] == [1, 2]
        assert all(p is not None and p.versions[0]["version"] == "2022.1" for _, p, _ in rows)
        assert await history(kv, "review") == []  # never published: empty, at once
    finally:
        await nc.close()
