"""Command handlers: plain functions ``(command, uow, ctx) -> result``.

Handlers never commit: the caller owns the transaction (the hub commits the
effect together with the reply, so a replayed message cannot apply twice).
Item-level problems raise :class:`cim_schemas.errors.ItemRejected` *before* anything
is written for that item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cim_schemas.errors import ItemRejected, by_mrid, named_object
from mdm.commands import (
    ChangeMeter,
    ChangeUsagePoint,
    CloseMeter,
    CloseUsagePoint,
    CreateMeter,
    CreateUsagePoint,
    DeleteMeter,
    DeleteUsagePoint,
    InstallMeter,
    QueryMeterReadings,
    RemoveMeter,
    StoreMeterReadings,
)
from mdm.group_handlers import GROUP_HANDLERS
from mdm.handling import Handler as Handler  # re-exported: importers predate mdm.handling
from mdm.handling import HandlerContext as HandlerContext
from mdm.model import (
    DeviceRef,
    DeviceState,
    EndDevice,
    Installation,
    StoredReading,
    UsagePoint,
    UsagePointStatus,
)
from mdm.ports import ReadingText, StagingResult, UnitOfWork, reading_feed
from mdm.vee.handlers import VEE_HANDLERS
from mdm.vee.ingest import IngestRules, Touched, TouchedFeed, validate_on_ingest


def store_meter_readings(
    cmd: StoreMeterReadings,
    uow: UnitOfWork,
    ctx: HandlerContext,
    ingest_rules: IngestRules | None = None,
) -> StagingResult:
    """The one way readings go in, whoever writes them (CIM messages, batches, mapped
    files, head-end reads and pushes, dead-letter replays): the store decides how to
    write them. With ``ingest_rules`` (the bootstrap's, from ``[vee]``), the rules
    enabled for ``ctx.source`` then validate what the feed wrote, in the same
    transaction (mdm/vee/ingest.py); findings never refuse a reading."""
    if ingest_rules is None or not ctx.source:
        return uow.readings.ingest(cmd.utility_id, reading_feed(cmd.feed))
    touched = Touched()
    result = uow.readings.ingest(cmd.utility_id, TouchedFeed(reading_feed(cmd.feed), touched))
    if not result.duplicates and result.stats.stored + result.stats.superseded:
        validate_on_ingest(
            uow,
            ctx.actor,
            ctx.now,
            ctx.source,
            cmd.utility_id,
            touched,
            result.unknown_items,
            ingest_rules,
        )
    return result


@dataclass(frozen=True)
class UnusableGroup:
    """An EndDeviceGroup of a query that gives no meter (code 2015), and why."""

    ref: DeviceRef
    reason: str


@dataclass
class ReadingQueryResult:
    readings: Iterator[StoredReading]
    unknown_meters: list[DeviceRef] = field(default_factory=list)
    unknown_usage_points: list[DeviceRef] = field(default_factory=list)
    #: the readings as reply text, when the command asked ``as_text`` (then readings is empty)
    texts: Iterator[ReadingText] = field(default_factory=lambda: iter(()))
    #: groups that do not exist, are closed or have no member
    unusable_groups: list[UnusableGroup] = field(default_factory=list)


def query_meter_readings(
    cmd: QueryMeterReadings, uow: UnitOfWork, ctx: HandlerContext
) -> ReadingQueryResult:
    result = ReadingQueryResult(readings=iter(()))
    if (
        cmd.as_text
        and cmd.meters
        and not cmd.usage_points
        and not cmd.end_device_groups
        and all(r.mrid for r in cmd.meters)
    ):
        # the common case, meters by mRID: lookup and readings in one statement
        texts = uow.readings.meter_texts(
            cmd.utility_id,
            [r.mrid for r in cmd.meters if r.mrid],
            list(cmd.reading_types) or None,
            cmd.start,
            cmd.end,
        )
        result.unknown_meters = [r for r in cmd.meters if r.mrid not in texts.found]
        result.texts = texts.rows
        return result
    # meter ids in a dict: ordered, each once (a meter named and in a group is read once)
    device_ids: dict[int, None] = {}
    if cmd.meters:
        found = uow.devices.find_many(cmd.utility_id, list(cmd.meters))
        for ref in cmd.meters:
            device = found.get(ref)
            if device is None or device.id is None:
                result.unknown_meters.append(ref)
            else:
                device_ids[device.id] = None
    for ref in cmd.usage_points:
        up = uow.usage_points.find(cmd.utility_id, ref)
        if up is None or up.id is None:
            result.unknown_usage_points.append(ref)
            continue
        for device_id, _start, _end in uow.installations.devices_at(up.id, cmd.start, cmd.end):
            device_ids[device_id] = None
    device_ids.update(dict.fromkeys(sorted(_group_members(cmd, uow, result))))
    if device_ids and cmd.as_text:
        result.texts = uow.readings.query_text(
            list(device_ids), list(cmd.reading_types) or None, cmd.start, cmd.end
        )
    elif device_ids:
        result.readings = uow.readings.query(
            list(device_ids), list(cmd.reading_types) or None, cmd.start, cmd.end
        )
    return result


def _group_members(
    cmd: QueryMeterReadings, uow: UnitOfWork, result: ReadingQueryResult
) -> set[int]:
    """The device ids of the query's groups' members now; a group that does not exist,
    is closed or is empty goes to ``result.unusable_groups``. Member counts are checked
    against ``cmd.max_group_meters`` before any membership is read."""
    members: set[int] = set()
    taken = 0
    for ref in dict.fromkeys(cmd.end_device_groups):
        group = uow.end_device_groups.find(cmd.utility_id, ref)
        if group is None or group.id is None or not group.is_open:
            why = "is closed" if group is not None else "does not exist"
            result.unusable_groups.append(UnusableGroup(ref, f"end device group {ref} {why}"))
            continue
        if group.members == 0:
            result.unusable_groups.append(
                UnusableGroup(ref, f"end device group {group.describe()} has no member")
            )
            continue
        taken += group.members
        if cmd.max_group_meters is not None and taken > cmd.max_group_meters:
            raise ItemRejected(
                "2013",
                f"end device group {group.describe()} has {group.members} meters, which takes "
                f"this get to {taken} meters through groups; one get reads at most "
                f"{cmd.max_group_meters} ([limits] max_group_meters): name fewer or smaller "
                "groups",
                **named_object(ref, "EndDeviceGroup"),
            )
        members |= uow.end_device_groups.member_ids(group.id)
    return members


def _usage_point(uow: UnitOfWork, utility_id: int, ref: DeviceRef) -> UsagePoint:
    up = uow.usage_points.find(utility_id, ref)
    if up is None or up.id is None:
        raise ItemRejected("2002", f"unknown usage point {ref}", **named_object(ref, "UsagePoint"))
    return up


def _device(uow: UnitOfWork, utility_id: int, ref: DeviceRef) -> EndDevice:
    device = uow.devices.find(utility_id, ref)
    if device is None or device.id is None:
        raise ItemRejected("2001", f"unknown meter {ref}", **named_object(ref, "Meter"))
    return device


def create_usage_point(cmd: CreateUsagePoint, uow: UnitOfWork, ctx: HandlerContext) -> UsagePoint:
    up = cmd.usage_point
    if uow.usage_points.find(cmd.utility_id, DeviceRef(mrid=up.mrid)) is not None:
        raise ItemRejected(
            "2007", f"usage point {up.mrid} already exists", **by_mrid(up.mrid, "UsagePoint")
        )
    created = uow.usage_points.add(cmd.utility_id, up)
    uow.audit.record(ctx.actor, "create", "UsagePoint", up.mrid)
    return created


def change_usage_point(cmd: ChangeUsagePoint, uow: UnitOfWork, ctx: HandlerContext) -> UsagePoint:
    current = _usage_point(uow, cmd.utility_id, DeviceRef(mrid=cmd.usage_point.mrid))
    changed = uow.usage_points.update(
        cmd.utility_id, dataclasses.replace(cmd.usage_point, id=current.id)
    )
    uow.audit.record(ctx.actor, "change", "UsagePoint", current.mrid)
    return changed


def close_usage_point(cmd: CloseUsagePoint, uow: UnitOfWork, ctx: HandlerContext) -> UsagePoint:
    up = _usage_point(uow, cmd.utility_id, cmd.ref)
    assert up.id is not None
    if up.status is UsagePointStatus.CLOSED:
        raise ItemRejected(
            "2009", f"usage point {up.mrid} is already closed", **by_mrid(up.mrid, "UsagePoint")
        )
    if uow.installations.current_at_usage_point(up.id):
        raise ItemRejected(
            "2009",
            f"usage point {up.mrid} still has an installed meter: "
            "remove it first (MasterDataLinkageConfig close)",
            **by_mrid(up.mrid, "UsagePoint"),
        )
    closed = uow.usage_points.update(
        cmd.utility_id, dataclasses.replace(up, status=UsagePointStatus.CLOSED)
    )
    uow.audit.record(ctx.actor, "close", "UsagePoint", up.mrid, f"at {cmd.at.isoformat()}")
    return closed


def delete_usage_point(cmd: DeleteUsagePoint, uow: UnitOfWork, ctx: HandlerContext) -> None:
    up = _usage_point(uow, cmd.utility_id, cmd.ref)
    assert up.id is not None
    if uow.installations.devices_at(up.id, None, None):
        raise ItemRejected(
            "2009",
            f"usage point {up.mrid} has an installation history: close it instead of deleting it",
            **by_mrid(up.mrid, "UsagePoint"),
        )
    uow.usage_points.delete(cmd.utility_id, up.id)
    uow.audit.record(ctx.actor, "delete", "UsagePoint", up.mrid)


def create_meter(cmd: CreateMeter, uow: UnitOfWork, ctx: HandlerContext) -> EndDevice:
    device = cmd.device
    if uow.devices.find(cmd.utility_id, DeviceRef(mrid=device.mrid)) is not None:
        raise ItemRejected(
            "2007", f"meter {device.mrid} already exists", **by_mrid(device.mrid, "Meter")
        )
    created = uow.devices.add(cmd.utility_id, device)
    uow.audit.record(ctx.actor, "create", "Meter", device.mrid)
    return created


def change_meter(cmd: ChangeMeter, uow: UnitOfWork, ctx: HandlerContext) -> EndDevice:
    current = _device(uow, cmd.utility_id, DeviceRef(mrid=cmd.device.mrid))
    # the life-cycle state is the domain's to set (installation, removal), not a config field
    changed = uow.devices.update(
        cmd.utility_id, dataclasses.replace(cmd.device, id=current.id, state=current.state)
    )
    uow.audit.record(ctx.actor, "change", "Meter", current.mrid)
    return changed


def close_meter(cmd: CloseMeter, uow: UnitOfWork, ctx: HandlerContext) -> EndDevice:
    device = _device(uow, cmd.utility_id, cmd.ref)
    assert device.id is not None
    if uow.installations.current(device.id) is not None:
        raise ItemRejected(
            "2009",
            f"meter {device.mrid} is installed: remove it first (MasterDataLinkageConfig close)",
            **by_mrid(device.mrid, "Meter"),
        )
    uow.devices.set_state(device.id, DeviceState.REMOVED)
    uow.audit.record(ctx.actor, "close", "Meter", device.mrid, f"at {cmd.at.isoformat()}")
    return dataclasses.replace(device, state=DeviceState.REMOVED)


def delete_meter(cmd: DeleteMeter, uow: UnitOfWork, ctx: HandlerContext) -> None:
    device = _device(uow, cmd.utility_id, cmd.ref)
    assert device.id is not None
    if uow.installations.history(device.id):
        raise ItemRejected(
            "2009",
            f"meter {device.mrid} has an installation history: close it instead of deleting it",
            **by_mrid(device.mrid, "Meter"),
        )
    uow.devices.delete(cmd.utility_id, device.id)
    uow.audit.record(ctx.actor, "delete", "Meter", device.mrid)


def install_meter(cmd: InstallMeter, uow: UnitOfWork, ctx: HandlerContext) -> Installation:
    device = _device(uow, cmd.utility_id, cmd.meter)
    up = _usage_point(uow, cmd.utility_id, cmd.usage_point)
    assert device.id is not None
    assert up.id is not None
    if up.status is UsagePointStatus.CLOSED:
        raise ItemRejected(
            "2009", f"usage point {up.mrid} is closed", **by_mrid(up.mrid, "UsagePoint")
        )
    if device.state is DeviceState.ERROR:
        raise ItemRejected(
            "2009", f"meter {device.mrid} is in error state", **by_mrid(device.mrid, "Meter")
        )
    current = uow.installations.current(device.id)
    if current is not None:
        raise ItemRejected(
            "2009",
            f"meter {device.mrid} is already installed at usage point "
            f"{current.usage_point_mrid} since {current.start.isoformat()}",
            **by_mrid(device.mrid, "Meter"),
        )
    for previous in uow.installations.history(device.id):
        if previous.end is not None and previous.end > cmd.start:
            raise ItemRejected(
                "2009",
                f"meter {device.mrid} was installed at {previous.usage_point_mrid} until "
                f"{previous.end.isoformat()}, after the requested start {cmd.start.isoformat()}",
                **by_mrid(device.mrid, "Meter"),
            )
    installation = uow.installations.install(device.id, up.id, cmd.start)
    uow.devices.set_state(device.id, DeviceState.INSTALLED)
    uow.audit.record(
        ctx.actor,
        "install",
        "Meter",
        device.mrid,
        f"at usage point {up.mrid} from {cmd.start.isoformat()}",
    )
    return installation


def remove_meter(cmd: RemoveMeter, uow: UnitOfWork, ctx: HandlerContext) -> Installation:
    device = _device(uow, cmd.utility_id, cmd.meter)
    assert device.id is not None
    current = uow.installations.current(device.id)
    if current is None:
        raise ItemRejected(
            "2009", f"meter {device.mrid} is not installed", **by_mrid(device.mrid, "Meter")
        )
    if cmd.usage_point is not None:
        up = _usage_point(uow, cmd.utility_id, cmd.usage_point)
        if up.mrid != current.usage_point_mrid:
            raise ItemRejected(
                "2009",
                f"meter {device.mrid} is installed at {current.usage_point_mrid}, not {up.mrid}",
                **by_mrid(device.mrid, "Meter"),
            )
    if cmd.end < current.start:
        raise ItemRejected(
            "2009",
            f"removal at {cmd.end.isoformat()} is before the "
            f"installation start {current.start.isoformat()}",
            **by_mrid(device.mrid, "Meter"),
        )
    closed = uow.installations.remove(device.id, cmd.end)
    uow.devices.set_state(device.id, DeviceState.REMOVED)
    uow.audit.record(
        ctx.actor,
        "remove",
        "Meter",
        device.mrid,
        f"from usage point {current.usage_point_mrid} at {cmd.end.isoformat()}",
    )
    return closed


#: every command handler of the domain: the one table the bootstrap gives the bus
HANDLERS: dict[type[Any], Handler] = {
    StoreMeterReadings: store_meter_readings,
    QueryMeterReadings: query_meter_readings,
    CreateUsagePoint: create_usage_point,
    ChangeUsagePoint: change_usage_point,
    CloseUsagePoint: close_usage_point,
    DeleteUsagePoint: delete_usage_point,
    CreateMeter: create_meter,
    ChangeMeter: change_meter,
    CloseMeter: close_meter,
    DeleteMeter: delete_meter,
    InstallMeter: install_meter,
    RemoveMeter: remove_meter,
    **GROUP_HANDLERS,
    **VEE_HANDLERS,
}
