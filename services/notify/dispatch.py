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

from sqlalchemy import Engine
from sqlmodel import Session, or_, select

from shared import subjects
from shared.contract import NotifyOutcome
from shared.db import unit_of_work

from . import store
from .channels import Channel, Outgoing

log = logging.getLogger("investflow.notify")

Clock = Callable[[], dt.datetime]
Publish = Callable[[str, str, str], Awaitable[None]]  # subject, body, Nats-Msg-Id


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


def outgoing(row: store.Notification) -> Outgoing:
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
        """Try every notification due now; returns how many were delivered."""
        now = self.clock()

        def due() -> list[int]:
            N = store.Notification
            with Session(self.engine) as session:
                query = (
                    select(N.id)
                    .where(
                        or_(
                            (N.status == "pending") & (N.next_attempt_at <= now),  # type: ignore[arg-type,operator]
                            (N.status == "sending") & (N.lease_until < now),  # type: ignore[arg-type,operator]
                        )
                    )
                    .order_by(N.id)  # type: ignore[arg-type]
                    .limit(batch)
                )
                return [i for i in session.exec(query).all() if i is not None]

        ids = await asyncio.to_thread(due)
        results = await asyncio.gather(*(self.deliver(i) for i in ids))
        await self.publish_outcomes()
        return sum(1 for r in results if r)

    async def deliver(self, note_id: int) -> bool:
        """Claim, send and record one notification; True if it was delivered now."""
        async with self.limit:
            now = self.clock()

            def take() -> Outgoing | None:
                with unit_of_work(self.engine) as session:
                    if not store.claim(session, note_id, now, self.lease):
                        return None
                    row = session.get(store.Notification, note_id)
                    return outgoing(row) if row else None

            note = await asyncio.to_thread(take)
            if note is None:
                return False
            error: str | None = None
            channel = self.channels.get(note.channel)
            if channel is None:
                error = f"no sender for channel {note.channel!r}"
            else:
                try:
                    await channel.send(note)
                except Exception as exc:  # every failure is retried, whatever raised it
                    error = f"{type(exc).__name__}: {exc}"[:1000]
            await asyncio.to_thread(self._record, note_id, error)
            if error:
                log.warning("notify: %s to %s failed: %s", note.cause, note.recipient, error)
            return error is None

    def _record(self, note_id: int, error: str | None) -> None:
        now = self.clock()
        with unit_of_work(self.engine) as session:
            row = session.get(store.Notification, note_id)
            if row is None:
                return
            row.attempts += 1
            row.lease_until = None
            if error is None:
                row.status, row.sent_at, row.last_error = "sent", now, None
            elif row.attempts >= self.policy.max_attempts:
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
        def unannounced() -> list[store.Notification]:
            N = store.Notification
            with Session(self.engine) as session:
                query = (
                    select(N)
                    .where(N.status.in_(("sent", "failed")), N.outcome_published_at.is_(None))  # type: ignore[attr-defined,union-attr]
                    .order_by(N.id)  # type: ignore[arg-type]
                    .limit(500)
                )
                return list(session.exec(query).all())

        rows = await asyncio.to_thread(unannounced)
        for row in rows:
            outcome = NotifyOutcome(
                project_id=row.project_id,
                cause=row.cause,
                recipient=row.recipient,
                channel=row.channel,
                attempts=row.attempts,
                error=row.last_error if row.status == "failed" else None,
            )
            subject = subjects.NOTIFY_SENT if row.status == "sent" else subjects.NOTIFY_FAILED
            await publish(subject, outcome.model_dump_json(), f"notify:{row.status}:{row.id}")
        if rows:
            ids = [r.id for r in rows]
            now = self.clock()

            def mark() -> None:
                with unit_of_work(self.engine) as session:
                    for i in ids:
                        row = session.get(store.Notification, i)
                        if row is not None:
                            row.outcome_published_at = now
                            session.add(row)

            await asyncio.to_thread(mark)
        return len(rows)

    # --- the running loop ---

    async def run(self, poll_s: float = 1.0) -> None:
        """Deliver whatever is due; sleep until woken (new rows) or the next poll."""
        while True:
            try:
                await self.deliver_due()
            except Exception:
                log.exception("notify: delivery pass failed; retrying")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=poll_s)
