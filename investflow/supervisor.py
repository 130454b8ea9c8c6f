"""Runs each service as a child process: log lines prefixed, restarted on crash, stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from .services import ServiceSpec

READY_MARK = "investflow: {name} ready"


@dataclass
class Child:
    spec: ServiceSpec
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        specs: tuple[ServiceSpec, ...],
        env: dict[str, str],
        echo: bool = True,
        child_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        extra = child_env or {}
        self.children = {s.key: Child(s, env | s_env(s, env) | extra.get(s.key, {})) for s in specs}
        self.echo = echo
        self.stopping = False
        self.width = max(len(s.key) for s in specs)

    def say(self, name: str, line: str) -> None:
        if self.echo:
            print(f"{name:<{self.width}} | {line}", flush=True)

    async def start(self) -> None:
        for child in self.children.values():
            await self._spawn(child)
            child.tasks.append(asyncio.create_task(self._watch(child)))

    async def _spawn(self, child: Child) -> None:
        child.ready.clear()
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            child.spec.module,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child.env,
        )
        child.tasks.append(asyncio.create_task(self._pump(child, child.proc)))

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        mark = READY_MARK.format(name=child.spec.name)
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            if text == mark:
                child.ready.set()
                continue
            self.say(child.spec.key, text)

    async def _watch(self, child: Child) -> None:
        delay = 1.0
        while True:
            assert child.proc is not None
            started = time.monotonic()
            code = await child.proc.wait()
            if self.stopping:
                return
            if time.monotonic() - started > 60:
                delay = 1.0  # it ran a good while: a fresh crash, not a crash loop
            self.say(child.spec.key, f"exited with {code}; restarting in {delay:.0f}s")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            delay = min(delay * 2, 30.0)
            child.restarts += 1
            await self._spawn(child)

    async def wait_ready(self, timeout: float) -> None:
        async def one(child: Child) -> None:
            await child.ready.wait()

        try:
            await asyncio.wait_for(
                asyncio.gather(*(one(c) for c in self.children.values())), timeout
            )
        except TimeoutError:
            late = [n for n, c in self.children.items() if not c.ready.is_set()]
            raise RuntimeError(
                f"services not ready within {timeout:.0f}s: {', '.join(late)}"
            ) from None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """For fault tests and operators: the supervisor restarts it."""
        proc = self.children[name].proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(sig)

    async def stop(self, timeout: float = 15.0) -> None:
        self.stopping = True
        procs = [c.proc for c in self.children.values() if c.proc and c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), timeout)
        except TimeoutError:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for child in self.children.values():
            for task in child.tasks:
                task.cancel()
            await asyncio.gather(*child.tasks, return_exceptions=True)


def s_env(spec: ServiceSpec, env: dict[str, str]) -> dict[str, str]:
    """Per-service environment: none yet beyond the shared one; here so services can differ."""
    del spec, env
    return {
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (_repo_root(), os.environ.get("PYTHONPATH", "")) if p
        ),
    }


def _repo_root() -> str:
    from shared.settings import REPO_ROOT

    return str(REPO_ROOT)
