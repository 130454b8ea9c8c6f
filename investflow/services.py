"""The services `investflow up` runs: the one list a new service joins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # run as `python -m <module>`
    http: bool = False  # serves HTTP (at least /health, /metrics) on `<NAME>_HTTP_PORT`
    durable: str = ""  # its JetStream durable consumer, for progress and summaries
    rules: bool = False  # decides with rulesets: `rules publish` waits for it to load a version
    replica: int = 1  # the n-th process of this service (replicas share its durable consumers)

    @property
    def key(self) -> str:
        """The child's name in logs and the supervisor: `scoring`, `scoring-2`, ..."""
        return self.name if self.replica == 1 else f"{self.name}-{self.replica}"

    @property
    def http_port_env(self) -> str:
        return f"{self.name.upper()}_HTTP_PORT"


# Order matters only for start-up logs. Add a service here and `investflow up`, the demo,
# the AsyncAPI document and the end-to-end tests all pick it up.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("intake", "services.intake", http=True, durable="intake"),
    ServiceSpec("review", "services.review", http=True, durable="review", rules=True),
    ServiceSpec("scoring", "services.scoring", http=True, durable="scoring", rules=True),
    ServiceSpec("notify", "services.notify", http=True, durable="notify", rules=True),
    # The battle map (挂图作战): reads every stream into its own tables, serves the pages.
    ServiceSpec("board", "services.board", http=True, durable="board"),
)


def with_replicas(
    services: tuple[ServiceSpec, ...], replicas: dict[str, int]
) -> tuple[ServiceSpec, ...]:
    """Each service as many times as `replicas` says (default once)."""
    from dataclasses import replace

    return tuple(
        replace(spec, replica=n)
        for spec in services
        for n in range(1, replicas.get(spec.name, 1) + 1)
    )
