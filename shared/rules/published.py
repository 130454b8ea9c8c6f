"""Publishing ruleset versions to running services through a NATS KV bucket.

`investflow rules publish FILE` validates the version, runs its rule tests, and only then
puts its YAML text under `<id>.<version>`. Every service that decides with rules watches
the bucket and loads each put into its registry, where the newest publication covering a
day decides that day (registry.load). A rollback puts an earlier version's text again.
A version that fails validation or its tests is never put, and a service that somehow
receives a bad one logs it and keeps deciding with what it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from .load import load_paths, load_text
from .model import AnyRuleset, Problem, RulesetError
from .registry import Gate, RulesetRegistry

BUCKET = "investflow_rulesets"
log = logging.getLogger("investflow.rules")


def key_of(ruleset_id: str, version: str) -> str:
    return f"{ruleset_id}.{version}"


async def bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=BUCKET,
                history=64,
                storage=StorageType.FILE,
                description="published rulesets",
            )
        )


def check(text: str, origin: str, gate: Gate) -> AnyRuleset:
    """Validate and test a version; RulesetError names what is wrong."""
    ruleset = load_text(text, origin)
    failures = gate(ruleset, origin)
    if failures:
        raise RulesetError(
            [Problem(origin, "", "", f"rule test failed: {f} / 规则测试未通过") for f in failures]
        )
    return ruleset


async def publish(
    js: JetStreamContext, text: str, origin: str, gate: Gate
) -> tuple[AnyRuleset, int]:
    """Check `text`, then put it; returns the ruleset and its KV revision."""
    ruleset = check(text, origin, gate)
    kv = await bucket(js)
    revision = await kv.put(key_of(ruleset.id, ruleset.version), text.encode("utf-8"))
    return ruleset, revision


async def rollback(
    js: JetStreamContext, ruleset_id: str, version: str, gate: Gate, rulesets_dir: Path
) -> tuple[AnyRuleset, int]:
    """Make `version` decide again: republish its text (published before, or a file in rulesets/)."""
    kv = await bucket(js)
    try:
        entry = await kv.get(key_of(ruleset_id, version))
        text, origin = (entry.value or b"").decode("utf-8"), f"kv:{entry.key}@{entry.revision}"
    except KeyNotFoundError:
        files = {(r.id, r.version): o for r, o in load_paths([rulesets_dir])}
        if (ruleset_id, version) not in files:
            known = sorted(k for k in await _keys(kv) if k.startswith(ruleset_id + ".")) + [
                f"{i}.{v} (file)" for i, v in files if i == ruleset_id
            ]
            raise RulesetError(
                [
                    Problem(
                        "",
                        "",
                        "version",
                        f"{ruleset_id} {version} was never published nor is it in {rulesets_dir}; "
                        f"known: {', '.join(known) or 'none'} / 无此版本",
                    )
                ]
            ) from None
        origin = files[(ruleset_id, version)]
        text = Path(origin.split(":")[0]).read_text(encoding="utf-8")
    return await publish(js, text, origin, gate)


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return list(await kv.keys())
    except Exception:  # an empty bucket raises NoKeysError
        return []


def loaded_subject(service: str) -> str:
    return f"rules.loaded.{service}"


async def follow(
    nc: Client, registry: RulesetRegistry, service: str, ready: asyncio.Event | None = None
) -> None:
    """Load every published version, then each new one as it is put; runs until cancelled.

    Each load is announced on `rules.loaded.<service>`, so `rules publish` can tell the
    maintainer when the version is live everywhere, not merely stored.
    """
    kv = await bucket(nc.jetstream())
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:  # the initial values are in: what was published before we started
                if ready is not None:
                    ready.set()
                continue
            origin = f"kv:{entry.key}@{entry.revision}"
            status: dict[str, Any] = {"key": entry.key, "revision": entry.revision}
            try:
                text = (entry.value or b"").decode("utf-8")
                ruleset = await asyncio.to_thread(registry.add_version, text, origin)
                log.warning("loaded published ruleset %s from %s", ruleset.key, origin)
                status["loaded"] = True
            except RulesetError as exc:
                log.error(
                    "refused published ruleset %s; the running version keeps deciding:\n%s",
                    origin,
                    exc,
                )
                status |= {"loaded": False, "error": str(exc)}
            await nc.publish(loaded_subject(service), json.dumps(status).encode())
    finally:
        await watcher.stop()


async def confirmations(
    nc: Client,
    services: list[str],
    work: Callable[[], Awaitable[tuple[AnyRuleset, int]]],
    timeout: float,
) -> tuple[AnyRuleset, int, dict[str, dict[str, Any]]]:
    """Run a publication and collect, per service, what its first replica said of it."""
    heard: dict[str, dict[str, Any]] = {}
    sub = await nc.subscribe("rules.loaded.*")
    try:
        ruleset, revision = await work()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while set(services) - set(heard) and (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                break
            status = json.loads(msg.data)
            if status.get("revision") == revision:
                heard.setdefault(msg.subject.rsplit(".", 1)[-1], status)
    finally:
        await sub.unsubscribe()
    return ruleset, revision, heard


async def start_following(
    nats_url: str, registry: RulesetRegistry, service: str, timeout: float = 30.0
) -> Callable[[], Awaitable[None]]:
    """Follow the bucket on a connection of its own; returns once every earlier publication is
    loaded (so no decision is made with stale rules), with a coroutine function that stops it."""
    from shared.settings import Settings, connect_nats

    nc = await connect_nats(
        Settings.from_env(), nats_url, max_reconnect_attempts=-1, name=f"investflow-{service}-rules"
    )
    ready = asyncio.Event()
    task = asyncio.create_task(follow(nc, registry, service, ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout)
    except BaseException:
        task.cancel()
        await nc.close()
        raise

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()

    return stop
