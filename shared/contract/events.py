"""Which contract model each internal subject carries, and parsing a message at the edge.

A service parses every event into its model before deciding anything: one that does not
parse is refused at once (and dead-lettered, shared/messaging.py), never half-applied or
retried behind a KeyError.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from .. import subjects
from . import CANONICAL_MODELS
from .outbound import (
    AssessmentRates,
    Credited,
    Decided,
    DuplicateClaim,
    Held,
    MaterialsStatus,
    Recognition,
    Reversed,
    Screened,
)

EVENT_MODELS: dict[str, type[BaseModel]] = {
    **{subjects.canonical(kind): model for kind, model in CANONICAL_MODELS.items()},
    subjects.PROJECT_DUPLICATE: DuplicateClaim,
    subjects.REVIEW_SCREENED: Screened,
    subjects.REVIEW_MATERIALS: MaterialsStatus,
    subjects.REVIEW_DECIDED: Decided,
    subjects.REVIEW_RECOGNITION: Recognition,
    subjects.SCORE_CREDITED: Credited,
    subjects.SCORE_HELD: Held,
    subjects.SCORE_REVERSED: Reversed,
    subjects.SCORE_RATES: AssessmentRates,
}


class NotInContract(ValueError):
    """An event that is not what its subject promises: no retry will change that."""


def parse_event(subject: str, raw: bytes) -> BaseModel | None:
    """`raw` as the model its subject carries; None for a subject the contract does not name
    (a newer producer may add one: the consumer skips it). Raises NotInContract."""
    model = EVENT_MODELS.get(subject)
    if model is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise NotInContract(f"{subject}: {problems}") from exc


def check_event(subject: str, raw: bytes) -> None:
    """Raise NotInContract unless `raw` is the model its subject carries (unknown subjects,
    which a newer producer may add, pass: the consumer skips them)."""
    parse_event(subject, raw)
