"""What shared/messaging.py decides for every consumer: which failures are worth a retry,
and how they are logged. The consumption itself is tests/test_partitions.py's."""

from __future__ import annotations

import nats
import pytest


def test_a_transient_failure_is_logged_in_one_line_anything_else_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The demo under load printed a notify traceback for a NATS request that timed out and
    was retried: the operator reads one line for that, and a traceback only for a bug."""
    import logging

    from shared.messaging import log_failure

    logger = logging.getLogger("investflow.test")
    with caplog.at_level(logging.WARNING, logger="investflow.test"):
        log_failure(logger, "notify: delivery pass failed", nats.errors.TimeoutError())
        log_failure(logger, "notify: delivery pass failed", KeyError("project_id"))
    slow, bug = caplog.records
    assert slow.levelname == "WARNING" and slow.exc_info is None
    assert "TimeoutError" in slow.getMessage()
    assert bug.levelname == "ERROR" and bug.exc_info is not None
