"""Delivering the outbox: claim a due row, send it, record the outcome, announce it.

Exactly once per (cause, recipient, channel) as far as we control it: a row is claimed by an
atomic conditional UPDATE (so two replicas never both send it) and marked sent in the next
transaction. Only a process that dies between a successful send and that commit sends again
once its lease expires; webhooks carry an Idempotency-Key and emails a fixed Message-ID so
the receiving side can drop that copy.

Failures are retried with exponential back-off up to `max_attempts`, then the row is `failed`.
Every final outcome is published as `notify.sent` / `notify.failed` (NotifyOutcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, bindparam, update
from sqlmodel import Session, select

from shared import subjects
from shared.contract import NotifyOutcome
from shared.db import unit_of_work
from shared.messaging import log_failure

from . import store
from .channels import Channel, Outgoing

log = logging.getLogger("investflow.notify")

Clock = Callable[[], dt.datetime]
# Publishes [(subject, body, Nats-Msg-Id)] in order: a pass's outcomes in one call, their acks
# awaited together (one awaited ack per notify.sent was a round trip each).
Publish = Callable[[list[tuple[str, str, str]]], Awaitable[None]]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 30.0
    cap_s: float = 3600.0

    def delay(self, attempts: int) -> dt.timedelta:
        """After the n-th failed attempt: base, 2×base, 4×base, ... capped."""
        return dt.timedelta(seconds=min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1)))

    @classmethod
    def from_env(cls) -> RetryPolicy:
        env = os.environ
        return cls(
            max_attempts=int(env.get("NOTIFY_MAX_ATTEMPTS", "6")),
            base_s=float(env.get("NOTIFY_RETRY_BASE_S", "30")),
            cap_s=float(env.get("NOTIFY_RETRY_CAP_S", "3600")),
        )


def outgoing(row: store.Notification | Row[Any]) -> Outgoing:
    assert row.id is not None
    return Outgoing(
        id=row.id,
        cause=row.cause,
        kind=row.kind,
        project_id=row.project_id,
        recipient=row.recipient,
        channel=row.channel,
        language=row.language,
        subject=row.subject,
        body=row.body,
        html=row.html,
        image=row.image,
        data=json.loads(row.data),
        target=json.loads(row.target),
    )


_NOTES = store.Notification.__table__  # type: ignore[attr-defined]
# What `_record` does to a row whose send worked, as one statement for many rows.
_MARK_SENT = (
    update(_NOTES)
    .where(_NOTES.c.id == bindparam("note_id"))
    .values(
        attempts=_NOTES.c.attempts + 1,
        lease_until=None,
        status="sent",
        sent_at=bindparam("at"),
        last_error=None,
    )
)


@dataclass(frozen=True)
class Attempt:
    """How one send ended, and when (the clock read as it ended, not when the batch is saved)."""

    note_id: int
    error: str | None
    at: dt.datetime


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        channels: dict[str, Channel],
        *,
        publish: Publish | None = None,
        clock: Clock = utcnow,
        policy: RetryPolicy | None = None,
        lease: dt.timedelta = dt.timedelta(minutes=2),
        concurrency: int = 8,
    ) -> None:
        self.engine = engine
        self.channels = channels
        self.publish = publish
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.lease = lease
        self.limit = asyncio.Semaphore(concurrency)
        self.wake = asyncio.Event()
        self.announcing = (
            asyncio.Lock()
        )  # replicas may overlap too: same Nats-Msg-Id, one copy kept

    # --- one pass ---

    async def deliver_due(self, batch: int = 100) -> int:
        """Try every notification due now (at most `batch`); returns how many were delivered.

        Rows are claimed as sending slots free up, so each claimed row's send starts at once
        and its lease covers the send just as when rows were claimed one by one. Outcomes
        are saved in the transaction of the next claim, or together at the end of the pass:
        a pass costs a few transactions, not two per notification."""
        done: list[Attempt] = []  # sent, not yet saved
        sending: list[asyncio.Task[Attempt]] = []
        tried: list[int] = []  # claimed this pass: a row that failed just now is not tried twice
        try:
            while len(tried) < batch:
                slots = await self._free_slots(batch - len(tried))
                finished = done[:]
                try:
                    notes = await asyncio.to_thread(
                        self._record_and_claim, finished, slots, tried, None
                    )
                except BaseException:
                    self._release(slots)
                    raise
                del done[: len(finished)]  # sends only append, so these are the ones saved
                self._release(slots - len(notes))
                sending += [asyncio.create_task(self._attempt(note, done)) for note in notes]
                tried += [note.id for note in notes]
                if len(notes) < slots:
                    break  # nothing else due now
            await asyncio.gather(*sending)
        except asyncio.CancelledError:
            for task in sending:
                task.cancel()
            raise
        except Exception:
            # Claiming failed (the database?): still save what was sent, so it isn't sent again.
            if sending:
                await asyncio.wait(sending)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._record_and_claim, done, 0, [], None)
            raise
        if done:
            await asyncio.to_thread(self._record_and_claim, done, 0, [], None)
        await self.publish_outcomes()
        return sum(1 for task in sending if task.result().error is None)

    async def deliver(self, note_id: int) -> bool:
        """Claim, send and record one notification; True if it was delivered now."""
        await self._free_slots(1)
        try:
            notes = await asyncio.to_thread(self._record_and_claim, [], 1, [], note_id)
        except BaseException:
            self._release(1)
            raise
        if not notes:
            self._release(1)
            return False
        done: list[Attempt] = []
        attempt = await self._attempt(notes[0], done)
        await asyncio.to_thread(self._record_and_claim, done, 0, [], None)
        return attempt.error is None

    async def _free_slots(self, most: int) -> int:
        """Wait for one free sending slot, then take whichever others are free (up to `most`)."""
        await self.limit.acquire()
        taken = 1
        while taken < most and not self.limit.locked():
            await self.limit.acquire()  # free: returns without waiting
            taken += 1
        return taken

    def _release(self, slots: int) -> None:
        for _ in range(slots):
            self.limit.release()

    async def _attempt(self, note: Outgoing, done: list[Attempt]) -> Attempt:
        """Send one claimed notification (holding one slot, released here)."""
        try:
            error: str | None = None
            channel = self.channels.get(note.channel)
            if channel is None:
                error = f"no sender for channel {note.channel!r}"
            else:
                try:
                    await channel.send(note)
                except Exception as exc:  # every failure is retried, whatever raised it
                    error = f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            self.limit.release()
        attempt = Attempt(note.id, error, self.clock())
        done.append(attempt)
        if error:
            log.warning("notify: %s to %s failed: %s", note.cause, note.recipient, error)
        return attempt

    def _record_and_claim(
        self, finished: list[Attempt], limit: int, skip: list[int], note_id: int | None
    ) -> list[Outgoing]:
        """One transaction: save the outcomes of `finished`, then claim up to `limit` rows."""
        with unit_of_work(self.engine) as session:
            if finished:
                self._record(session, finished)
                session.flush()
            if not limit:
                return []
            rows = store.claim_due(
                session, self.clock(), self.lease, limit, skip=skip, note_id=note_id
            )
            return [outgoing(row) for row in rows]

    def _record(self, session: Session, attempts: list[Attempt]) -> None:
        N = store.Notification
        # A send that worked (nearly all of them) needs nothing read first: one executemany.
        sent = [{"note_id": a.note_id, "at": a.at} for a in attempts if a.error is None]
        if sent:
            session.execute(_MARK_SENT, sent)
        ids = [a.note_id for a in attempts if a.error is not None]
        if not ids:
            return
        rows = {r.id: r for r in session.exec(select(N).where(N.id.in_(ids)))}  # type: ignore[union-attr]
        for attempt in attempts:
            row = rows.get(attempt.note_id)
            if row is None:
                continue
            now, error = attempt.at, attempt.error
            if error is None:
                continue  # saved above
            row.attempts += 1
            row.lease_until = None
            if row.attempts >= self.policy.max_attempts:
                row.status, row.last_error = "failed", error
            else:
                row.status, row.last_error = "pending", error
                row.next_attempt_at = now + self.policy.delay(row.attempts)
            session.add(row)

    async def publish_outcomes(self) -> int:
        """Announce final outcomes not yet announced (again after a crash: same Nats-Msg-Id)."""
        if self.publish is None:
            return 0
        async with self.announcing:
            return await self._publish_outcomes(self.publish)

    async def _publish_outcomes(self, publish: Publish) -> int:
        N = store.Notification

        def unannounced() -> list[Row[Any]]:
            with Session(self.engine) as session:
                return store.unannounced(session)

        rows = await asyncio.to_thread(unannounced)
        outcomes = []
        for row in rows:
            outcome = NotifyOutcome(
                project_id=row.project_id,
                cause=row.cause,
                recipient=row.recipient,
                channel=row.channel,
                attempts=row.attempts,
                error=row.last_error if row.status == "failed" else None,
            )
            kind = subjects.NOTIFY_SENT if row.status == "sent" else subjects.NOTIFY_FAILED
            subject = subjects.keyed(kind, row.project_id)
            outcomes.append((subject, outcome.model_dump_json(), f"notify:{row.status}:{row.id}"))
        if outcomes:
            await publish(outcomes)
        if rows:
            ids = [r.id for r in rows]
            now = self.clock()

            def mark() -> None:
                with unit_of_work(self.engine) as session:
                    session.execute(
                        update(N)
                        .where(N.id.in_(ids))  # type: ignore[union-attr]
                        .values(outcome_published_at=now)
                    )

            await asyncio.to_thread(mark)
        return len(rows)

    # --- the running loop ---

    async def run(self, poll_s: float = 1.0) -> None:
        """Deliver whatever is due; sleep until woken (new rows) or the next poll."""
        while True:
            try:
                await self.deliver_due()
            except Exception as exc:
                log_failure(log, "notify: delivery pass failed; retrying", exc)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=poll_s)
