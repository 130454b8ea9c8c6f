"""Province-year soak (issue 17 item 4): a generated year through the live system.

    .venv/bin/python bench/soak.py [--leads 100000] [--nodes 3] [--seed 2022]
    make soak                                   # the full size: 100,000 leads on 3 nodes

1. `samples/generate.py --leads N` writes the year (leads, documents, milestones, funds,
   visits, meetings, decisions, rates, and its marked cases) into a temporary directory.
2. The whole system starts as `investflow up` runs it: every service a process, on one
   nats-server (`--nodes 1`) or a three-node JetStream cluster on loopback (`--nodes 3`,
   every stream R3).
3. Every line is published as the units would: in file order, under its `msg_id`
   (`Nats-Msg-Id`), at most `--in-flight` publishes unacknowledged, at most
   `--intake-backlog` messages in the units' inboxes (default: five business days' worth, at
   most 200: intake reads the inboxes side by side, so a message can overtake that many
   others, and a duplicate claim reported 10-30 days after its original must not overtake
   it), and at most `--window` funds records published whose first `score.credited` /
   `score.held` has not come yet (so the feed runs at the pipeline's pace and the latency is
   not one long queue).
4. Latency: per funds record, from its publish to the first `score.credited` or
   `score.held` naming its project and funds id, on a subscriber of this process.
5. After the last outcome, every consumer drains and every process goes quiet; then the
   final counts are checked against what the file itself says should come of it (below).

It prints sustained throughput, p50/p99 latency, each process's RSS at start, middle and end,
CPU seconds per process, and the counts; writes JSON to bench/results/ and its section of
docs/performance.md (bench/pipeline.py's part stays as it is). Exit status 1 when a count
differs or the run did not finish.

Expected counts, from the generated file by the rules in samples/README.md: a funds record
is a `intake.<unit>.funds` line not marked `bad:*` (the one `bad:negative_amount` line is
refused by intake), counted once per (project_id, funds_id) however often it is sent (a
`resend` line repeats an earlier one's msg_id and data). Each must end in exactly one state:
credited (one `score.credited` more than `score.reversed`), held (no standing credit, at
least one `score.held`) or withdrawn (the target of a `withdrawal` line: its credit, if any,
reversed and a `score.held` saying it was withdrawn). No record may stand credited twice (credits - reversals > 1), none may be
missing, and no event may name a record the file does not have. Whether a record ends
credited or held is review's and scoring's rules (recognition, policy, exchange rates), not
the generator's, so those two numbers are read, not predicted; but they must add up with
the withdrawn ones to the file's total, the corrected record must stand credited, and
scoring's own table (`scoring_funds.state`) must say the same of every record as the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import (  # noqa: E402
    SOAK_BEGIN,
    SOAK_END,
    cpu_s,
    percentile,
    rss_mb,
    split_soak,
    until_quiet,
    with_soak,
)
from investflow.feed import body_of  # noqa: E402

# As the demo and bench/pipeline.py: notifications into notify's dry-run file, and the
# business clock's time triggers out of the measurement.
ENV = {"NOTIFY_DRY_RUN": "1", "NOTIFY_CLOCK": "business", "NOTIFY_TICK_S": "3600"}

Key = tuple[str, str]  # (project_id, funds_id)


# ---- what the file says should come of it ------------------------------------------------


@dataclass
class Expected:
    lines: int = 0
    per_kind: Counter[str] = field(default_factory=Counter)
    funds: set[Key] = field(default_factory=set)  # valid funds records, once each
    funds_lines: int = 0  # valid funds lines, resends included
    resends: int = 0  # lines of any kind marked `resend`
    bad_funds: int = 0
    withdrawn: set[Key] = field(default_factory=set)
    corrected: set[Key] = field(default_factory=set)
    rate_missing: set[Key] = field(default_factory=set)


def expected_from(path: Path) -> Expected:
    exp = Expected()
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            line = json.loads(raw)
            exp.lines += 1
            kind = line["subject"].rsplit(".", 1)[1]
            exp.per_kind[kind] += 1
            case = line.get("case", "")
            exp.resends += case == "resend"
            data = line.get("data") or {}
            if kind == "funds":
                if case.startswith("bad:") or "raw" in line:
                    exp.bad_funds += 1
                    continue
                key = (data["project_id"], data["funds_id"])
                exp.funds.add(key)
                exp.funds_lines += 1
                if case == "rate_missing":
                    exp.rate_missing.add(key)
            elif kind in ("withdrawal", "correction") and not case.startswith("bad:"):
                target = data["target"]
                if target.get("kind") == "funds":
                    key = (target["project_id"], target["funds_id"])
                    (exp.withdrawn if kind == "withdrawal" else exp.corrected).add(key)
    return exp


@dataclass
class Outcomes:
    """Per funds record, the score.* events about it (from the SCORE stream, after the drain)."""

    credited: Counter[Key] = field(default_factory=Counter)
    held: Counter[Key] = field(default_factory=Counter)
    reversed: Counter[Key] = field(default_factory=Counter)
    # score.held events that say the record (or its project) was withdrawn (撤回): scoring
    # announces a withdrawal so, after reversing the credit if there was one.
    withdrawal_held: Counter[Key] = field(default_factory=Counter)


def says_withdrawn(reason: str) -> bool:
    """The reason of a score.held that withdraws (services/scoring/record.py `_amendment`,
    ledger.settle for a withdrawn project)."""
    return reason.startswith("funds withdrawn (version ") or reason.startswith("project withdrawn")


def check(exp: Expected, out: Outcomes, db_state: dict[Key, str] | None) -> dict[str, Any]:
    """Final counts and every way they can be wrong; `ok` only when there is none."""
    seen = set(out.credited) | set(out.held) | set(out.reversed)
    state: dict[Key, str] = {}
    problems: list[str] = []
    doubled = []
    # A record withdrawn before it reached scoring is stored withdrawn and says nothing.
    for key in exp.withdrawn - seen:
        state[key] = "withdrawn"
    for key in seen:
        net = out.credited[key] - out.reversed[key]
        if net > 1 or net < 0:
            doubled.append(key)
            state[key] = f"net {net}"
        elif net == 1:
            state[key] = "credited"
        elif out.withdrawal_held[key]:
            state[key] = "withdrawn"
        elif out.held[key]:
            state[key] = "held"
        else:
            state[key] = "reversed, not held"  # a credit taken back and nothing said why
    counts = Counter(state.values())
    missing = exp.funds - seen - exp.withdrawn
    unknown = seen - exp.funds
    if missing:
        problems.append(
            f"{len(missing)} funds records never credited or held: {sorted(missing)[:5]}"
        )
    if unknown:
        problems.append(
            f"{len(unknown)} score events for records the file has not: {sorted(unknown)[:5]}"
        )
    if doubled:
        problems.append(
            f"{len(doubled)} records credited more than once net: {sorted(doubled)[:5]}"
        )
    odd = {k: s for k, s in state.items() if s not in ("credited", "held", "withdrawn")}
    if odd and not doubled:
        problems.append(f"{len(odd)} records in no final state: {sorted(odd.items())[:5]}")
    wrong_withdrawn = {k for k in exp.withdrawn if state.get(k) != "withdrawn"}
    if wrong_withdrawn:
        problems.append(f"withdrawn (撤回) records not withdrawn: {sorted(wrong_withdrawn)}")
    extra_withdrawn = {k for k, s in state.items() if s == "withdrawn"} - exp.withdrawn
    if extra_withdrawn:
        problems.append(f"records withdrawn that no line withdrew: {sorted(extra_withdrawn)[:5]}")
    wrong_corrected = {k for k in exp.corrected if state.get(k) != "credited"}
    if wrong_corrected:
        problems.append(
            f"corrected (更正) records not standing credited: {sorted(wrong_corrected)}"
        )
    total = counts["credited"] + counts["held"] + counts["withdrawn"]
    if total != len(exp.funds):
        problems.append(
            f"credited {counts['credited']} + held {counts['held']} + withdrawn "
            f"{counts['withdrawn']} = {total}, the file has {len(exp.funds)} funds records"
        )
    db_differs: list[tuple[Key, str, str]] = []
    if db_state is not None:
        for key in exp.funds | set(db_state):
            if db_state.get(key, "absent") != state.get(key, "absent"):
                db_differs.append((key, state.get(key, "absent"), db_state.get(key, "absent")))
        if db_differs:
            problems.append(
                f"{len(db_differs)} records where the stream and scoring's table differ "
                f"(key, stream, table): {sorted(db_differs)[:5]}"
            )
    return {
        "expected_funds_records": len(exp.funds),
        "funds_lines_sent": exp.funds_lines,
        "credited": counts["credited"],
        "held": counts["held"],
        "withdrawn": counts["withdrawn"],
        "events": {
            "score.credited": sum(out.credited.values()),
            "score.held": sum(out.held.values()),
            "score.reversed": sum(out.reversed.values()),
        },
        "scoring_table_checked": db_state is not None,
        "problems": problems,
        "ok": not problems,
    }


# ---- the run -----------------------------------------------------------------------------


class Progress:
    """One line on stderr, redrawn in place on a terminal; a plain line every 10 s otherwise."""

    def __init__(self, total: int, funds: int) -> None:
        self.total, self.funds = total, funds
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def show(self, fed: int, credited: int, held: int, done: bool = False) -> None:
        now = time.monotonic()
        if not done and now - self.last < (0.5 if self.tty else 10):
            return
        self.last = now
        elapsed = max(0.001, now - self.started)
        rate = fed / elapsed
        settled = credited + held
        # By messages fed, not funds settled: the feed keeps the funds close behind it (the
        # window), and a year's funds come late, so their share promised hours at first.
        frac = fed / self.total if self.total else 1.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        width = 24
        bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
        text = (
            f"[{bar}] fed {fed}/{self.total} msgs | funds {settled}/{self.funds} "
            f"(credited {credited}, held {held}) | {rate:.0f} msg/s | "
            f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}"
        )
        if self.tty:
            print("\r" + text + "\x1b[K", end="\n" if done else "", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def _load() -> float:
    """The machine's 1-minute load average: other users' work shows in the wall times."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def generate_year(leads: int, seed: int, out: Path) -> float:
    """samples/generate.py as a process, its progress (every 10 % from 10,000 leads) shown."""
    started = time.monotonic()
    cmd = [sys.executable, str(ROOT / "samples" / "generate.py"), "--leads", str(leads)]
    subprocess.run([*cmd, "--seed", str(seed), "--out", str(out)], check=True)
    return time.monotonic() - started


async def publish(js: Any, subject: str, body: bytes, msg_id: str) -> Any:
    """As a unit does: a publish not acknowledged is sent again under the same msg_id.

    On a cluster, a re-send arriving while the first copy is still being replicated is
    refused with 10158 ("duplicate message id is in process"): sent again a moment later,
    it is acknowledged as the duplicate it is."""
    import nats.errors
    import nats.js.errors

    for attempt in range(20):
        try:
            return await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=10)
        except nats.js.errors.APIError as exc:
            if exc.err_code != 10158 or attempt == 19:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
        except (
            nats.errors.TimeoutError,
            nats.js.errors.NoStreamResponseError,
            nats.errors.NoRespondersError,
        ):
            if attempt == 19:
                raise
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


class IntakeBacklog:
    """Messages in the units' inboxes intake has not finished with, polled from JetStream;
    between polls, whatever was fed since the poll began counts as waiting too."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.polled_backlog = 0
        self.fed_at_poll = 0
        self.fed = 0  # kept current by backlog(fed)

    def backlog(self, fed: int) -> int:
        self.fed = fed
        return self.polled_backlog + fed - self.fed_at_poll

    async def poll(self, every: float = 0.25) -> None:
        while True:
            fed = self.fed
            total = 0
            with contextlib.suppress(Exception):  # a poll lost to a leader election: next one
                # The inboxes are work queues: a message leaves once intake acknowledged it,
                # so one stream listing says it all.
                for info in await self.js.streams_info():
                    if info.config.name.startswith("INTAKE_"):
                        total += int(info.state.messages or 0)
                self.polled_backlog, self.fed_at_poll = total, fed
            await asyncio.sleep(every)


async def read_outcomes(js: Any) -> Outcomes:
    """Every score.credited/held/reversed on the SCORE stream, counted per record."""
    out = Outcomes()
    for subject, counter in (
        ("score.credited", out.credited),
        ("score.held", out.held),
        ("score.reversed", out.reversed),
    ):
        stored = f"{subject}.>"  # every key and partition (shared/subjects.py)
        info = await js.stream_info("SCORE", subjects_filter=stored)
        expected = sum((info.state.subjects or {}).values())
        if not expected:
            continue
        sub = await js.subscribe(
            stored, stream="SCORE", ordered_consumer=True, pending_msgs_limit=-1
        )
        try:
            for _ in range(expected):
                msg = await sub.next_msg(timeout=30)
                event = json.loads(msg.data)
                key = (event["project_id"], event["funds_id"])
                counter[key] += 1
                if subject == "score.held" and says_withdrawn(event["reason"]):
                    out.withdrawal_held[key] += 1
        finally:
            await sub.unsubscribe()
    return out


def scoring_table(data_dir: Path) -> dict[Key, str] | None:
    """scoring_funds.state per record, from scoring's SQLite file (None: not on SQLite)."""
    path = data_dir / "scoring.db"
    if os.environ.get("DATABASE_URL") or not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {
            (p, f): s
            for p, f, s in db.execute("SELECT project_id, funds_id, state FROM scoring_funds")
        }


async def run(
    args: argparse.Namespace, year: Path, exp: Expected, data_dir: Path
) -> dict[str, Any]:
    from investflow.nats_server import free_port
    from investflow.runtime import running_system, wait_until_idle

    up_started = time.monotonic()
    async with running_system(
        data_dir, free_port(), free_port(), echo=False, extra_env=ENV, cluster=args.nodes
    ) as system:
        up_s = time.monotonic() - up_started
        procs = {n: c.proc.pid for n, c in system.supervisor.children.items() if c.proc}
        if system.nats_cluster is not None:
            for node, server in zip(
                system.nats_cluster.nodes, system.nats_cluster.servers, strict=True
            ):
                procs[f"nats-{node.name}"] = server.proc.pid
        elif system.nats_server is not None and system.nats_server.proc is not None:
            procs["nats-server"] = system.nats_server.proc.pid
        procs["soak (feeder)"] = os.getpid()
        # What each process spends doing nothing (heartbeats, Raft, timers), to read the
        # per-record CPU against: small runs are dominated by it.
        idle_from = {n: cpu_s(p) for n, p in procs.items()}
        await asyncio.sleep(args.idle_probe)
        idle_pct = {
            n: round((cpu_s(p) - idle_from[n]) * 100 / max(0.001, args.idle_probe), 1)
            for n, p in procs.items()
        }
        load = {"start": _load()}
        rss: dict[str, dict[str, float]] = {
            "start": {n: round(rss_mb(p), 1) for n, p in procs.items()}
        }
        cpu_start = {n: cpu_s(p) for n, p in procs.items()}

        sent: dict[Key, float] = {}
        first: dict[Key, float] = {}
        last_kind: dict[Key, str] = {}
        settled_at: list[float] = []  # first outcomes in arrival order
        live = Counter()

        async def on_score(msg: Any) -> None:
            kind = msg.subject.split(".")[1]  # score.<kind>.<key>
            event = json.loads(msg.data)
            key = (event["project_id"], event["funds_id"])
            now = time.perf_counter()
            if key not in first:
                first[key] = now
                settled_at.append(now)
            if kind in ("credited", "held"):
                before = last_kind.get(key)
                if before:
                    live[before] -= 1
                last_kind[key] = kind
                live[kind] += 1
            elif kind == "reversed" and last_kind.get(key) == "credited":
                live["credited"] -= 1
                last_kind[key] = "reversed"

        subs = [
            await system.nc.subscribe(
                f"score.{k}.*", cb=on_score, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
            for k in ("credited", "held", "reversed")
        ]
        bar = Progress(exp.lines, len(exp.funds))
        in_flight = asyncio.Semaphore(args.in_flight)
        tasks: set[asyncio.Task[Any]] = set()
        duplicates = 0
        errors: list[str] = []
        fed = 0
        window_waits = 0.0

        async def send(line: dict[str, Any]) -> None:
            nonlocal duplicates
            try:
                ack = await publish(system.js, line["subject"], body_of(line), line["msg_id"])
                duplicates += int(bool(ack.duplicate))
            except Exception as exc:  # counted and reported, the feed goes on
                detail = {k: getattr(exc, k, None) for k in ("code", "err_code", "description")}
                errors.append(f"{line['msg_id']}: {exc!r} {detail}")
            finally:
                in_flight.release()

        t0 = time.perf_counter()
        middle_at = exp.lines // 2
        stalled = window_off = False
        intake = IntakeBacklog(system.js)
        poller = asyncio.create_task(intake.poll())
        with year.open(encoding="utf-8") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                is_funds = (
                    line["subject"].endswith(".funds")
                    and "raw" not in line
                    and not line.get("case", "").startswith("bad:")
                )
                # Two bounds, waited for together: intake's backlog (the units' inboxes are
                # read side by side, so a message may overtake at most that many others; a
                # duplicate claim must not overtake the lead it duplicates, 10-30 days
                # earlier), and the funds records still awaiting their first outcome.
                waited = time.monotonic()
                progress_at = ((len(first), intake.polled_backlog), time.monotonic())
                while not window_off and (
                    intake.backlog(fed) >= args.intake_backlog
                    or (is_funds and len(sent) - len(first) >= args.window)
                ):
                    await asyncio.sleep(0.02)
                    bar.show(fed, live["credited"], live["held"])
                    moved = (len(first), intake.polled_backlog)
                    if moved != progress_at[0]:
                        progress_at = (moved, time.monotonic())
                    elif time.monotonic() - progress_at[1] > args.stall_timeout:
                        errors.append(
                            f"nothing moved for {args.stall_timeout:.0f}s: intake backlog "
                            f"{intake.backlog(fed)}, {len(sent) - len(first)} funds records in flight"
                        )
                        stalled = True
                        break
                window_waits += time.monotonic() - waited
                if stalled:
                    if not args.keep_going:
                        break
                    window_off = True  # --keep-going: feed the rest as fast as it goes
                if is_funds:
                    key = (line["data"]["project_id"], line["data"]["funds_id"])
                    sent.setdefault(key, time.perf_counter())
                await in_flight.acquire()
                task = asyncio.create_task(send(line))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                fed += 1
                if fed == middle_at:
                    load["middle"] = _load()
                    rss["middle"] = {n: round(rss_mb(p), 1) for n, p in procs.items()}
                bar.show(fed, live["credited"], live["held"])
        if tasks:
            await asyncio.gather(*tasks)
        fed_s = time.perf_counter() - t0
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if "middle" not in rss:
            rss["middle"] = {n: round(rss_mb(p), 1) for n, p in procs.items()}

        # The last outcomes, then every consumer drained (notify and the board work on).
        deadline = time.monotonic() + args.drain_timeout
        progress_at = (len(first), time.monotonic())
        while not stalled and len(first) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            bar.show(fed, live["credited"], live["held"])
            if len(first) != progress_at[0]:
                progress_at = (len(first), time.monotonic())
            elif time.monotonic() - progress_at[1] > args.stall_timeout:
                errors.append(f"{len(sent) - len(first)} funds records never settled")
                break
        bar.show(fed, live["credited"], live["held"], done=True)
        last_outcome = max(first.values()) if first else time.perf_counter()
        drained = True
        try:
            await wait_until_idle(system.js, timeout=args.drain_timeout)
        except TimeoutError as exc:
            errors.append(str(exc))
            drained = False
        all_drained_s = time.perf_counter() - t0
        await until_quiet({n: p for n, p in procs.items() if n != "soak (feeder)"})
        for s in subs:
            await s.unsubscribe()
        cpu = {n: round(cpu_s(p) - cpu_start[n], 2) for n, p in procs.items()}
        load["end"] = _load()
        rss["end"] = {n: round(rss_mb(p), 1) for n, p in procs.items()}

        outcomes = await read_outcomes(system.js)
        stream_bytes = {
            i.config.name: int(i.state.bytes or 0) for i in await system.js.streams_info()
        }
        store_bytes = {
            d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            for d in sorted(data_dir.glob("nats*"))
            if d.is_dir()
        }
        counts = check(exp, outcomes, scoring_table(data_dir))

    lat = sorted((first[k] - sent[k]) * 1000 for k in sent if k in first)
    span = max(0.001, last_outcome - t0)
    settled = sorted(settled_at)
    steady = None
    if len(settled) >= 20:
        a, b = settled[len(settled) // 10], settled[9 * len(settled) // 10]
        steady = round((9 * len(settled) // 10 - len(settled) // 10) / max(0.001, b - a), 1)
    n_funds = max(1, len(exp.funds))
    return {
        "system_up_s": round(up_s, 1),
        "fed_messages": fed,
        "feed_s": round(fed_s, 1),
        "to_last_outcome_s": round(span, 1),
        "to_all_drained_s": round(all_drained_s, 1),
        "drained": drained,
        "messages_per_s": round(fed / span, 1),
        "funds_per_s": round(len(first) / span, 1),
        "funds_per_s_steady": steady,  # between the 10th and 90th percentile of outcomes
        "window_wait_s": round(window_waits, 1),
        "latency_ms": {
            "records": len(lat),
            "p50": round(percentile(lat, 0.5) or 0, 1) if lat else None,
            "p99": round(percentile(lat, 0.99) or 0, 1) if lat else None,
            "max": round(lat[-1], 1) if lat else None,
        },
        "dropped_as_duplicate": duplicates,
        "rss_mb": rss,
        "cpu_s": cpu,
        "idle_cpu_pct": idle_pct,
        "load": load,
        "cpu_ms_per_funds_record": {n: round(v * 1000 / n_funds, 2) for n, v in cpu.items()},
        "cpu_ms_per_message": {n: round(v * 1000 / max(1, fed), 2) for n, v in cpu.items()},
        "counts": counts,
        "stream_mb": round(sum(stream_bytes.values()) / 2**20, 1),  # one copy
        "stream_mb_by_stream": {k: round(v / 2**20, 1) for k, v in sorted(stream_bytes.items())},
        "store_dir_mb": {k: round(v / 2**20, 1) for k, v in store_bytes.items()},
        "errors": errors[:20],
    }


# ---- output ------------------------------------------------------------------------------


def summary_lines(
    args: argparse.Namespace, exp: Expected, r: dict[str, Any], gen_s: float
) -> list[str]:
    c = r["counts"]
    lat = r["latency_ms"]
    names = list(r["rss_mb"]["start"])
    replicated = "R3" if args.nodes >= 3 else f"R{args.nodes}"
    steady = (
        f" (steady {r['funds_per_s_steady']}/s from the 10th to the 90th percentile)"
        if r["funds_per_s_steady"]
        else ""
    )
    lines = [
        f"soak: {args.leads} leads, {args.nodes} node{'s' if args.nodes > 1 else ''} ({replicated}), seed {args.seed}: "
        f"{exp.lines} messages, {len(exp.funds)} funds records (year generated in {gen_s:.1f} s)",
        "machine load (1-min average, all users) at start / middle / end: "
        + " / ".join(str(r["load"].get(k)) for k in ("start", "middle", "end")),
        f"system up in {r['system_up_s']} s; fed {r['fed_messages']} messages in {r['feed_s']} s; last funds outcome at "
        f"{r['to_last_outcome_s']} s; every consumer drained at {r['to_all_drained_s']} s",
        f"throughput: {r['messages_per_s']} messages/s fed, {r['funds_per_s']} funds records/s settled{steady}",
        f"latency publish → first score.credited/held: p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms ({lat['records']} records; window {args.window} funds records, "
        f"intake backlog ≤ {args.intake_backlog} messages)",
        "RSS MB start / middle / end: "
        + ", ".join(
            f"{n} {r['rss_mb']['start'][n]}/{r['rss_mb']['middle'][n]}/{r['rss_mb']['end'][n]}"
            for n in names
        ),
        "CPU s (ms per funds record): "
        + ", ".join(f"{n} {r['cpu_s'][n]} ({r['cpu_ms_per_funds_record'][n]})" for n in names)
        + f"; sum {sum(r['cpu_s'].values()):.1f} s ({sum(r['cpu_ms_per_funds_record'].values()):.1f} ms per funds record, "
        f"{sum(r['cpu_ms_per_message'].values()):.2f} ms per message)",
        "idle CPU % of a core before the feed: "
        + ", ".join(f"{n} {r['idle_cpu_pct'][n]}" for n in names),
        f"JetStream: {r['stream_mb']} MB in the streams (one copy); store dirs on disk MB: "
        + ", ".join(f"{k} {v}" for k, v in r["store_dir_mb"].items()),
        f"counts: {c['expected_funds_records']} funds records in the file ({c['funds_lines_sent']} funds lines sent, "
        f"{exp.resends} resent lines, {r['dropped_as_duplicate']} dropped by JetStream as duplicates); "
        f"credited {c['credited']} + held {c['held']} + withdrawn {c['withdrawn']} = "
        f"{c['credited'] + c['held'] + c['withdrawn']}; events: "
        + ", ".join(f"{k} {v}" for k, v in c["events"].items())
        + (" — EXACT" if c["ok"] else " — WRONG")
        + ("" if c["scoring_table_checked"] else " (scoring's table not checked: not SQLite)"),
    ]
    lines += [f"  problem: {p}" for p in c["problems"]]
    lines += [f"  error: {e}" for e in r["errors"]]
    return lines


SOAK_INTRO = f"""{SOAK_BEGIN}
## Province-year soak

`bench/soak.py --leads N --nodes 1|3` (`make soak`: 100,000 leads on 3 nodes) generates a
year with `samples/generate.py`, starts every service as a process on one nats-server or a
three-node JetStream cluster (R3), and publishes every line as the units would (file order,
its `msg_id`, at most `--window` funds records awaiting their first `score.credited` /
`score.held`). Latency is from a funds record's publish to that first outcome. The counts
are checked against the file (bench/soak.py's docstring says how): every funds record
credited, held or withdrawn exactly once, the same in scoring's table. One block per size and
node count, the latest run of each:
"""


NOTES_BEGIN = "<!-- soak notes: kept as written -->"
NOTES_END = "<!-- /soak notes -->"


def doc_block(args: argparse.Namespace, machine: str, stamp: str, lines: list[str]) -> str:
    command = f"nice .venv/bin/python bench/soak.py --leads {args.leads} --nodes {args.nodes}"
    return (
        f"<!-- soak run leads={args.leads} nodes={args.nodes} -->\n"
        f"### {args.leads} leads, {args.nodes} node{'s' if args.nodes > 1 else ''}\n\n"
        f"`{command}` on {machine}, {stamp}:\n\n```\n" + "\n".join(lines) + "\n```\n"
        "<!-- /soak run -->\n"
    )


def update_doc(doc: Path, args: argparse.Namespace, block: str) -> None:
    import re

    text = doc.read_text("utf-8") if doc.exists() else "# Performance\n"
    _, section = split_soak(text)
    blocks = dict(
        ((int(m.group(1)), int(m.group(2))), m.group(0))
        for m in re.finditer(
            r"<!-- soak run leads=(\d+) nodes=(\d+) -->.*?<!-- /soak run -->\n?", section, re.S
        )
    )
    blocks[(args.leads, args.nodes)] = block
    body = "\n".join(blocks[k].rstrip("\n") + "\n" for k in sorted(blocks))
    # What a person wrote about the runs (the extrapolation, say) stays as it is.
    notes = re.search(
        re.escape(NOTES_BEGIN) + r".*?" + re.escape(NOTES_END) + r"\n?", section, re.S
    )
    kept = notes.group(0).rstrip("\n") + "\n\n" if notes else ""
    doc.write_text(with_soak(text, SOAK_INTRO + "\n" + kept + body + SOAK_END + "\n"), "utf-8")


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=3)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument(
        "--window", type=int, default=200, help="funds records in flight (default 200)"
    )
    parser.add_argument(
        "--intake-backlog",
        type=int,
        default=None,
        help="messages fed that intake has not taken yet, at most (default: 5 days' worth, ≤ 200)",
    )
    parser.add_argument(
        "--idle-probe", type=float, default=10, help="seconds of idle CPU measured first (10)"
    )
    parser.add_argument(
        "--in-flight", type=int, default=64, help="publishes awaiting their ack (64)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=300,
        help="give up when no record settles this long (300 s)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=3600, help="for the drain after the feed (3600 s)"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="feed on past a stall (the counts will say what was lost)",
    )
    parser.add_argument("--year-file", type=Path, help="feed this file instead of generating one")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes"
    )
    parser.add_argument("--no-doc", action="store_true", help="leave docs/performance.md alone")
    parser.add_argument("--keep-data", type=Path, help="run in this (new) directory and keep it")
    args = parser.parse_args(argv)
    # `kill` (SIGTERM) stops the run as Ctrl-C does: the system's processes are stopped and
    # the temporary directory removed, where they outlived the soak before.
    signal.signal(signal.SIGTERM, _interrupted)

    with tempfile.TemporaryDirectory(prefix="investflow-soak-") as tmp_name:
        tmp = Path(tmp_name)
        if args.year_file:
            year, gen_s = args.year_file, 0.0
        else:
            year = tmp / f"year-{args.leads}.jsonl"
            print(
                f"soak: generating {args.leads} leads (seed {args.seed}) …",
                file=sys.stderr,
                flush=True,
            )
            gen_s = generate_year(args.leads, args.seed, year)
        exp = expected_from(year)
        if args.intake_backlog is None:
            args.intake_backlog = max(5, min(200, exp.lines * 5 // 365))
        print(
            f"soak: {exp.lines} messages, {len(exp.funds)} funds records; starting the system on "
            f"{args.nodes} node{'s' if args.nodes > 1 else ''} …",
            file=sys.stderr,
            flush=True,
        )
        data_dir = args.keep_data or tmp / "data"
        result = asyncio.run(run(args, year, exp, data_dir))

    lines = summary_lines(args, exp, result, gen_s)
    print("\n".join(lines), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"soak-{args.leads}-n{args.nodes}-{stamp}.json"
    record = {
        "when": stamp,
        "machine": machine,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "messages": exp.lines,
        "per_kind": dict(exp.per_kind),
        **result,
    }
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    wrote = [str(out)]
    if not args.no_doc:
        update_doc(ROOT / "docs" / "performance.md", args, doc_block(args, machine, stamp, lines))
        wrote.append("docs/performance.md")
    print(f"wrote {', '.join(wrote)}", file=sys.stderr)
    finished = result["counts"]["ok"] and not result["errors"] and result["drained"]
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
