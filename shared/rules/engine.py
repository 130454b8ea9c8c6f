"""The one durable_rules host of the process, used statelessly.

The engine's sharp edges (see docs/durable-rules.md) are contained here:
- one `Host` per process, its two background timer threads never started (they crashed
  `delete_state`; nothing here needs timers);
- one constant session id: the engine caps live sessions at 1024 and then segfaults, so
  facts are asserted on sid "0", every firing collected, and the fact retracted at once;
- `assert_fact` (not `post`) so that every matching rule fires, not just the first;
- a registered ruleset cannot be replaced, so each registration gets a fresh name and an
  old one is deleted from the native engine and from the host's private tables; its session
  state goes first (`delete_ruleset` alone leaves ~175 KB per used ruleset behind; measured
  with bench/rules.py). The native `createStateNode` leaves the state's action context
  uninitialised and `deleteStateNode` frees it, so deleting a state on which no action ever
  ran frees garbage (the crashes the notes saw). Every ruleset therefore gets one internal
  rule that matches only a release fact, asserted just before the state is deleted;
- an action's exception is swallowed into the session state: it is checked after each call.
All calls into the native engine hold one lock; it is not thread-safe.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine
from durable.engine import Host, MessageNotHandledException

SID = "0"
RELEASE = "_release"  # the internal rule run before a state is deleted (see above)
_RELEASE_FIELD = "_release_"  # set only on the release fact; no real fact has it
_RELEASE_RULE = {
    "all": [{"m": {"$and": [{"$ex": {_RELEASE_FIELD: 1}}, {"$nex": {"$s": 1}}]}}],
    "run": RELEASE,
}


class RulesEngineError(RuntimeError):
    """The native engine failed; the evaluation has no result."""


class RulesetDropped(RulesEngineError):
    """The ruleset was unregistered (replaced by a newer publication) before use."""


class _Host(Host):  # type: ignore[misc]
    def __init__(self, on_fire: Callable[[str], None]) -> None:
        self._on_fire = on_fire
        super().__init__()

    def _run(self) -> None:
        # The stock host starts two self-rescheduling timer threads with no way to stop them;
        # with them running, delete_state crashed the process. Evaluation is synchronous.
        return None

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        fire = self._on_fire

        def action(c: Any) -> None:  # one parameter: durable runs it synchronously
            fire(action_name)

        return action


@dataclass
class Handle:
    """A ruleset registered in the engine under a unique name."""

    name: str
    rule_names: frozenset[str]
    dropped: bool = field(default=False)
    used: bool = field(default=False)  # a fact was asserted, so the session state exists


class RulesEngine:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired: list[str] = []
        self._host = _Host(self._fired.append)
        self._fact_ids = itertools.count(1)
        self._generation = itertools.count(1)

    def register(self, label: str, definition: Mapping[str, Any]) -> Handle:
        """Register a durable ruleset definition; `label` (e.g. review@2022.1) names it in logs."""
        name = f"{label}#{next(self._generation)}"
        # The engine deletes `run` from the dict it is given: it must not be ours.
        rules = copy.deepcopy(dict(definition))
        rules[RELEASE] = copy.deepcopy(_RELEASE_RULE)
        with self._lock:
            self._host.register_rulesets({name: rules})
        return Handle(name, frozenset(definition))

    def _delete_state(self, handle: Handle) -> None:
        """Delete the session state, after making sure an action has run on it."""
        fact = {_RELEASE_FIELD: 1, "sid": SID, "id": next(self._fact_ids)}
        self._host.assert_fact(handle.name, fact)
        with contextlib.suppress(MessageNotHandledException):
            self._host.retract_fact(handle.name, fact)
        self._fired.clear()
        self._host.delete_state(handle.name, SID)

    def unregister(self, handle: Handle) -> None:
        """Free a ruleset's native memory; evaluations on it afterwards raise RulesetDropped."""
        with self._lock:
            if handle.dropped:
                return
            handle.dropped = True
            if handle.used:
                self._delete_state(handle)
            ruleset = self._host._ruleset_directory.pop(handle.name, None)
            if ruleset is None:
                return
            self._host._ruleset_list.remove(ruleset)
            durable_rules_engine.delete_ruleset(ruleset._handle)

    def fire(self, handle: Handle, facts: Mapping[str, Any]) -> frozenset[str]:
        """Names of the durable rules that match `facts` (JSON-able, see facts.to_engine)."""
        fact = dict(facts)
        with self._lock:
            if handle.dropped:
                raise RulesetDropped(handle.name)
            fact["sid"] = SID
            fact["id"] = next(self._fact_ids)  # unique, so retracting removes exactly this fact
            self._fired.clear()
            handle.used = True
            try:
                # "Not handled" means no rule matched; the fact is stored all the same.
                with contextlib.suppress(MessageNotHandledException):
                    self._host.assert_fact(handle.name, fact)
                fired = frozenset(self._fired)
                with contextlib.suppress(MessageNotHandledException):
                    self._host.retract_fact(handle.name, fact)
                state = self._host.get_state(handle.name, SID)
            except Exception as exc:
                raise RulesEngineError(f"{handle.name}: {exc}") from exc
            finally:
                self._fired.clear()
            if "exception" in state:
                # Clear it, or every later call would report the same failure; the state is
                # recreated by the next assert. An action ran, so deleting it is safe.
                self._host.delete_state(handle.name, SID)
                raise RulesEngineError(f"{handle.name}: action failed: {state['exception']}")
        return fired

    @property
    def registered(self) -> int:
        """How many rulesets are registered (memory stays bounded only if this does)."""
        with self._lock:
            return len(self._host._ruleset_list)


_shared: RulesEngine | None = None
_shared_lock = threading.Lock()


def shared_engine() -> RulesEngine:
    """The process's engine: every registry uses it, so there is one host per process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RulesEngine()
        return _shared
