"""Commands the meter data domain accepts: frozen dataclasses, one intent each.

Adapters and the hub's noun translators build these; :mod:`mdm.handlers`
executes them inside a unit of work. Nothing here knows about XML or transports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from mdm.model import DeviceRef, EndDevice, UsagePoint
from mdm.ports import ReadingBlock, StagedReading


@dataclass(frozen=True)
class MeterItem:
    """The meter named by the ``item``-th MeterReading of a message."""

    item: int
    ref: DeviceRef


@dataclass(frozen=True)
class ReadingFeedChunk:
    """A slice of a reading stream: blocks of readings and the meters they belong to."""

    blocks: list[ReadingBlock] = field(default_factory=list)
    meters: list[MeterItem] = field(default_factory=list)

    def rows(self) -> list[StagedReading]:
        return [row for block in self.blocks for row in block.rows()]


@dataclass(frozen=True)
class StoreMeterReadings:
    """Store a stream of readings (any size: the feed is consumed once, in chunks)."""

    utility_id: int
    feed: Iterable[ReadingFeedChunk]
    #: try the store's optimistic bulk path for new data first (large imports); it
    #: raises FastPathConflict when the data must be merged instead
    direct: bool = False


@dataclass(frozen=True)
class QueryMeterReadings:
    utility_id: int
    meters: tuple[DeviceRef, ...] = ()
    usage_points: tuple[DeviceRef, ...] = ()
    reading_types: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    #: readings as reply text (ReadingQueryResult.texts) instead of StoredReading objects
    as_text: bool = False
    #: EndDeviceGroups (mRID, or the name of an open group): their members as they are now
    end_device_groups: tuple[DeviceRef, ...] = ()
    #: at most this many meters through ``end_device_groups`` (all of them together, a
    #: meter in two groups counted twice); more: ItemRejected 2013 naming the group that
    #: went over. None: no limit
    max_group_meters: int | None = None


@dataclass(frozen=True)
class CreateUsagePoint:
    utility_id: int
    usage_point: UsagePoint


@dataclass(frozen=True)
class ChangeUsagePoint:
    utility_id: int
    usage_point: UsagePoint


@dataclass(frozen=True)
class CloseUsagePoint:
    utility_id: int
    ref: DeviceRef
    at: datetime


@dataclass(frozen=True)
class DeleteUsagePoint:
    utility_id: int
    ref: DeviceRef


@dataclass(frozen=True)
class CreateMeter:
    utility_id: int
    device: EndDevice


@dataclass(frozen=True)
class ChangeMeter:
    utility_id: int
    device: EndDevice


@dataclass(frozen=True)
class CloseMeter:
    """Retire a meter: it must not be installed; its state becomes removed."""

    utility_id: int
    ref: DeviceRef
    at: datetime


@dataclass(frozen=True)
class DeleteMeter:
    utility_id: int
    ref: DeviceRef


@dataclass(frozen=True)
class InstallMeter:
    """MasterDataLinkageConfig create: the meter serves the usage point from ``start``."""

    utility_id: int
    meter: DeviceRef
    usage_point: DeviceRef
    start: datetime


@dataclass(frozen=True)
class RemoveMeter:
    """MasterDataLinkageConfig close: the meter leaves the usage point at ``end``."""

    utility_id: int
    meter: DeviceRef
    usage_point: DeviceRef | None
    end: datetime


MasterDataCommand = (
    CreateUsagePoint
    | ChangeUsagePoint
    | CloseUsagePoint
    | DeleteUsagePoint
    | CreateMeter
    | ChangeMeter
    | CloseMeter
    | DeleteMeter
    | InstallMeter
    | RemoveMeter
)
