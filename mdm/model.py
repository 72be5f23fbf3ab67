"""Meter data management domain: the value objects every layer shares.

These are plain frozen dataclasses. The SQL adapter maps them to tables; the
hub maps CIM profiles to and from them. Instants are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple


class ServiceCategory(StrEnum):
    """UsagePoint.ServiceCategory.kind (CIM ServiceKind, the ones we meter)."""

    ELECTRICITY = "electricity"
    GAS = "gas"
    WATER = "water"
    HEAT = "heat"
    COLD = "cold"


class UsagePointStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class DeviceKind(StrEnum):
    METER = "meter"
    CONCENTRATOR = "concentrator"
    COMM_MODULE = "comm_module"


class DeviceState(StrEnum):
    """Life-cycle state of an end device."""

    INVENTORY = "inventory"
    INSTALLED = "installed"
    REMOVED = "removed"
    DISCOVERED = "discovered"
    ERROR = "error"


@dataclass(frozen=True)
class Utility:
    code: str
    name: str
    id: int | None = None


@dataclass(frozen=True)
class UsagePoint:
    mrid: str
    utility_code: str
    service_category: ServiceCategory = ServiceCategory.ELECTRICITY
    name: str | None = None
    location: str | None = None
    transformer_area: str | None = None
    status: UsagePointStatus = UsagePointStatus.ACTIVE
    id: int | None = None


@dataclass(frozen=True)
class EndDevice:
    mrid: str
    utility_code: str
    serial_number: str | None = None
    kind: DeviceKind = DeviceKind.METER
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    state: DeviceState = DeviceState.INVENTORY
    id: int | None = None


@dataclass(frozen=True)
class Installation:
    """A device installed at a usage point from ``start`` until ``end`` (open if None)."""

    device_mrid: str
    usage_point_mrid: str
    start: datetime
    end: datetime | None = None


@dataclass(frozen=True)
class DeviceRef:
    """How a message names a device or usage point: by mRID, or by Names/name."""

    mrid: str | None = None
    name: str | None = None
    name_type: str | None = None

    def __str__(self) -> str:
        if self.mrid:
            return self.mrid
        return f"{self.name_type or 'name'}={self.name}"


class ReadingRow(NamedTuple):
    """One reading as it is stored: resolved ids, UTC instant, exact value."""

    device_id: int
    reading_type_id: int
    ts: datetime
    value: Decimal
    quality: str  # comma-separated ReadingQualityType codes; "" = valid


@dataclass(frozen=True)
class StoredReading:
    device_mrid: str
    reading_type: str
    ts: datetime
    value: Decimal
    quality: str
    version: int
    recorded_at: datetime


@dataclass(frozen=True)
class EndDeviceEvent:
    device_mrid: str
    event_type: str  # EndDeviceEventType code type.domain.subDomain.eventOrAction
    created_at: datetime
    reason: str | None = None
    severity: str | None = None
    mrid: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestStats:
    """What a bulk reading ingestion did."""

    stored: int = 0  # new rows
    superseded: int = 0  # rows that replaced an earlier version
    unchanged: int = 0  # identical to what was stored (replay-safe)

    def __add__(self, other: IngestStats) -> IngestStats:
        return IngestStats(
            self.stored + other.stored,
            self.superseded + other.superseded,
            self.unchanged + other.unchanged,
        )

    @property
    def total(self) -> int:
        return self.stored + self.superseded + self.unchanged
