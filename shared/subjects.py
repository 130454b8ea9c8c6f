"""Subject names: the one place they are spelled.

Events between services travel as `<event type>.<key>`: `project.lead.3f2a9c01`. The event
type (`project.lead`, `review.decided`, ...) is what handlers dispatch on; the key token names
what the event is about (its project, or a score.rates year), so a stream can split its
messages into partitions by it and keep each project's events in order (shared/streams.py).
The stream stores them as `<event type>.<partition>.<key>`; `event_type` reads either form.
"""

from __future__ import annotations

from .contract.enums import InboundKind

INBOUND_FILTER = "intake.*.*"  # exactly three tokens: never matches intake.rejected.<unit>.<kind>

# The internal event streams' first tokens: their subjects carry a key token.
KEYED_ROOTS = frozenset({"project", "review", "score", "notify"})
NO_KEY = "_"  # an event about no project (none is named)


def fnv1a_32(data: bytes) -> int:
    """The hash nats-server's `partition()` transform uses, also for key tokens."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def inbound(unit: str, kind: InboundKind | str) -> str:
    return f"intake.{unit}.{kind}"


def rejected(unit: str, kind: str) -> str:
    return f"intake.rejected.{unit}.{kind}"


def canonical(kind: InboundKind | str) -> str:
    """The event type of a canonical project event (publish it on `keyed(...)`)."""
    return f"project.{kind}"


def key_token(key: str | int | None) -> str:
    """The subject token of a partition key: 8 hex digits of its FNV-1a 32 hash.

    Project ids may hold '.', which would split a subject, and run to 97 characters; the
    hash is one short safe token, the same for the same key. Two keys sharing a token only
    share a partition, which orders them together: harmless.
    """
    if key is None or key == "":
        return NO_KEY
    return f"{fnv1a_32(str(key).encode()):08x}"


def keyed(event_type: str, key: str | int | None) -> str:
    """The subject an event of `event_type` about `key` is published on."""
    return f"{event_type}.{key_token(key)}"


def keyed_template(event_type: str, key: str = "key") -> str:
    """`project.lead.{key}`: the subject as FastStream's publishers and AsyncAPI show it."""
    return f"{event_type}.{{{key}}}"


def event_type(subject: str) -> str:
    """`project.lead` of `project.lead`, `project.lead.<key>` and `project.lead.<p>.<key>`;
    other subjects as they are."""
    root, _, rest = subject.partition(".")
    if root not in KEYED_ROOTS or not rest:
        return subject
    return f"{root}.{rest.split('.', 1)[0]}"


def as_published(subject: str) -> str:
    """`project.lead.<key>` of a stored `project.lead.<p>.<key>`: where to publish it again
    (the stream adds the partition itself)."""
    parts = subject.split(".")
    if parts[0] in KEYED_ROOTS and len(parts) == 4:
        return ".".join((parts[0], parts[1], parts[3]))
    return subject


def stored_pattern(pattern: str) -> str:
    """A filter for stored messages of an event type or pattern (`review.decided`,
    `project.*`): every key and partition of it. `project.>` is left as it is."""
    root = pattern.split(".", 1)[0]
    if root not in KEYED_ROOTS or pattern.endswith(">"):
        return pattern
    return f"{pattern}.>"


PROJECT_DUPLICATE = "project.duplicate"
REVIEW_SCREENED = "review.screened"
REVIEW_MATERIALS = "review.materials"
REVIEW_DECIDED = "review.decided"
REVIEW_RECOGNITION = "review.recognition"
REVIEW_REFUSED = "review.refused"  # a committee decision not taken, and why
SCORE_CREDITED = "score.credited"
SCORE_HELD = "score.held"
SCORE_REVERSED = "score.reversed"
SCORE_RATES = "score.rates"  # 履约率、落地率、资金到位率 of an assessment year, when they change
NOTIFY_SENT = "notify.sent"
NOTIFY_FAILED = "notify.failed"
