"""Publishing rulesets to running services through a NATS KV bucket.

A *publication* is the whole set of versions of one ruleset id that decide from then on,
with the rule tests they passed, stored under the key `<id>` (`scoring`, `review`) as one
JSON document: ending one version and starting its successor is one put, so no service
ever runs half of it. The key's history is the publication history (who, when, the files'
sha256, a note, the revision it replaced); a rollback puts an earlier publication again.

`investflow rules publish FILE...` (investflow/rules_cli.py) asks every rules-deciding
service what it runs (`rules.live.<service>`), checks the candidate set against that with
the same rules as `rules validate` (one version per day) and against the rule tests it
carries, and only then puts it. Each service that follows the bucket re-checks a publication
against the tests it carries (never the local checkout), swaps the whole set in, and says
so on `rules.loaded.<service>`; anything wrong with a stored value (not UTF-8, not JSON, an
invalid ruleset, failing tests) is logged, announced as refused and skipped: the running
versions keep deciding, and the next good publication is loaded.

The older form, one version under `<id>.<version>` as bare YAML (`publish()` below), is still
loaded, taking precedence on the days it covers (registry.load with supersede).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from .load import load_text, overlap_problems
from .model import AnyRuleset, Problem, RulesetError
from .registry import Gate, RulesetRegistry

BUCKET = "investflow_rulesets"
FORMAT = 1
log = logging.getLogger("investflow.rules")


def key_of(ruleset_id: str, version: str) -> str:
    return f"{ruleset_id}.{version}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def bucket(js: JetStreamContext) -> KeyValue:
    """The bucket, created if missing (services do this when they start following)."""
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


# --- a publication ------------------------------------------------------------------------


@dataclass(frozen=True)
class Publication:
    """One stored value of the key `<id>`: the versions that decide, and their tests."""

    ruleset_id: str
    versions: list[dict[str, str]]  # {file, version, effective, sha256, text}
    tests: list[dict[str, str]]  # {file, sha256, text}
    action: str  # publish | rollback | baseline
    by: dict[str, str]
    at: str
    note: str
    replaces: int | None  # the revision in force before this one
    restores: int | None = None  # rollback: the revision whose content this is

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "ruleset": self.ruleset_id,
            "action": self.action,
            "by": self.by,
            "at": self.at,
            "note": self.note,
            "replaces": self.replaces,
            "restores": self.restores,
            "versions": self.versions,
            "tests": self.tests,
        }
        return json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, key: str, raw: bytes | None) -> Publication:
        """Parse a stored value; RulesetError says what is wrong with it."""
        origin = f"kv:{key}"
        try:
            body = json.loads((raw or b"").decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RulesetError(
                [Problem(origin, "", "", f"not UTF-8 ({exc.reason}) / 不是 UTF-8 编码")]
            ) from None
        except ValueError as exc:
            raise RulesetError(
                [Problem(origin, "", "", f"not a publication (JSON: {exc}) / 不是有效的发布记录")]
            ) from None
        try:
            assert isinstance(body, dict) and body.get("format") == FORMAT
            assert body.get("ruleset") == key
            versions = [
                {k: str(v[k]) for k in ("file", "version", "text", "effective") if k in v}
                for v in body["versions"]
            ]
            assert all("text" in v and "version" in v and "file" in v for v in versions)
            tests = [{k: str(t[k]) for k in ("file", "text")} for t in body.get("tests", [])]
            by = {str(k): str(v) for k, v in dict(body.get("by") or {}).items()}
            replaces = body.get("replaces")
            restores = body.get("restores")
            assert replaces is None or isinstance(replaces, int)
            assert restores is None or isinstance(restores, int)
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError):
            raise RulesetError(
                [
                    Problem(
                        origin,
                        "",
                        "",
                        f"not a publication of format {FORMAT} for `{key}` / 发布记录格式不符",
                    )
                ]
            ) from None
        for v in versions:
            v["sha256"] = sha256(v["text"])
        for t in tests:
            t["sha256"] = sha256(t["text"])
        return cls(
            key,
            versions,
            tests,
            str(body.get("action", "publish")),
            by,
            str(body.get("at", "")),
            str(body.get("note", "")),
            replaces,
            restores,
        )

    def rulesets(self, revision: int | None = None) -> list[tuple[AnyRuleset, str, str]]:
        """Each version validated (ruleset, origin, text); RulesetError lists all problems."""
        out, problems = [], []
        at = f"@{revision}" if revision is not None else ""
        for v in self.versions:
            origin = f"kv:{self.ruleset_id}{at}/{v['file']}"
            try:
                ruleset = load_text(v["text"], origin)
            except RulesetError as exc:
                problems.extend(exc.problems)
                continue
            if ruleset.id != self.ruleset_id:
                problems.append(
                    Problem(origin, "", "id", f"a {ruleset.id} ruleset under `{self.ruleset_id}`")
                )
            out.append((ruleset, origin, v["text"]))
        problems.extend(overlap_problems([(r, o) for r, o, _ in out]))
        if problems:
            raise RulesetError(problems)
        return out

    def check(self, revision: int | None = None) -> list[tuple[AnyRuleset, str, str]]:
        """Validated, and passing the rule tests it carries; RulesetError otherwise."""
        from .ruletest import check_set

        versions = self.rulesets(revision)
        failures = check_set(
            [(r, o) for r, o, _ in versions], [(t["file"], t["text"]) for t in self.tests]
        )
        if failures:
            raise RulesetError(
                [
                    Problem(
                        f"kv:{self.ruleset_id}", "", "", f"rule test failed: {f} / 规则测试未通过"
                    )
                    for f in failures
                ]
            )
        return versions

    def summary(self) -> str:
        return ", ".join(
            f"{self.ruleset_id}@{v['version']}"
            + (f" ({v['effective']})" if "effective" in v else "")
            for v in self.versions
        )


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# --- services: follow the bucket ------------------------------------------------------------


def loaded_subject(service: str) -> str:
    return f"rules.loaded.{service}"


def live_subject(service: str) -> str:
    return f"rules.live.{service}"


def apply_entry(registry: RulesetRegistry, key: str, revision: int, value: bytes | None) -> str:
    """Load one stored value into the registry; a short description of what now runs.
    Raises RulesetError (the registry untouched) for anything wrong with the value."""
    if "." in key:  # the older form: one version as YAML under <id>.<version>
        try:
            text = (value or b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RulesetError(
                [Problem(f"kv:{key}", "", "", f"not UTF-8 ({exc.reason}) / 不是 UTF-8 编码")]
            ) from None
        ruleset = registry.add_version(text, f"kv:{key}@{revision}")
        return ruleset.key
    publication = Publication.from_bytes(key, value)
    versions = publication.check(revision)
    registry.replace(
        key,
        versions,
        [(t["file"], t["text"]) for t in publication.tests],
        revision=revision,
    )
    return publication.summary()


async def follow(
    nc: Client, registry: RulesetRegistry, service: str, ready: asyncio.Event | None = None
) -> None:
    """Load every publication, then each new one as it is put; runs until cancelled.

    Each load (or refusal) is announced on `rules.loaded.<service>`, so `rules publish` can
    tell the maintainer where the version is live, not merely stored. A bad stored value
    never stops the loop: it is logged, announced as refused and skipped.
    """

    async def live(msg: Any) -> None:
        await msg.respond(
            json.dumps(
                {"service": service, "rulesets": registry.snapshot()}, ensure_ascii=False
            ).encode("utf-8")
        )

    sub = await nc.subscribe(live_subject(service), cb=live)
    kv = await bucket(nc.jetstream())
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:  # the initial values are in: what was published before we started
                if ready is not None:
                    ready.set()
                continue
            status: dict[str, Any] = {"key": entry.key, "revision": entry.revision}
            try:
                what = await asyncio.to_thread(
                    apply_entry, registry, entry.key, entry.revision, entry.value
                )
                log.warning("loaded published %s from kv:%s@%s", what, entry.key, entry.revision)
                status |= {"loaded": True, "versions": what}
            except Exception as exc:  # whatever is stored, the service keeps running
                text = str(exc) if isinstance(exc, RulesetError) else f"{type(exc).__name__}: {exc}"
                log.error(
                    "refused published kv:%s@%s; the running versions keep deciding:\n%s",
                    entry.key,
                    entry.revision,
                    text,
                )
                status |= {"loaded": False, "error": text}
            try:
                await nc.publish(loaded_subject(service), json.dumps(status).encode())
            except Exception:
                log.exception("could not announce the load of kv:%s", entry.key)
    finally:
        await watcher.stop()
        await sub.unsubscribe()


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
        done, _ = await asyncio.wait(
            [task, asyncio.create_task(ready.wait())],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if task in done:  # following failed before the initial values were in
            task.result()
        if not ready.is_set():
            raise TimeoutError(f"the rulesets bucket did not answer within {timeout}s")
    except BaseException:
        task.cancel()
        await nc.close()
        raise

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()

    return stop


# --- the older, single-version form ---------------------------------------------------------


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
    """Put one version under `<id>.<version>` (the older form; it takes precedence on the days
    it covers). `investflow rules publish` puts whole publications instead."""
    ruleset = check(text, origin, gate)
    kv = await bucket(js)
    revision = await kv.put(key_of(ruleset.id, ruleset.version), text.encode("utf-8"))
    return ruleset, revision
