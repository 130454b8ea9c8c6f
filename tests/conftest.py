"""Fixtures every test shares: real PostgreSQL when it answers, a real running system.

Each test session starts its own nats-server on a free port (never the machine's 4222)
with a temporary store dir, through the same `running_system()` operators use.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("INVESTFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_answers() -> str | None:
    """None when PostgreSQL answers, else why not (the skip reason)."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return None
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} does not answer: {exc}"


PG_SKIP_REASON = _pg_answers()


SLOW = bool(os.environ.get("INVESTFLOW_SLOW"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A flow module that names `SYSTEM_BACKEND` runs its whole-system tests on that backend
    only, unless INVESTFLOW_SLOW (`make test-slow`: every one on both). Storage tests, the
    fault, fuzz and trust-boundary flows keep both; the rest share them out, so each backend
    still carries whole-system flows and `make test` stays within its ten minutes."""
    if SLOW:
        return
    kept, dropped = [], []
    for item in items:
        only = getattr(getattr(item, "module", None), "SYSTEM_BACKEND", None)
        if only == "postgresql" and PG_SKIP_REASON:
            only = "sqlite"  # no PostgreSQL here: the module's flows still run
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = params.get("system")
        (dropped if only and backend and backend != only else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    heaviest_files_first(items)


# Seconds each test file took (`make test-durations` rewrites it). The suite is CPU-bound on
# a small machine: run with `--no-loadscope-reorder`, xdist hands files out in this order,
# longest first, so no long file starts last while the other workers sit idle (before, the
# last eighth of the tests took a third of the run).
DURATIONS = Path(__file__).with_name("durations.json")


def heaviest_files_first(items: list[pytest.Item]) -> None:
    try:
        weights: dict[str, float] = json.loads(DURATIONS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no weights: collection order
    first_seen: dict[str, int] = {}
    for n, item in enumerate(items):
        first_seen.setdefault(item.nodeid.split("::", 1)[0], n)

    def key(item: pytest.Item) -> tuple[float, int]:
        path = item.nodeid.split("::", 1)[0]
        return (-weights.get(path, 1.0), first_seen[path])

    items.sort(key=key)  # stable: a file's tests keep their order


RECORD = bool(os.environ.get("INVESTFLOW_RECORD_DURATIONS"))
_spent: dict[str, float] = {}
_cpu: dict[str, float] = {}
_cpu_mark: list[float] = []


def _cpu_now() -> float:
    """CPU seconds of this worker and every child it has reaped (services, nats-servers):
    on a CPU-bound machine that, not wall time, is what a test costs the others."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def pytest_collection_finish(session: pytest.Session) -> None:
    if RECORD:
        _cpu_mark[:] = [_cpu_now()]  # collection and imports are nobody's test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    if RECORD:
        now = _cpu_now()
        spent = now - (_cpu_mark[-1] if _cpu_mark else now)
        _cpu_mark[:] = [now]
        outcome.get_result().user_properties.append(("cpu_s", spent))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if RECORD:
        path = report.nodeid.split("::", 1)[0]
        _spent[path] = _spent.get(path, 0.0) + report.duration
        cpu = dict(report.user_properties).get("cpu_s", 0.0)
        _cpu[path] = _cpu.get(path, 0.0) + float(cpu)  # type: ignore[arg-type]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECORD and _cpu:
        terminalreporter.section("CPU seconds per test file (with its services), top 30")
        for path, cpu in sorted(_cpu.items(), key=lambda kv: -kv[1])[:30]:
            terminalreporter.write_line(f"{cpu:8.1f} cpu  {_spent[path]:8.1f} wall  {path}")
        terminalreporter.write_line(f"{sum(_cpu.values()):8.1f} cpu in all")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The controller (or a run without xdist) sees every report; xdist workers write nothing.
    if not RECORD or hasattr(session.config, "workerinput"):
        return
    if _spent:
        ordered = dict(sorted(((k, round(v, 1)) for k, v in _spent.items()), key=lambda kv: -kv[1]))
        DURATIONS.write_text(json.dumps(ordered, indent=1) + "\n", encoding="utf-8")


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A throwaway database on the local server, dropped afterwards."""
    import psycopg

    name = f"investflow_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs on SQLite and, where it answers, on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if PG_SKIP_REASON:
        pytest.skip(PG_SKIP_REASON)
    with fresh_pg_database() as url:
        yield url


@contextlib.asynccontextmanager
async def system_on(
    backend: str,
    data: Path,
    *,
    services: tuple | None = None,
    extra_env: dict[str, str] | None = None,
    replicas: dict[str, int] | None = None,
) -> AsyncIterator:
    """The system (or some of its services) on free ports over SQLite or a fresh PostgreSQL
    database; `.database_url` is the PostgreSQL URL, or None on SQLite (a file per service)."""
    from investflow.nats_server import free_port
    from investflow.runtime import running_system
    from investflow.services import SERVICES

    env = {"INVESTFLOW_DUPLICATE_WINDOW": "2", "INVESTFLOW_ACK_WAIT": "5"} | (extra_env or {})
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            if PG_SKIP_REASON:
                pytest.skip(PG_SKIP_REASON)
            env["DATABASE_URL"] = stack.enter_context(fresh_pg_database())
        async with running_system(
            data,
            free_port(),
            free_port(),
            services=services or SERVICES,
            echo=bool(os.environ.get("INVESTFLOW_ECHO")),
            extra_env=env,
            replicas=replicas,
        ) as running:
            running.database_url = env.get("DATABASE_URL")  # type: ignore[attr-defined]
            yield running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator:
    """The whole system on free ports, SQLite or PostgreSQL behind it; one per test module.
    `.database_url` is intake's database."""
    data = tmp_path_factory.mktemp(f"system-{request.param}")
    async with system_on(request.param, data) as running:
        running.database_url = running.database_url or f"sqlite:///{data / 'intake.db'}"
        yield running
