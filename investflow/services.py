"""The services `investflow up` runs: the one list a new service joins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # run as `python -m <module>`
    http: bool = False  # serves HTTP on the port in `<NAME>_HTTP_PORT` (intake: --http-port)
    durable: str = ""  # its JetStream durable consumer, for progress and summaries
    rules: bool = False  # decides with rulesets: `rules publish` waits for it to load a version

    @property
    def http_port_env(self) -> str:
        return f"{self.name.upper()}_HTTP_PORT"


# Order matters only for start-up logs. Add a service here and `investflow up`, the demo,
# the AsyncAPI document and the end-to-end tests all pick it up.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("intake", "services.intake", http=True, durable="intake"),
    ServiceSpec("review", "services.review", durable="review", rules=True),
    ServiceSpec("scoring", "services.scoring", http=True, durable="scoring", rules=True),
    ServiceSpec("notify", "services.notify", durable="notify"),
)
