"""Commands on end device groups (mdm/groups.py): frozen dataclasses, one intent each.

Members are named by :class:`~mdm.model.DeviceRef` (mRID, or a name / serial number).
A command naming a meter the utility does not know changes nothing
(:class:`mdm.group_handlers.UnknownMembers` lists every such meter).
"""

from __future__ import annotations

from dataclasses import dataclass

from mdm.model import DeviceRef


@dataclass(frozen=True)
class CreateEndDeviceGroup:
    utility_id: int
    mrid: str
    name: str
    description: str | None = None
    members: tuple[DeviceRef, ...] = ()


@dataclass(frozen=True)
class ChangeEndDeviceGroup:
    """New name / description; with ``members`` (not None) the membership becomes
    exactly those meters (the others are removed, members kept keep their added_at)."""

    utility_id: int
    group: DeviceRef
    name: str | None = None
    description: str | None = None
    members: tuple[DeviceRef, ...] | None = None


@dataclass(frozen=True)
class AddGroupMembers:
    utility_id: int
    group: DeviceRef
    members: tuple[DeviceRef, ...]


@dataclass(frozen=True)
class RemoveGroupMembers:
    utility_id: int
    group: DeviceRef
    members: tuple[DeviceRef, ...]


@dataclass(frozen=True)
class CloseEndDeviceGroup:
    """The group stays (with its members) but is no longer a target."""

    utility_id: int
    group: DeviceRef


@dataclass(frozen=True)
class DeleteEndDeviceGroup:
    utility_id: int
    group: DeviceRef
