"""Handlers of the end device group commands (mdm/group_commands.py).

Each runs in the caller's transaction and writes nothing when it refuses: meters are
resolved first (every unknown one reported at once), then the group row and the
membership are written set-based. Every change is in the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cim_schemas.errors import ItemRejected, by_mrid, named_object
from mdm.group_commands import (
    AddGroupMembers,
    ChangeEndDeviceGroup,
    CloseEndDeviceGroup,
    CreateEndDeviceGroup,
    DeleteEndDeviceGroup,
    RemoveGroupMembers,
)
from mdm.groups import EndDeviceGroup
from mdm.handling import Handler, HandlerContext
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork


class UnknownMembers(ItemRejected):
    """Meters the utility does not know (2001); ``refs`` lists every one of them."""

    def __init__(self, refs: Sequence[DeviceRef]) -> None:
        shown = ", ".join(str(r) for r in refs[:10])
        more = f" and {len(refs) - 10} more" if len(refs) > 10 else ""
        super().__init__("2001", f"{len(refs)} unknown meter(s): {shown}{more}")
        self.refs = tuple(refs)


@dataclass(frozen=True)
class GroupChange:
    group: EndDeviceGroup
    added: int = 0
    removed: int = 0
    unchanged: int = 0  # named meters that were already (or not) members


def _device_ids(uow: UnitOfWork, utility_id: int, refs: Sequence[DeviceRef]) -> list[int]:
    if not refs:
        return []
    found = uow.devices.find_many(utility_id, refs)
    unknown = [r for r in dict.fromkeys(refs) if r not in found]
    if unknown:
        raise UnknownMembers(unknown)
    return list(dict.fromkeys(d.id for d in (found[r] for r in refs) if d.id is not None))


def _group(uow: UnitOfWork, utility_id: int, ref: DeviceRef, *, open_: bool) -> EndDeviceGroup:
    group = uow.end_device_groups.find(utility_id, ref)
    if group is None or group.id is None:
        raise ItemRejected(
            "2008", f"no end device group {ref}", **named_object(ref, "EndDeviceGroup")
        )
    if open_ and not group.is_open:
        assert group.closed_at is not None
        raise ItemRejected(
            "2009",
            f"end device group {group.describe()} was closed at {group.closed_at.isoformat()}",
            **by_mrid(group.mrid, "EndDeviceGroup"),
        )
    return group


def _reread(uow: UnitOfWork, group: EndDeviceGroup) -> EndDeviceGroup:
    again = uow.end_device_groups.find(group.utility_id, DeviceRef(mrid=group.mrid))
    assert again is not None
    return again


def create_end_device_group(
    cmd: CreateEndDeviceGroup, uow: UnitOfWork, ctx: HandlerContext
) -> GroupChange:
    name = cmd.name.strip()
    mrid = cmd.mrid.strip()
    if not name or not mrid:
        raise ItemRejected("2011", "an end device group needs an mRID and a name")
    ids = _device_ids(uow, cmd.utility_id, cmd.members)
    group = uow.end_device_groups.add(
        EndDeviceGroup(cmd.utility_id, mrid, name, cmd.description), ctx.now
    )
    assert group.id is not None
    added = uow.end_device_groups.add_members(group.id, ids, ctx.now)
    uow.audit.record(ctx.actor, "create", "EndDeviceGroup", mrid, f"{name}: {added} meter(s)")
    return GroupChange(_reread(uow, group), added=added)


def change_end_device_group(
    cmd: ChangeEndDeviceGroup, uow: UnitOfWork, ctx: HandlerContext
) -> GroupChange:
    group = _group(uow, cmd.utility_id, cmd.group, open_=True)
    assert group.id is not None
    ids = _device_ids(uow, cmd.utility_id, cmd.members) if cmd.members is not None else None
    name = (cmd.name or "").strip() or group.name
    description = cmd.description if cmd.description is not None else group.description
    if (name, description) != (group.name, group.description):
        uow.end_device_groups.update(group.id, name, description, ctx.now)
    added = removed = unchanged = 0
    if ids is not None:
        current = uow.end_device_groups.member_ids(group.id)
        wanted = set(ids)
        removed = uow.end_device_groups.remove_members(group.id, sorted(current - wanted))
        added = uow.end_device_groups.add_members(group.id, sorted(wanted - current), ctx.now)
        unchanged = len(wanted & current)
    uow.audit.record(
        ctx.actor,
        "change",
        "EndDeviceGroup",
        group.mrid,
        f"{name}: {added} added, {removed} removed",
    )
    return GroupChange(_reread(uow, group), added, removed, unchanged)


def add_group_members(cmd: AddGroupMembers, uow: UnitOfWork, ctx: HandlerContext) -> GroupChange:
    group = _group(uow, cmd.utility_id, cmd.group, open_=True)
    assert group.id is not None
    ids = _device_ids(uow, cmd.utility_id, cmd.members)
    added = uow.end_device_groups.add_members(group.id, ids, ctx.now)
    uow.audit.record(ctx.actor, "add", "EndDeviceGroup", group.mrid, f"{added} meter(s) added")
    return GroupChange(_reread(uow, group), added=added, unchanged=len(ids) - added)


def remove_group_members(
    cmd: RemoveGroupMembers, uow: UnitOfWork, ctx: HandlerContext
) -> GroupChange:
    group = _group(uow, cmd.utility_id, cmd.group, open_=True)
    assert group.id is not None
    ids = _device_ids(uow, cmd.utility_id, cmd.members)
    removed = uow.end_device_groups.remove_members(group.id, ids)
    uow.audit.record(
        ctx.actor, "remove", "EndDeviceGroup", group.mrid, f"{removed} meter(s) removed"
    )
    return GroupChange(_reread(uow, group), removed=removed, unchanged=len(ids) - removed)


def close_end_device_group(
    cmd: CloseEndDeviceGroup, uow: UnitOfWork, ctx: HandlerContext
) -> GroupChange:
    group = _group(uow, cmd.utility_id, cmd.group, open_=True)
    assert group.id is not None
    uow.end_device_groups.close(group.id, ctx.now)
    uow.audit.record(ctx.actor, "close", "EndDeviceGroup", group.mrid, group.name)
    return GroupChange(_reread(uow, group))


def delete_end_device_group(
    cmd: DeleteEndDeviceGroup, uow: UnitOfWork, ctx: HandlerContext
) -> GroupChange:
    group = _group(uow, cmd.utility_id, cmd.group, open_=False)
    assert group.id is not None
    uow.end_device_groups.delete(group.id)
    uow.audit.record(
        ctx.actor, "delete", "EndDeviceGroup", group.mrid, f"{group.name}: {group.members} meter(s)"
    )
    return GroupChange(group, removed=group.members)


GROUP_HANDLERS: dict[type[Any], Handler] = {
    CreateEndDeviceGroup: create_end_device_group,
    ChangeEndDeviceGroup: change_end_device_group,
    AddGroupMembers: add_group_members,
    RemoveGroupMembers: remove_group_members,
    CloseEndDeviceGroup: close_end_device_group,
    DeleteEndDeviceGroup: delete_end_device_group,
}
