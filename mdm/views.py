"""Read models for the operator interface: what people look at, queried set-based.

The operator interface (adapters/web) reads most things through the unit of work's
repositories and the bus's query handlers, as the other adapters do. What those do not
answer (search by any identifier, the relay state a device was last switched to, the
events of one job, the figures monitoring scrapes) is this port, implemented in
``adapters/sql/views.py``. Every method is read-only (dismissing a dead letter is the
message journal's: hub/journal.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mdm.model import EndDeviceEvent


@dataclass(frozen=True)
class SearchHit:
    kind: str  # "meter" | "usage_point"
    mrid: str
    name: str | None
    serial_number: str | None
    state: str  # device state / usage point status
    #: the meter installed at the usage point now / the usage point the meter serves now
    linked: str | None
    matched: str  # which identifier matched: mrid, name, serial_number


@dataclass(frozen=True)
class RelayState:
    """The breaker state a device last reported switching to (a control outcome)."""

    device_mrid: str
    state: str  # "connected" | "disconnected"
    at: datetime
    job: str | None


@dataclass(frozen=True)
class StoreFigures:
    """What monitoring scrapes from the store (shared by every process on it)."""

    #: (interface, verb, noun, result) -> messages in the message log
    messages: dict[tuple[str, str, str, str], int]
    #: (channel, state) -> outbox rows not sent (pending, dead)
    outbox: dict[tuple[str, str], int]
    #: (kind, state) -> head-end jobs
    jobs: dict[tuple[str, str], int]
    #: DLMS security event type -> events stored
    security_events: dict[str, int]
    #: dead letters not resolved
    dead_letters_open: int
    #: stored readings (current versions; PostgreSQL: the planner's estimate)
    readings: int


class OperatorViews(Protocol):
    def search(self, utility_id: int, text: str, limit: int = 25) -> list[SearchHit]:
        """Meters and usage points whose mRID, name or serial number contains ``text``
        (case-insensitive), exact matches first."""
        ...

    def relay_states(self, utility_id: int, device_mrids: list[str]) -> dict[str, RelayState]:
        """The last connect / disconnect outcome of each device that has one."""
        ...

    def job_events(self, utility_id: int, job_mrid: str) -> list[EndDeviceEvent]:
        """The EndDeviceEvents recording a control job (request, outcome per device)."""
        ...

    def device_job_ids(self, utility_id: int, device_mrid: str, limit: int = 20) -> list[str]:
        """The control jobs that went to a device, newest first."""
        ...

    def figures(self) -> StoreFigures: ...

    def ping(self) -> None:
        """One round trip to the store (raises StoreUnavailable)."""
        ...
