"""End device groups: named groups of meters a utility targets as one (CIM EndDeviceGroup).

A firmware campaign, a disconnection round or a read campaign names a group instead
of its meters. A group has an mRID (unique per utility, never reused), a name (unique
among the utility's open groups, so Names/name resolves to one group), a description,
and its members. A closed group keeps its members but is no longer a target.

Membership is simple: a row per (group, meter) with the instant it was added. Targets
are resolved against the membership as it is when a job is accepted (controls) or when
a read schedule runs; what a job reached is in its own record (the job's targets, its
events), and every change of a group is in the audit log. Periods of membership
(from/to) would add a history nobody reads: readings belong to meters and usage points,
not to groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mdm.model import DeviceRef

#: meter mRIDs (an alias: the repositories have a method named ``list``)
MrIdList = list[str]


@dataclass(frozen=True)
class EndDeviceGroup:
    utility_id: int
    mrid: str
    name: str
    description: str | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    id: int | None = None
    members: int = 0  # how many meters (filled by the repository's reads)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def describe(self) -> str:
        return self.mrid if self.name == self.mrid else f"{self.name} ({self.mrid})"


class EndDeviceGroupRepository(Protocol):
    """Groups and their members (``uow.end_device_groups``); membership writes are
    set-based (one statement per chunk of meters), never a statement per meter."""

    def add(self, group: EndDeviceGroup, at: datetime) -> EndDeviceGroup:
        """Insert; an mRID already used (open or closed), or the name of an open group:
        PayloadInvalid 2007 (the caller's transaction stays usable)."""
        ...

    def find(self, utility_id: int, ref: DeviceRef) -> EndDeviceGroup | None:
        """By mRID (open or closed), or by name (the open group of that name, else the
        most recently closed one)."""
        ...

    def list(self, utility_id: int, *, include_closed: bool = False) -> list[EndDeviceGroup]:
        """Ordered by name, with member counts."""
        ...

    def update(
        self, group_id: int, name: str, description: str | None, at: datetime
    ) -> EndDeviceGroup:
        """New name / description (2007 if another open group has the name)."""
        ...

    def close(self, group_id: int, at: datetime) -> bool:
        """Open -> closed; False if it was closed already."""
        ...

    def delete(self, group_id: int) -> None:
        """The group and its membership rows."""
        ...

    def add_members(self, group_id: int, device_ids: Sequence[int], at: datetime) -> int:
        """Add the devices that are not members yet; returns how many were added."""
        ...

    def remove_members(self, group_id: int, device_ids: Sequence[int]) -> int:
        """Remove those devices; returns how many were members."""
        ...

    def member_ids(self, group_id: int) -> set[int]: ...

    def members(self, group_id: int) -> MrIdList:
        """The members' mRIDs, in mRID order."""
        ...
