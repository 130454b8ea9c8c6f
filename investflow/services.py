"""The services `investflow up` runs: the one list a new service joins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # run as `python -m <module>`
    http: bool = False  # serves HTTP on INTAKE_HTTP_PORT-style `<NAME>_HTTP_PORT`
    durable: str = ""  # its JetStream durable consumer, for progress and summaries


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("intake", "services.intake", http=True, durable="intake"),
)
