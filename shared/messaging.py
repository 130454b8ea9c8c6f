"""Broker factory and the one way every service consumes JetStream reliably.

FastStream's default ack policy (REJECT_ON_ERROR) terminates a message on any exception,
so a database blip would lose it. We settle by hand instead: ack on success, nak with
back-off on failure, and after `max_deliver` attempts publish the message with its error
to the dead-letter stream and terminate it, so the consumer keeps going.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy

from .settings import Settings

log = logging.getLogger("investflow")


def configure_logging(service: str) -> None:
    """Plain lines: the supervisor prefixes them with the service name."""
    level = os.environ.get("INVESTFLOW_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("faststream").setLevel(max(logging.getLevelName(level), logging.INFO))
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
    )


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
    batch_size: int = 32,
) -> Any:
    """A durable pull consumer that replicas share by name; settlement is the handler's job."""
    return broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
        config=ConsumerConfig(
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # One more than our own limit: normally `settle` dead-letters first, with the error.
            max_deliver=settings.max_deliver + 1,
            ack_wait=30,
            max_ack_pending=1000,
        ),
        ack_policy=AckPolicy.MANUAL,
        title=title,
        description=description,
    )


def delivery_count(msg: NatsMessage) -> int:
    try:
        return int(msg.raw_message.metadata.num_delivered)
    except Exception:  # core (non-JetStream) message in unit tests
        return 1


async def settle(
    msg: NatsMessage,
    broker: NatsBroker,
    service: str,
    settings: Settings,
    work: Callable[[], Awaitable[None]],
) -> None:
    """Run `work` for `msg` and acknowledge it according to the outcome."""
    try:
        await work()
    except Exception as exc:
        delivered = delivery_count(msg)
        subject = msg.raw_message.subject
        if delivered >= settings.max_deliver:
            log.error("%s: %s failed %d times, dead-lettered: %s", service, subject, delivered, exc)
            await dead_letter(broker, service, msg, exc, delivered)
            await msg.raw_message.term()
        else:
            delay = backoff_s(delivered)
            log.warning(
                "%s: %s failed (try %d), retry in %.0fs: %s",
                service,
                subject,
                delivered,
                delay,
                exc,
            )
            await msg.nack(delay=delay)
        return
    await msg.ack()


async def dead_letter(
    broker: NatsBroker, service: str, msg: NatsMessage, exc: BaseException, delivered: int
) -> None:
    raw = msg.raw_message
    meta = getattr(raw, "metadata", None)
    seq = getattr(getattr(meta, "sequence", None), "stream", None)
    stream = getattr(meta, "stream", "core")
    record = {
        "service": service,
        "subject": raw.subject,
        "stream": stream,
        "stream_seq": seq,
        "deliveries": delivered,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exception(exc)[-5:],
        "headers": dict(raw.headers or {}),
        "body": raw.data.decode("utf-8", errors="replace"),
    }
    await broker.publish(
        json.dumps(record, ensure_ascii=False).encode(),
        f"dlq.{service}.{stream}",
        headers={"Nats-Msg-Id": f"dlq:{service}:{stream}:{seq}"},
        stream="DLQ",
    )
