"""What scoring reads, parsed into the contract's models: no NATS, no database.

From PROJECT (`project.*`, emitted by intake): `lead`, `decision`, `milestone`, `funds`,
`rates`, `correction`, `withdrawal`; the other kinds are skipped. From REVIEW: `review.recognition`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pydantic import BaseModel, ValidationError

from shared import subjects
from shared.contract import (
    DecisionTaken,
    FundsArrived,
    LeadReported,
    MilestoneReached,
    RatesPublished,
    Recognition,
    RecordCorrected,
    RecordWithdrawn,
)

from .record import Event

PROJECT_INPUTS: dict[str, type[BaseModel]] = {
    subjects.canonical("lead"): LeadReported,
    subjects.canonical("decision"): DecisionTaken,
    subjects.canonical("milestone"): MilestoneReached,
    subjects.canonical("funds"): FundsArrived,
    subjects.canonical("rates"): RatesPublished,
    subjects.canonical("correction"): RecordCorrected,
    subjects.canonical("withdrawal"): RecordWithdrawn,
}
INPUTS: dict[str, type[BaseModel]] = {
    **PROJECT_INPUTS,
    subjects.REVIEW_RECOGNITION: Recognition,
}


class BadInput(ValueError):
    """A message that no retry will make valid: it names each field and its problem."""


def parse(subject: str, data: bytes) -> Event | None:
    """The contract model of a message; None when scoring does not read that subject."""
    model = INPUTS.get(subject)
    if model is None:
        return None
    try:
        return model.model_validate_json(data)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise BadInput(f"{subject}: {problems}") from exc


def subject_of(event: Event) -> str:
    for subject, model in INPUTS.items():
        if type(event) is model:
            return subject
    raise TypeError(f"not a scoring input: {type(event).__name__}")


def inbox_key(
    subject: str,
    event: Event,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> str:
    """The idempotency key: the envelope's event id, else the Nats-Msg-Id, else the content."""
    key = getattr(event, "event_id", None) or (headers or {}).get("Nats-Msg-Id")
    if not key:
        body = data if data is not None else event.model_dump_json().encode()
        key = "sha256:" + hashlib.sha256(body).hexdigest()
    return f"{subject}:{key}"[:400]
