"""The maintainer's side of publishing: connect as every command does, ask the running
services what they decide with, compose and check a publication, put it, and wait until
every service says it is live. Used by `investflow rules publish | rollback | history`
(investflow/rules_cli.py); the services' side is published.py.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import AnyRuleset, Effective, Problem, RulesetError
from .published import BUCKET, Publication, live_subject, loaded_subject, now, sha256


class LifecycleError(Exception):
    """Why a publication or rollback did not happen (or did not reach every service)."""


async def connect(url: str | None) -> Any:
    """A connection with the project's settings (URL, nkey seed or credentials, TLS), or a
    LifecycleError naming the server when nothing answers: never a silent other server."""
    from shared.settings import Settings, connect_nats

    settings = Settings.from_env()
    target = url or settings.nats_url

    async def quiet(_: Exception) -> None:  # the error is reported below, once, in words
        return None

    try:
        return await asyncio.wait_for(
            connect_nats(
                settings,
                target,
                max_reconnect_attempts=1,
                allow_reconnect=False,
                connect_timeout=min(settings.connect_timeout_s, 5),
                error_cb=quiet,
            ),
            timeout=settings.connect_timeout_s + 5,
        )
    except Exception as exc:  # NoServersError, OSError, TimeoutError, an auth violation
        detail = str(exc) or type(exc).__name__
        raise LifecycleError(
            f"cannot connect to NATS at {target} ({detail}): is the system running there? "
            "Set NATS_URL or --url, and NATS_NKEY_SEED_FILE / NATS_TLS_CA_FILE as for the "
            f"other commands / 无法连接 NATS（{target}）"
        ) from None


def identity() -> dict[str, str]:
    """Who publishes: the NATS identity the connection authenticates as, and the OS user."""
    from shared.settings import Settings

    settings = Settings.from_env()
    nats_id = settings.nats_user or "anonymous"
    if settings.nats_nkey_seed_file:
        try:
            import nkeys

            with open(settings.nats_nkey_seed_file, "rb") as fh:
                nats_id = nkeys.from_seed(fh.read().strip()).public_key.decode()
        except Exception:
            nats_id = f"nkey seed {settings.nats_nkey_seed_file}"
    elif settings.nats_creds_file:
        nats_id = f"creds {settings.nats_creds_file}"
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return {"nats": nats_id, "user": user, "host": socket.gethostname()}


def rules_services() -> list[str]:
    from investflow.services import SERVICES

    return [s.name for s in SERVICES if s.rules]


async def kv_or_none(nc: Any) -> Any:
    """The rulesets bucket, or None: a publish never creates it on a server nobody follows."""
    from nats.js.errors import BucketNotFoundError

    try:
        return await nc.jetstream().key_value(BUCKET)
    except BucketNotFoundError:
        return None


async def live_views(nc: Any, services: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Each service's answer to `rules.live.<service>` (its registry snapshot); a service
    that does not answer makes this fail, naming it."""

    async def ask(service: str) -> tuple[str, dict[str, Any] | None]:
        try:
            msg = await nc.request(live_subject(service), b"", timeout=timeout)
            return service, json.loads(msg.data)["rulesets"]
        except Exception:
            return service, None

    answers = dict(await asyncio.gather(*(ask(s) for s in services)))
    silent = [s for s, a in answers.items() if a is None]
    if silent:
        raise LifecycleError(
            f"no answer from {', '.join(silent)} within {timeout:g}s: every service that decides "
            "with rules must be running to publish (nothing was published) "
            f"/ 服务未响应：{', '.join(silent)}；未发布"
        )
    return {s: a for s, a in answers.items() if a is not None}


def agreed_view(views: dict[str, dict[str, Any]], ruleset_id: str) -> dict[str, Any]:
    """The versions of `ruleset_id` every service runs; they must agree."""
    seen: dict[tuple[tuple[str, str], ...], list[str]] = {}
    chosen: dict[str, Any] = {"versions": [], "tests": [], "revision": None}
    for service, view in views.items():
        entry = view.get(ruleset_id) or {"versions": [], "tests": [], "revision": None}
        key = tuple(sorted((v["version"], v["sha256"]) for v in entry["versions"]))
        seen.setdefault(key, []).append(service)
        chosen = entry if not chosen["versions"] else chosen
    if len(seen) > 1:
        described = "; ".join(
            f"{', '.join(names)}: {', '.join(f'{v}({h[:8]})' for v, h in key) or 'none'}"
            for key, names in seen.items()
        )
        raise LifecycleError(
            f"the services do not run the same {ruleset_id} versions ({described}); roll back "
            f"or republish so they agree / 各服务运行的 {ruleset_id} 版本不一致"
        )
    return chosen


def _days(a: Effective, b: Effective) -> str:
    start = max(a.from_, b.from_)
    ends = [d for d in (a.to, b.to) if d is not None]
    return f"{start}..{min(ends) if ends else ''}"


@dataclass
class Candidate:
    ruleset: AnyRuleset
    file: str
    text: str


def compose(
    ruleset_id: str,
    live: list[dict[str, Any]],
    candidates: list[Candidate],
    where_live: str,
) -> tuple[list[dict[str, str]], list[str]]:
    """The versions of the new publication: the live ones, with a candidate replacing the
    version of the same number, plus the new ones. Refuses (RulesetError) any two in force
    on the same day, naming both versions and the days, as `rules validate` does."""
    from .load import load_text

    replaced = {c.ruleset.version for c in candidates}
    kept: list[tuple[AnyRuleset, str, dict[str, str]]] = []
    for v in live:
        if v["version"] in replaced:
            continue
        ruleset = load_text(v["text"], v.get("origin") or where_live)
        entry = {"file": v.get("file") or _file_name(v.get("origin", ""), ruleset)}
        origin = v.get("origin") or entry["file"]
        kept.append((ruleset, f"{where_live} (from {origin})", entry))
    new = [
        (c.ruleset, f"in {c.file}", {"file": c.file.rsplit("/", 1)[-1], "text": c.text})
        for c in candidates
    ]
    files = {c.ruleset.version: c.file for c in candidates}
    problems = []
    every = [*new, *kept]
    for i, (a, _, _) in enumerate(every):
        for b, b_where, _ in every[i + 1 :]:
            if a.version != b.version and a.effective.overlaps(b.effective):
                problems.append(
                    Problem(
                        files.get(a.version, a.key),
                        "",
                        "effective",
                        f"{a.key} ({a.effective}) overlaps {b.key} ({b.effective}) "
                        f"{b_where}: both would decide {_days(a.effective, b.effective)}; one "
                        "version per day — end the earlier one (`to:`) and publish both files "
                        f"together / 生效期重叠：{_days(a.effective, b.effective)} 两个版本同时生效",
                    )
                )
    if problems:
        raise RulesetError(problems)
    versions = []
    for ruleset, _, entry in sorted(every, key=lambda t: t[0].effective.from_):
        text = entry.get("text") or next(v["text"] for v in live if v["version"] == ruleset.version)
        versions.append(
            {
                "file": entry["file"],
                "version": ruleset.version,
                "effective": str(ruleset.effective),
                "text": text,
            }
        )
    return versions, sorted(replaced & {v["version"] for v in live})


def _file_name(origin: str, ruleset: AnyRuleset) -> str:
    tail = origin.rsplit("/", 1)[-1]
    return tail if tail.endswith((".yaml", ".yml")) else f"{ruleset.id}-{ruleset.version}.yaml"


@dataclass
class Confirmation:
    heard: dict[str, dict[str, Any]] = field(default_factory=dict)

    def loaded(self) -> list[str]:
        return sorted(s for s, h in self.heard.items() if h.get("loaded"))

    def refused(self) -> dict[str, str]:
        return {s: str(h.get("error")) for s, h in self.heard.items() if not h.get("loaded")}


async def put_and_confirm(
    nc: Any,
    kv: Any,
    publication: Publication,
    last: int | None,
    services: Iterable[str],
    timeout: float,
) -> tuple[int, Confirmation]:
    """Put the publication (only if the key is still at `last`: two maintainers publishing
    at once cannot overwrite each other unseen) and collect each service's word on it."""
    from nats.js.errors import KeyWrongLastSequenceError

    wanted = set(services)
    sub = await nc.subscribe(loaded_subject("*"))
    confirmation = Confirmation()
    try:
        try:
            if last is None:
                revision = await kv.create(publication.ruleset_id, publication.to_bytes())
            else:
                revision = await kv.update(publication.ruleset_id, publication.to_bytes(), last)
        except KeyWrongLastSequenceError:
            raise LifecycleError(
                f"{publication.ruleset_id} was published by someone else meanwhile; run the "
                "command again / 期间已有他人发布，请重试"
            ) from None
        except Exception as exc:
            if "wrong last sequence" in str(exc) or "key exists" in str(exc):
                raise LifecycleError(
                    f"{publication.ruleset_id} was published by someone else meanwhile; run "
                    "the command again / 期间已有他人发布，请重试"
                ) from None
            raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while wanted - set(confirmation.heard) and (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                break
            try:
                status = json.loads(msg.data)
            except ValueError:
                continue
            if status.get("key") == publication.ruleset_id and status.get("revision") == revision:
                confirmation.heard.setdefault(msg.subject.rsplit(".", 1)[-1], status)
    finally:
        await sub.unsubscribe()
    return revision, confirmation


async def latest(kv: Any, ruleset_id: str) -> Any:
    """The key's newest entry, or None."""
    from nats.js.errors import KeyNotFoundError

    try:
        return await kv.get(ruleset_id)
    except KeyNotFoundError:
        return None


async def history(
    kv: Any, ruleset_id: str, timeout: float = 10.0
) -> list[tuple[int, Publication | None, str]]:
    """Every stored publication of the key, oldest first: (revision, publication or None,
    the problem when the stored value is not a publication)."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    # KeyValue.history() can end before the replay does and report no entries at all
    # (nats-io/nats.py#842, seen here under load). The latest revision read first tells us
    # where the replay ends, so the watch is read up to it, never to the library's marker.
    try:
        last = (await kv.get(ruleset_id)).revision
    except KeyDeletedError as exc:
        last = exc.entry.revision if exc.entry is not None else None
    except KeyNotFoundError:
        return []
    out = []
    watcher = await kv.watch(ruleset_id, include_history=True)
    try:
        async with asyncio.timeout(timeout):
            async for entry in watcher:
                if entry is None:  # the library's marker: not trusted, see above
                    continue
                if entry.value and entry.operation is None:
                    try:
                        out.append(
                            (entry.revision, Publication.from_bytes(ruleset_id, entry.value), "")
                        )
                    except RulesetError as exc:
                        out.append((entry.revision, None, str(exc)))
                if entry.revision >= (last or 0) and (last is not None or entry.delta == 0):
                    break
    except TimeoutError as exc:
        raise LifecycleError(
            f"the history of {ruleset_id} did not arrive within {timeout:.0f} s"
            f" / {timeout:.0f} 秒内未读到 {ruleset_id} 的发布历史"
        ) from exc
    finally:
        await watcher.stop()
    return out


def new_publication(
    ruleset_id: str,
    versions: list[dict[str, str]],
    tests: list[tuple[str, str]],
    action: str,
    note: str,
    replaces: int | None,
    restores: int | None = None,
) -> Publication:
    for v in versions:
        v["sha256"] = sha256(v["text"])
    return Publication(
        ruleset_id,
        versions,
        [{"file": f, "text": t, "sha256": sha256(t)} for f, t in tests],
        action,
        identity(),
        now(),
        note,
        replaces,
        restores,
    )
