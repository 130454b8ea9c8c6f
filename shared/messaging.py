"""Broker factory and the one way every service consumes JetStream reliably.

FastStream's default ack policy (REJECT_ON_ERROR) terminates a message on any exception,
so a database blip would lose it. We settle by hand instead: ack on success, nak with
back-off on failure, and after `max_deliver` attempts publish the message with its error
to the dead-letter stream and terminate it, so the consumer keeps going.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy

from . import metrics, tracing
from .settings import Settings

log = logging.getLogger("investflow")


def configure_logging(service: str) -> None:
    """Plain lines: the supervisor prefixes them with the service name."""
    level = os.environ.get("INVESTFLOW_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    # FastStream chats at INFO on every start and stop; the supervisor log wants only trouble.
    logging.getLogger("faststream").setLevel(max(logging.getLevelName(level), logging.WARNING))
    del service


def make_broker(settings: Settings, name: str, description: str = "") -> NatsBroker:
    return NatsBroker(
        settings.nats_url,
        name=f"investflow-{name}",
        connect_timeout=settings.connect_timeout_s,
        # Never give up reconnecting: a restarted nats-server must not take services down.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=10.0,
        description=description,
        # FastStream logs each message's receipt at this level: keep it below what we emit,
        # since per-message logging cost ~40% of throughput (notes).
        log_level=logging.DEBUG,
        # Our logger, not FastStream's coloured one: plain lines the supervisor can prefix,
        # and its INFO chatter on every start and stop filtered out.
        logger=_broker_logger(name),
        **settings.nats_options(),  # type: ignore[arg-type]
    )


def _broker_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(f"investflow.{name}.broker")
    logger.setLevel(logging.WARNING)
    return logger


class Retry(Exception):
    """Raise when a message may succeed later: an event it depends on has not arrived yet."""


def transient(exc: BaseException) -> bool:
    """An error that retrying can cure: a dependency not yet there, a database or NATS away.

    Everything else (a payload that does not decode or validate, a value the database
    refuses, a bug) fails the same way every time: retrying it only holds up what waits
    behind it, so it is dead-lettered at once. Unique-key conflicts count as transient: two
    replicas or two units' inboxes can race for one row, and the retry finds it stored.
    """
    import sqlalchemy.exc as sa

    if isinstance(exc, Retry | OSError | TimeoutError | asyncio.TimeoutError | nats.errors.Error):
        return True
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa.OperationalError | sa.InterfaceError | sa.TimeoutError | sa.IntegrityError,
    )


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """One line for what retrying cures (NATS or the database slow or away: the operator
    needs to know it happened, not where in the library); the traceback for anything else."""
    if transient(exc):
        logger.warning("%s: %s: %s", what, type(exc).__name__, exc)
    else:
        logger.error("%s", what, exc_info=exc)


def backoff_s(delivered: int) -> float:
    """1 s, 2 s, 4 s, ... capped at 30 s."""
    return float(min(30, 2 ** max(0, delivered - 1)))


def durable_subscriber(
    broker: NatsBroker,
    subject: str,
    *,
    stream: str,
    durable: str,
    settings: Settings,
    title: str | None = None,
    description: str | None = None,
    in_order: bool = True,
) -> Any:
    """A durable pull consumer that replicas share by name, settled in stream order.

    FastStream hands the handler one message at a time (it runs the messages of a pulled
    batch concurrently, which would let a document overtake the lead it belongs to); the
    handler passes it to `consume_in_order`, which takes whatever else is already waiting
    (up to `batch_size`, the consumer's max_ack_pending) and settles them in order.

    `in_order` bounds what is out at once: the server hands out nothing beyond `batch_size`
    unsettled messages, and `consume_in_order` makes a replica wait while another holds
    older ones, so a nak'd message, or one held by a replica that was killed, is settled
    before anything behind it. Without that a crash let a lead's funds overtake it and be
    rejected as an unknown project (the kill -9 test caught it). Replicas give failover, not
    parallelism, on such a consumer.
    """
    DECLARED.append((stream, durable, subject))
    return broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        # A long poll returns as soon as a message arrives; a short one can expire
        # client-side just as the server hands it a message, leaving it unacked until ack_wait.
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=ConsumerConfig(
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # One more than our own limit: normally `settle_in_order` dead-letters first, with the error.
            max_deliver=settings.max_deliver + 1,
            ack_wait=settings.ack_wait_s,
            max_ack_pending=settings.batch_size if in_order else 1000,
        ),
        ack_policy=AckPolicy.MANUAL,
        # The handlers parse the raw bytes themselves (and refuse what does not parse);
        # FastStream's own JSON decoding runs first and raised, unsettled, on a body nested
        # 10,000 deep, so the message came back after every ack_wait.
        decoder=_raw_body,
        title=title,
        description=description,
    )


# (stream, durable, filter) of every durable consumer this process declared.
DECLARED: list[tuple[str, str, str]] = []


async def repair_consumers(settings: Settings, service: str) -> list[str]:
    """Put back a durable consumer whose filter was changed behind the service's back.

    nats-py binds to an existing durable as it finds it, so a consumer redefined by someone
    else (another filter) would silently stop feeding the service. Run before subscribing.
    """
    from nats.js.errors import NotFoundError

    from .settings import connect_nats

    repaired = []
    nc = await connect_nats(settings, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        for stream, durable, subject in DECLARED:
            if durable != service:
                continue  # another service's app imported into this process (tests)
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:
                continue  # the subscriber creates it
            config = info.config
            filters = [config.filter_subject] if config.filter_subject else []
            filters += list(config.filter_subjects or [])
            if filters == [subject]:
                continue
            config.filter_subject, config.filter_subjects = subject, None
            await js.add_consumer(stream, config=config)
            line = f"{service}: consumer {stream}/{durable} filtered {filters}; put back to {subject!r}"
            log.warning(line)
            repaired.append(line)
    finally:
        await nc.close()
    return repaired


async def _raw_body(message: Any) -> bytes:
    """FastStream custom decoder: the body as it came."""
    return bytes(message.body)


async def consume_in_order(
    message: Msg,
    subscriber: Any,
    broker: NatsBroker,
    service: str,
    settings: Settings,
    work: Callable[[Msg], Awaitable[None]],
    work_run: Callable[[list[Msg]], Awaitable[None]] | None = None,
) -> None:
    """Settle `message` and the messages already waiting behind it, in stream order.

    One round trip brings up to `batch_size - 1` more (what the server has now, no waiting),
    so a busy consumer pays its fetch and FastStream's per-message machinery once per batch.
    """
    msgs = [message]
    psub = getattr(subscriber, "subscription", None)
    turn = None
    if psub is not None and id(psub) not in _aligned:
        await _align(psub, settings)
        _aligned.add(id(psub))
    if psub is not None and settings.batch_size > 1:
        msgs += await _waiting(psub, settings.batch_size - 1)
        msgs.sort(key=lambda m: stream_seq(m) or 0)
        turn = _Turns(psub, settings)
    await settle_in_order(msgs, broker, service, settings, work, turn, work_run)


_aligned: set[int] = set()


async def _align(psub: JetStreamContext.PullSubscription, settings: Settings) -> None:
    """Bring a consumer made by an older release or other settings to the current ones.

    nats-py only creates a missing durable consumer, so a deployment upgraded in place
    would keep, say, max_ack_pending=1 and never batch; the settings an operator changed
    (INVESTFLOW_BATCH, INVESTFLOW_ACK_WAIT, INVESTFLOW_MAX_DELIVER) apply on restart.
    """
    try:
        info = await psub.consumer_info()
        config = info.config
        wanted = {
            "max_ack_pending": settings.batch_size,
            "ack_wait": float(settings.ack_wait_s),
            "max_deliver": settings.max_deliver + 1,
        }
        changed = {k: v for k, v in wanted.items() if getattr(config, k) != v}
        if not changed:
            return
        for key, value in changed.items():
            setattr(config, key, value)
        await psub._js.add_consumer(info.stream_name, config=config)
        log.warning("consumer %s updated to %s", info.name, changed)
    except Exception as exc:  # it still works with the old settings, just not as tuned
        log.warning("could not align consumer settings: %s", exc)


async def _waiting(psub: JetStreamContext.PullSubscription, limit: int) -> list[Msg]:
    """The messages the consumer can hand out right now, up to `limit`, without waiting.

    nats-py's fetch() turns a no-wait request into a lingering one (it adds `expires`) when
    its queue is empty, and then waits out its timeout for a full batch; this is the plain
    no-wait pull request: the server sends what it has, then a status when it runs out.
    """
    request = json.dumps({"batch": limit, "no_wait": True}).encode()
    await psub._nc.publish(psub._nms, request, psub._deliver)
    out: list[Msg] = []
    while len(out) < limit:
        try:
            msg = await psub._sub.next_msg(timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            break  # a late one stays queued for the subscription's next fetch, in order
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            out.append(msg)
        elif status != "100":  # 100: idle heartbeat
            break  # 404 no messages, 408 request expired, 409 max ack pending reached
    return out


class _Turns:
    """Waits, before a message, while another replica holds an older one.

    Replicas pulling at once get interleaved messages (the server serves their requests in
    turn), so a batch can have holes that another replica is filling. Before the first
    message and after each hole (a jump in the consumer's delivery sequence, or a
    redelivery) we wait until the consumer's ack floor, one below the oldest unsettled
    message, has reached this one; or until everything unsettled is ours. The holder of
    the oldest message never waits, so replicas take turns; a lone replica has no holes and
    asks the server once per batch.

    An older message that nobody holds (nak'd, or held by a replica that died and back
    after ack_wait) moves only when someone pulls: so while we wait we pull too, and take
    what comes in stream order. Without that, two waiting replicas starved such a message
    until it ran out of deliveries (the replica fault test caught it).
    """

    PULL_EVERY_S = 0.25

    def __init__(self, psub: JetStreamContext.PullSubscription, settings: Settings) -> None:
        self.psub = psub
        self.batch_size = settings.batch_size
        self.keepalive = max(1.0, settings.ack_wait_s / 3)
        # From the fetch: a batch waits and works across many calls, and every message
        # must be kept from redelivery (ack_wait) until it is settled.
        self.last_keepalive = time.monotonic()
        # Only if the server's view never lets us on (it should): give ours back then.
        self.patience = 10.0 * max(2.0, float(settings.ack_wait_s))

    async def ready(self, msgs: list[Msg], i: int) -> bool:
        """True when msgs[i] may be settled now; msgs[i:] may gain older messages first."""
        if i > 0 and _follows(msgs[i - 1], msgs[i]):
            return True
        start = time.monotonic()
        next_pull = start + self.PULL_EVERY_S
        delay = 0.005
        while True:
            seq = stream_seq(msgs[i])
            if seq is None:
                return True
            info = await self.psub.consumer_info()
            if info.ack_floor.stream_seq + 1 >= seq or info.num_ack_pending <= len(msgs) - i:
                return True
            if await self._nothing_older(info, seq):
                return True
            now = time.monotonic()
            if now - start > self.patience:
                log.warning("waited %.0fs for older messages; handing ours back", self.patience)
                return False
            if now >= next_pull:
                next_pull = now + self.PULL_EVERY_S
                more = await _waiting(self.psub, self.batch_size)
                if more:
                    msgs[i:] = _merged(msgs[i:], more)
                    continue
            await self.keep_alive(msgs, i)
            await asyncio.sleep(delay)
            delay = min(0.1, delay * 2)

    async def keep_alive(self, msgs: list[Msg], i: int) -> None:
        """Tell the server msgs[i:] are being worked on, every third of ack_wait."""
        now = time.monotonic()
        if now - self.last_keepalive < self.keepalive:
            return
        self.last_keepalive = now
        for m in msgs[i:]:
            await m.in_progress()

    async def _nothing_older(self, info: Any, seq: int) -> bool:
        """No message for this consumer between the ack floor and `seq`.

        The server moves the floor over other subjects' messages only when it finds the
        next one delivered, so after a gap it can stay below the oldest unsettled message;
        the stream itself says whether anything of ours lies in between.
        """
        subject = info.config.filter_subject
        if not subject:
            return False
        try:
            first = await self.psub._js.get_msg(
                info.stream_name, seq=info.ack_floor.stream_seq + 1, subject=subject, next=True
            )
        except nats.js.errors.NotFoundError:
            return True
        return first.seq is not None and first.seq >= seq


def _merged(held: list[Msg], more: list[Msg]) -> list[Msg]:
    """`held` and `more` in stream order, once each: a message redelivered to us while we
    held it comes back as a second copy, and the latest delivery is the one to settle."""
    latest: dict[int, Msg] = {}
    for m in [*held, *more]:
        latest[stream_seq(m) or 0] = m
    return [latest[k] for k in sorted(latest)]


def _follows(prev: Msg, msg: Msg) -> bool:
    """Delivered right after `prev`, first time: no other replica got anything in between."""
    try:
        return (
            msg.metadata.num_delivered == 1
            and msg.metadata.sequence.consumer == prev.metadata.sequence.consumer + 1
        )
    except Exception:
        return False


def stream_seq(msg: Msg) -> int | None:
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # a core (non-JetStream) message in unit tests
        return None


def delivery_count(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # a core (non-JetStream) message in unit tests
        return 1


async def settle_in_order(
    msgs: list[Msg],
    broker: NatsBroker,
    service: str,
    settings: Settings,
    work: Callable[[Msg], Awaitable[None]],
    turn: _Turns | None = None,
    work_run: Callable[[list[Msg]], Awaitable[None]] | None = None,
) -> None:
    """Run `work` on each message in order, acking each as it succeeds.

    `work_run`, when given, settles a run of messages (delivered one after another, so no
    replica holds anything between them) in one go: one transaction instead of one per
    message. If it fails, the run is settled one message at a time, so the failure lands
    on the message that causes it.

    On a failure the failed message and the rest of the batch are nak'd with a delay, and
    we wait that delay before returning; on an in-order consumer nothing overtakes them,
    so a database outage costs time, not messages or order. After `max_deliver` attempts
    the message goes to the dead-letter stream with its error.
    """
    i = 0
    while i < len(msgs):
        if turn is not None:
            await turn.keep_alive(msgs, i)
            if not await turn.ready(msgs, i):
                for rest in msgs[i:]:
                    await rest.nak()  # the server hands them out again, after the older ones
                return
        end = i + 1
        while end < len(msgs) and _follows(msgs[end - 1], msgs[end]):
            end += 1
        if work_run is not None and end - i > 1:
            started = time.monotonic()
            tracing.consuming(msgs[i:end], service)
            try:
                await work_run(msgs[i:end])
            except Exception as exc:
                log.info("%s: %d messages failed together (%s); one by one", service, end - i, exc)
            else:
                share = (time.monotonic() - started) / (end - i)
                for msg in msgs[i:end]:
                    await msg.ack()
                    metrics.observe_settled(service, msg.subject, "ok", share)
                    tracing.settled(msg, "ok")
                i = end
                continue
        for k in range(i, end):
            if not await _settle_one(msgs, k, broker, service, settings, work):
                return
        i = end


async def _settle_one(
    msgs: list[Msg],
    k: int,
    broker: NatsBroker,
    service: str,
    settings: Settings,
    work: Callable[[Msg], Awaitable[None]],
) -> bool:
    """Settle msgs[k]; False when it failed and it and the rest were handed back."""
    msg = msgs[k]
    started = time.monotonic()
    tracing.consuming([msg], service)
    try:
        await work(msg)
    except Exception as exc:
        delivered = delivery_count(msg)
        if not transient(exc):
            log.error("%s: %s cannot succeed, dead-lettered: %r", service, msg.subject, exc)
            metrics.observe_settled(service, msg.subject, "dead_letter", time.monotonic() - started)
            tracing.settled(msg, "dead_letter")
            await dead_letter(broker, service, msg, exc, delivered)
            await msg.term()
            return True
        outcome = "dead_letter" if delivered >= settings.max_deliver else "retry"
        metrics.observe_settled(service, msg.subject, outcome, time.monotonic() - started)
        tracing.settled(msg, outcome)
        if delivered >= settings.max_deliver:
            log.error(
                "%s: %s failed %d times, dead-lettered: %s", service, msg.subject, delivered, exc
            )
            await dead_letter(broker, service, msg, exc, delivered)
            await msg.term()
            return True
        delay = backoff_s(delivered)
        log.warning(
            "%s: %s failed (try %d), retrying in %.0fs: %s",
            service,
            msg.subject,
            delivered,
            delay,
            exc,
        )
        for rest in msgs[k:]:
            await rest.nak(delay=delay)
        await asyncio.sleep(delay)
        return False
    await msg.ack()
    metrics.observe_settled(service, msg.subject, "ok", time.monotonic() - started)
    tracing.settled(msg, "ok")
    return True


async def dead_letter(
    broker: NatsBroker, service: str, msg: Msg, exc: BaseException, delivered: int
) -> None:
    meta = getattr(msg, "metadata", None)
    seq = getattr(getattr(meta, "sequence", None), "stream", None)
    stream = getattr(meta, "stream", "core")
    record = {
        "service": service,
        "subject": msg.subject,
        "stream": stream,
        "stream_seq": seq,
        "deliveries": delivered,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exception(exc)[-5:],
        "headers": dict(msg.headers or {}),
        "body": msg.data.decode("utf-8", errors="replace"),
    }
    await broker.publish(
        json.dumps(record, ensure_ascii=False).encode(),
        f"dlq.{service}.{stream}",
        headers={"Nats-Msg-Id": f"dlq:{service}:{stream}:{seq}"},
        stream="DLQ",
    )
