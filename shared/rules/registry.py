"""The loaded versions of each ruleset, and the one in force on a given day.

Dates, not clocks: the version is chosen by the date the caller passes (the event's own
date: a lead's `reported_on`, funds' `arrived_on`), never today's date, so a 2022 record
replayed in 2024 is judged by the 2022 rules.

Publishing: `add_version(yaml_text)` validates the text, runs the acceptance gate (the rule
tests, when the registry was given one), compiles and registers it, and only then swaps it
in; anything wrong raises RulesetError and the running versions stay as they were. The
replaced version's engine memory is released.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from .compile import APPLIES, LEAF, MATCH, compile_leaves, compile_ruleset
from .engine import Handle, RulesEngine, RulesEngineError, RulesetDropped, shared_engine
from .facts import to_engine
from .load import load_paths, load_text, with_parameters
from .model import AnyRuleset, Problem, RulesetError
from .resolve import Cmp, Outcome, ResolvedRuleset, resolve

Gate = Callable[[AnyRuleset, str], list[str]]


def _covered(old: AnyRuleset, new: AnyRuleset) -> bool:
    """Every day `old` is in force, `new` is too: nothing would ever pick `old` again."""
    a, b = old.effective, new.effective
    return b.from_ <= a.from_ and (b.to is None or (a.to is not None and a.to <= b.to))


"""Acceptance check run before a version is loaded: the failures (empty: accept)."""


def jsonable(value: Any) -> Any:
    """A parameter value as it appears in an explanation (JSON)."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Evaluation:
    """Which rules of which version matched some facts, with what each one decides."""

    ruleset_id: str
    version: str
    matched: tuple[str, ...]  # in the order the rules are written
    applicable: frozenset[str]  # document rules whose `when` holds (requirement applies)
    resolved: ResolvedRuleset
    facts: Mapping[str, Any]
    on: dt.date
    _leaf_truths: Callable[[], dict[Cmp, bool]] = field(repr=False, compare=False)
    # sha256 of the version's YAML (None for a version built in memory, e.g. a what-if's
    # --set variant): tells two texts published under one version number apart.
    text_sha256: str | None = None

    def outcome(self, rule_id: str) -> Outcome:
        return self.resolved.by_id[rule_id].outcome

    def matched_with(self, *actions: str) -> list[str]:
        return [r for r in self.matched if self.outcome(r).action in actions]

    def rules_with(self, *actions: str) -> list[str]:
        return [r.id for r in self.resolved.rules if r.outcome.action in actions]

    def parameters(self, rule_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """Values of the parameters the given rules (default: all) depend on."""
        ids = [r.id for r in self.resolved.rules] if rule_ids is None else list(rule_ids)
        params = self.resolved.ruleset.parameters
        names = dict.fromkeys(n for rid in ids for n in self.resolved.by_id[rid].parameters)
        return {name: jsonable(params[name].value) for name in names}

    def leaf_truths(self) -> dict[Cmp, bool]:
        """Each comparison of the ruleset, true or false on these facts, as the engine sees it."""
        return self._leaf_truths()


class Rules(Protocol):
    """What the decision functions need: the registry, or a view with parameter overrides."""

    def evaluate(self, ruleset_id: str, facts: Mapping[str, Any], on: dt.date) -> Evaluation: ...

    def parameter(self, ruleset_id: str, name: str, on: dt.date) -> Any: ...

    def in_force(self, ruleset_id: str, on: dt.date) -> AnyRuleset: ...


@dataclass
class _Version:
    resolved: ResolvedRuleset
    handle: Handle
    origin: str
    names: Mapping[str, tuple[str, str]]
    variants: dict[str, _Version] = field(default_factory=dict)
    leaves: tuple[Handle, list[Cmp]] | None = None
    text: str | None = None  # the YAML it was read from: what `rules publish` builds on

    @functools.cached_property
    def text_sha256(self) -> str | None:  # read once `text` is set (after compiling)
        return None if self.text is None else hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def ruleset(self) -> AnyRuleset:
        return self.resolved.ruleset


class RulesetRegistry:
    def __init__(self, *, engine: RulesEngine | None = None, gate: Gate | None = None) -> None:
        self._engine = engine or shared_engine()
        self._gate = gate
        self._changes = threading.RLock()  # one change at a time; readers never wait
        self._versions: dict[str, tuple[_Version, ...]] = {}
        self._serial = itertools.count(1)  # engine names stay unique across republications
        # Per ruleset id, the rule tests (file name, YAML) the running versions passed:
        # shown to `rules publish`, which carries them into the first publication.
        self._tests: dict[str, tuple[tuple[str, str], ...]] = {}
        self._published: dict[str, int] = {}  # ruleset id -> bucket revision in force
        self._recording = threading.local()  # `rules test -v`: the evaluations of one case

    # --- loading ---

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[Path | str],
        *,
        gate: Gate | None = None,
        engine: RulesEngine | None = None,
    ) -> RulesetRegistry:
        registry = cls(engine=engine, gate=gate)
        try:
            for ruleset, origin in load_paths(paths):
                registry.load(ruleset, origin, text=_read(origin))
        except BaseException:
            registry.close()
            raise
        return registry

    def _compile(self, ruleset: AnyRuleset, origin: str, label: str) -> _Version:
        resolved = resolve(ruleset)
        compiled = compile_ruleset(resolved)
        handle = self._engine.register(label, compiled.definition)
        return _Version(resolved, handle, origin, compiled.names)

    def load(
        self,
        ruleset: AnyRuleset,
        origin: str = "<memory>",
        *,
        supersede: bool = False,
        text: str | None = None,
    ) -> None:
        """Load a checked ruleset; the same id and version replaces the running one.

        Files in `rulesets/` may not overlap (one version per day). A *published* version
        (`supersede=True`) may: where it overlaps older ones it takes precedence, since the
        newest publication covering a day decides that day; an older version it covers
        entirely is dropped, so memory stays flat however often rules are published.
        """
        with self._changes:
            current = self._versions.get(ruleset.id, ())
            problems = [
                Problem(
                    origin,
                    "",
                    "effective",
                    f"{ruleset.key} ({ruleset.effective}) overlaps the running {v.ruleset.key} "
                    f"({v.ruleset.effective}): one version per day / 生效期与运行中的版本重叠",
                )
                for v in current
                if not supersede
                and v.ruleset.version != ruleset.version
                and v.ruleset.effective.overlaps(ruleset.effective)
            ]
            if problems:
                raise RulesetError(problems)
            if self._gate is not None:
                failures = self._gate(ruleset, origin)
                if failures:
                    raise RulesetError(
                        [
                            Problem(origin, "", "", f"rule test failed: {f} / 规则测试未通过")
                            for f in failures
                        ]
                    )
            new = self._compile(ruleset, origin, f"{ruleset.key}#{next(self._serial)}")
            new.text = text
            kept = [
                v
                for v in current
                if v.ruleset.version != ruleset.version and not _covered(v.ruleset, ruleset)
            ]
            gone = [v for v in current if v not in kept]
            # Publication order: `_pick` takes the last version covering a day.
            self._versions = {**self._versions, ruleset.id: (*kept, new)}  # the atomic swap
            for old in gone:
                self._drop(old)

    def add_version(self, yaml_text: str, origin: str = "<published>") -> AnyRuleset:
        """Publish a version from its YAML text; refused (RulesetError) unless it validates and
        passes the gate, in which case the running versions are untouched. It takes
        precedence over older versions on the days it covers (see `load`)."""
        ruleset = load_text(yaml_text, origin)
        self.load(ruleset, origin, supersede=True, text=yaml_text)
        return ruleset

    def replace(
        self,
        ruleset_id: str,
        versions: list[tuple[AnyRuleset, str, str]],
        tests: Iterable[tuple[str, str]] = (),
        revision: int | None = None,
    ) -> None:
        """Make exactly `versions` (ruleset, origin, text) of `ruleset_id` the running ones,
        in one swap: a publication is a whole set, so ending one version and starting its
        successor can never be seen half done. Checked beforehand by the caller (the set's
        own tests); an overlap inside the set is refused here all the same."""
        from .load import overlap_problems

        problems = overlap_problems([(r, o) for r, o, _ in versions])
        if problems:
            raise RulesetError(problems)
        with self._changes:
            compiled = []
            try:
                for ruleset, origin, text in versions:
                    version = self._compile(ruleset, origin, f"{ruleset.key}#{next(self._serial)}")
                    version.text = text
                    compiled.append(version)
            except BaseException:
                for version in compiled:
                    self._drop(version)
                raise
            gone = self._versions.get(ruleset_id, ())
            compiled.sort(key=lambda v: v.ruleset.effective.from_)
            self._versions = {**self._versions, ruleset_id: tuple(compiled)}  # the atomic swap
            self._tests = {**self._tests, ruleset_id: tuple(tests)}
            if revision is not None:
                self._published = {**self._published, ruleset_id: revision}
            for old in gone:
                self._drop(old)

    def set_tests(self, tests: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        with self._changes:
            self._tests = {**self._tests, **{k: tuple(v) for k, v in tests.items()}}

    def snapshot(self) -> dict[str, Any]:
        """What runs, for `rules publish`: per id the versions (with their text and sha256),
        the rule tests they passed, and the bucket revision they came from (None: files)."""
        out: dict[str, Any] = {}
        for ruleset_id, group in self._versions.items():
            out[ruleset_id] = {
                "revision": self._published.get(ruleset_id),
                "versions": [
                    {
                        "version": v.ruleset.version,
                        "effective": str(v.ruleset.effective),
                        "origin": v.origin,
                        "sha256": hashlib.sha256((v.text or "").encode()).hexdigest(),
                        "text": v.text,
                    }
                    for v in group
                ],
                "tests": [{"file": f, "text": t} for f, t in self._tests.get(ruleset_id, ())],
            }
        return out

    def remove(self, ruleset_id: str, version: str) -> None:
        with self._changes:
            current = self._versions.get(ruleset_id, ())
            gone = [v for v in current if v.ruleset.version == version]
            self._versions = {
                **self._versions,
                ruleset_id: tuple(v for v in current if v.ruleset.version != version),
            }
            for old in gone:
                self._drop(old)

    def _drop(self, version: _Version) -> None:
        self._engine.unregister(version.handle)
        if version.leaves is not None:
            self._engine.unregister(version.leaves[0])
        for variant in version.variants.values():
            self._drop(variant)

    def close(self) -> None:
        """Release every version's engine memory."""
        with self._changes:
            versions, self._versions = self._versions, {}
            for group in versions.values():
                for version in group:
                    self._drop(version)

    def __enter__(self) -> RulesetRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---

    def versions(self, ruleset_id: str) -> list[AnyRuleset]:
        """Loaded versions by effective date (publication order decides overlaps)."""
        return sorted(
            (v.ruleset for v in self._versions.get(ruleset_id, ())), key=lambda r: r.effective.from_
        )

    def ids(self) -> list[str]:
        return sorted(k for k, v in self._versions.items() if v)

    def _pick(self, ruleset_id: str, on: dt.date) -> _Version:
        if not isinstance(on, dt.date) or isinstance(on, dt.datetime):
            raise TypeError(f"`on` must be a date, got {on!r}")
        versions = self._versions.get(ruleset_id, ())
        for version in reversed(versions):  # the newest publication covering the day decides
            if version.ruleset.effective.covers(on):
                return version
        known = (
            ", ".join(f"{v.ruleset.version} ({v.ruleset.effective})" for v in versions)
            or "none loaded"
        )
        raise LookupError(
            f"no {ruleset_id} ruleset in force on {on} (versions: {known}) / {on} 无生效的 {ruleset_id} 规则集"
        )

    def in_force(self, ruleset_id: str, on: dt.date) -> AnyRuleset:
        return self._pick(ruleset_id, on).ruleset

    def origin(self, ruleset_id: str, on: dt.date) -> str:
        return self._pick(ruleset_id, on).origin

    def parameter(self, ruleset_id: str, name: str, on: dt.date) -> Any:
        return self._pick(ruleset_id, on).ruleset.parameters[name].value

    def evaluate(self, ruleset_id: str, facts: Mapping[str, Any], on: dt.date) -> Evaluation:
        return self._evaluate(ruleset_id, facts, on, None)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Evaluation]]:
        """Collect every evaluation made in this thread meanwhile (a rule test's, to say
        which rules it matched and which it missed by one condition)."""
        seen: list[Evaluation] = []
        self._recording.seen = seen
        try:
            yield seen
        finally:
            self._recording.seen = None

    def with_parameters(
        self,
        ruleset_id: str,
        overrides: Mapping[str, Any],
        *,
        file: str = "<overrides>",
        where: str = "",
    ) -> RulesView:
        """This registry with some parameters of `ruleset_id` replaced (a what-if, or a rule
        test's inline `parameters:`); the running versions are not changed."""
        return RulesView(self, ruleset_id, dict(overrides), file, where)

    def _variant(
        self, version: _Version, overrides: Mapping[str, Any], file: str, where: str
    ) -> _Version:
        key = hashlib.sha256(
            json.dumps(jsonable(overrides), sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()[:12]
        with self._changes:
            if version.handle.dropped:
                raise RulesetDropped(version.handle.name)
            if key not in version.variants:
                changed = with_parameters(version.ruleset, overrides, file, where)
                version.variants[key] = self._compile(
                    changed, version.origin, f"{version.ruleset.key}~{key}"
                )
            return version.variants[key]

    def _evaluate(
        self,
        ruleset_id: str,
        facts: Mapping[str, Any],
        on: dt.date,
        overrides: tuple[Mapping[str, Any], str, str] | None,
    ) -> Evaluation:
        engine_facts = to_engine(facts)
        # A publication may drop the version between picking and firing: pick again.
        for _ in range(3):
            version = self._pick(ruleset_id, on)
            try:
                if overrides is not None and overrides[0]:
                    version = self._variant(version, *overrides)
                fired = self._engine.fire(version.handle, engine_facts)
            except RulesetDropped:
                continue
            matched = {version.names[n][1] for n in fired if n.startswith(MATCH)}
            applies = {version.names[n][1] for n in fired if n.startswith(APPLIES)}
            resolved = version.resolved
            # Document rules without `when` always apply; `a.<id>` exists only for the others.
            applies |= {
                r.id
                for r in resolved.rules
                if r.outcome.documents is not None and r.applies is None
            }
            evaluation = Evaluation(
                ruleset_id=ruleset_id,
                version=resolved.ruleset.version,
                matched=tuple(r.id for r in resolved.rules if r.id in matched),
                applicable=frozenset(applies),
                resolved=resolved,
                facts=facts,
                on=on,
                _leaf_truths=lambda v=version: self._leaf_truths(v, engine_facts),
                text_sha256=version.text_sha256,
            )
            seen = getattr(self._recording, "seen", None)
            if seen is not None:
                seen.append(evaluation)
            return evaluation
        raise RulesEngineError(f"{ruleset_id}: the version in force kept being replaced")

    def _leaf_truths(self, version: _Version, engine_facts: Mapping[str, Any]) -> dict[Cmp, bool]:
        with self._changes:
            if version.handle.dropped:
                raise RulesetDropped(version.handle.name)  # replaced since; nothing to explain on
            if version.leaves is None:
                definition, cmps = compile_leaves(version.resolved)
                handle = self._engine.register(f"{version.handle.name}/leaves", definition)
                version.leaves = (handle, cmps)
            handle, cmps = version.leaves
            fired = self._engine.fire(handle, engine_facts)
        return {c: f"{LEAF}{i}" in fired for i, c in enumerate(cmps)}


@dataclass(frozen=True)
class RulesView:
    """A registry seen with some parameter values replaced for one ruleset id."""

    registry: RulesetRegistry
    ruleset_id: str
    overrides: Mapping[str, Any]
    file: str
    where: str

    def evaluate(self, ruleset_id: str, facts: Mapping[str, Any], on: dt.date) -> Evaluation:
        extra = (self.overrides, self.file, self.where) if ruleset_id == self.ruleset_id else None
        return self.registry._evaluate(ruleset_id, facts, on, extra)

    def parameter(self, ruleset_id: str, name: str, on: dt.date) -> Any:
        if ruleset_id == self.ruleset_id and name in self.overrides:
            return self.overrides[name]
        return self.registry.parameter(ruleset_id, name, on)

    def in_force(self, ruleset_id: str, on: dt.date) -> AnyRuleset:
        return self.registry.in_force(ruleset_id, on)


def _read(origin: str) -> str | None:
    try:
        return Path(origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def test_texts(tests_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """The rule-test files under `tests_dir` by the ruleset id they test (file name, text)."""
    from .load import parse_yaml
    from .ruletest import rule_test_files

    out: dict[str, list[tuple[str, str]]] = {}
    for path in rule_test_files([tests_dir]) if tests_dir.is_dir() else []:
        try:
            text = path.read_text(encoding="utf-8")
            data = parse_yaml(text, str(path))
        except (OSError, UnicodeDecodeError, RulesetError):
            continue
        if isinstance(data, Mapping) and isinstance(data.get("ruleset"), str):
            out.setdefault(data["ruleset"], []).append((path.name, text))
    return out


_default: RulesetRegistry | None = None
_default_lock = threading.Lock()


def rulesets_dir() -> Path:
    from shared.settings import REPO_ROOT

    return Path(os.environ.get("INVESTFLOW_RULESETS", REPO_ROOT / "rulesets"))


def default_registry() -> RulesetRegistry:
    """The rulesets in `rulesets/` (or $INVESTFLOW_RULESETS), each loaded only if it validates
    and passes its rule tests in `rulesets/tests/`. Built once per process."""
    global _default
    with _default_lock:
        if _default is None:
            from .ruletest import gate_on_rule_tests

            directory = rulesets_dir()
            _default = RulesetRegistry.from_paths(
                [directory], gate=gate_on_rule_tests(directory / "tests")
            )
            _default.set_tests(test_texts(directory / "tests"))
        return _default
