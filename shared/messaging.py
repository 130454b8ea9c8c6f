"""Broker factory, what counts as a retryable failure, and the dead-letter stream.

The services consume through shared/partitions.py (by hand, on nats-py's public pull API):
ack on success, nak with back-off on a failure retrying can cure, and otherwise, or after
`max_deliver` attempts, publish the message with its error to the dead-letter stream and
terminate it, so the consumer keeps going.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import traceback

import nats.errors
import nats.js.errors
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from . import subjects
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


async def dead_letter(
    broker: NatsBroker, service: str, msg: Msg, exc: BaseException, delivered: int
) -> None:
    meta = getattr(msg, "metadata", None)
    seq = getattr(getattr(meta, "sequence", None), "stream", None)
    stream = getattr(meta, "stream", "core")
    record = {
        "service": service,
        # As published: `investflow dlq replay` sends it there again.
        "subject": subjects.as_published(msg.subject),
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
