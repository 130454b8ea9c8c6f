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
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy

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
    """A durable pull consumer that replicas share by name, one message at a time.

    One at a time, because FastStream runs the messages of a pulled batch concurrently,
    which would let a document overtake the lead it belongs to; and its batch mode waits
    for a full batch or the timeout before handing anything over. The handler settles the
    message itself with `settle_in_order`.

    `in_order` (max_ack_pending=1) makes the server hand out nothing new while a message
    is unsettled: a nak'd message, or one held by a replica that was killed, comes back
    before anything behind it (after ack_wait, for the killed one). Without it a crash let
    the lead's funds overtake it and be rejected as an unknown project (the kill -9 test
    caught this). The price: replicas give failover, not parallelism, on such a consumer.
    """
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
            max_ack_pending=1 if in_order else 1000,
        ),
        ack_policy=AckPolicy.MANUAL,
        title=title,
        description=description,
    )


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
) -> None:
    """Run `work` on each message in order, acking each as it succeeds.

    On a failure the failed message and the rest of the batch are nak'd with a delay, and
    we wait that delay before returning; on an in-order consumer nothing overtakes them,
    so a database outage costs time, not messages or order. After `max_deliver` attempts
    the message goes to the dead-letter stream with its error.
    """
    for i, msg in enumerate(msgs):
        try:
            await work(msg)
        except Exception as exc:
            delivered = delivery_count(msg)
            if delivered >= settings.max_deliver:
                log.error(
                    "%s: %s failed %d times, dead-lettered: %s",
                    service,
                    msg.subject,
                    delivered,
                    exc,
                )
                await dead_letter(broker, service, msg, exc, delivered)
                await msg.term()
                continue
            delay = backoff_s(delivered)
            log.warning(
                "%s: %s failed (try %d), retrying in %.0fs: %s",
                service,
                msg.subject,
                delivered,
                delay,
                exc,
            )
            for rest in msgs[i:]:
                await rest.nak(delay=delay)
            await asyncio.sleep(delay)
            return
        await msg.ack()


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
