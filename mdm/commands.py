"""Commands the meter data domain accepts: frozen dataclasses, one intent each.

Adapters and the hub's noun translators build these; :mod:`mdm.handlers`
executes them inside a unit of work. Nothing here knows about XML or transports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mdm.model import DeviceRef, EndDevice, UsagePoint
from mdm.ports import MeterItem as MeterItem  # re-exported: the command's chunk types
from mdm.ports import ReadingFeed as ReadingFeed
from mdm.ports import ReadingFeedChunk as ReadingFeedChunk


@dataclass(frozen=True)
class StoreMeterReadings:
    """Store readings, any number (the feed is read in chunks, bounded memory): the one
    way readings go in, whoever writes them. ``feed``: a :class:`ReadingFeed`, or the
    chunks themselves (a list can be read again, a generator once)."""

    utility_id: int
    feed: ReadingFeed | Iterable[ReadingFeedChunk]


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
