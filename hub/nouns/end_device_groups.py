"""EndDeviceGroups: named groups of meters (mdm/groups.py), managed through CIM.

Each ``EndDeviceGroup`` of the payload is one item:

* ``create``: a new group; ``mRID`` (none: amihub makes a uuid4; taken, in any state:
  2007), ``Names/name`` (none: the mRID; the name of another open group: 2007),
  ``description``, its members as ``EndDevices`` (mRID or Names/name);
* ``change``: the group named by ``mRID`` (else ``Names/name``); with both, the name
  changes; ``description`` replaces the stored one; ``EndDevices`` present: the
  membership becomes exactly those meters (absent: kept);
* ``close``: the group stays with its members but is no longer a target (2009 if it is
  closed already); ``delete``: the group and its membership are removed.

A group naming a meter the utility does not know changes nothing and gets one 2001
per such meter (xpath of its ``EndDevices``); the other groups are applied (PARTIAL).
Unknown group on change / close / delete: 2008. The reply echoes the groups applied
(mRID, name, description), not their members; counts say added and removed meters.
The commands go through the bootstrap's bus (``RouteContext.bus``), whose table
(``mdm.handlers.HANDLERS``) holds the group handlers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from cim_schemas.errors import ErrorDetail, ItemRejected, PayloadInvalid, by_mrid, named_object
from cim_schemas.profiles.common import Name
from cim_schemas.profiles.end_device_groups import (
    EndDeviceGroup,
    EndDeviceGroups,
    parse_end_device_groups,
    render_end_device_groups,
)
from hub.nouns.end_device_controls import _ref
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.group_commands import (
    ChangeEndDeviceGroup,
    CloseEndDeviceGroup,
    CreateEndDeviceGroup,
    DeleteEndDeviceGroup,
)
from mdm.group_handlers import GroupChange, UnknownMembers
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork

MAX_ERRORS: Final = 100


@dataclass
class EndDeviceGroupsRoute:
    noun: str = "EndDeviceGroups"
    verbs: frozenset[str] = frozenset({"create", "change", "close", "delete"})
    streaming: bool = False

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        if frame.payload is None:
            raise PayloadInvalid(
                f"{frame.header.verb} EndDeviceGroups needs a Payload",
                code="1009",
                xpath=f"/{frame.root_name}/Payload",
            )
        groups = parse_end_device_groups(frame.payload).end_device_groups
        result = RouteResult()
        echoed: list[EndDeviceGroup] = []
        added = removed = 0
        for n, item in enumerate(groups, 1):
            base = f"{frame.payload_xpath}/EndDeviceGroup[{n}]"
            try:
                command = self._command(frame.header.verb, item, ctx)
                change: GroupChange = ctx.bus.handle(command, uow, ctx.handler)
            except UnknownMembers as exc:
                result.errors.extend(_unknown(item, exc, base))
                continue
            except (ItemRejected, PayloadInvalid) as exc:
                result.errors.append(
                    exc.detail(base)
                    if isinstance(exc, ItemRejected) and exc.object_id
                    else ErrorDetail(
                        exc.code or "2013",
                        str(exc),
                        xpath=base,
                        **(by_mrid(item.mrid, "EndDeviceGroup") if item.mrid else {}),
                    )
                )
                continue
            result.applied += 1
            added += change.added
            removed += change.removed
            g = change.group
            echoed.append(
                EndDeviceGroup(
                    mrid=g.mrid,
                    description=g.description,
                    names=(Name(g.name),),
                    group_address=item.group_address,
                    type=item.type,
                )
            )
        del result.errors[MAX_ERRORS:]
        if echoed:
            result.payload = render_end_device_groups(EndDeviceGroups(tuple(echoed)))
        result.counts = {
            "groups": len(groups),
            "applied": result.applied,
            "added": added,
            "removed": removed,
        }
        return result

    @staticmethod
    def _command(verb: str, item: EndDeviceGroup, ctx: RouteContext) -> object:
        mrid = (item.mrid or "").strip()
        name = (item.name() or "").strip()
        members: list[DeviceRef] = []
        for n, device in enumerate(item.end_devices, 1):
            ref = _ref(device)
            if ref is None:
                raise ItemRejected("2011", f"EndDevices[{n}] has neither mRID nor Names/name")
            members.append(ref)
        if verb == "create":
            mrid = mrid or str(uuid.uuid4())
            return CreateEndDeviceGroup(
                ctx.utility_id, mrid, name or mrid, item.description, tuple(members)
            )
        if not mrid and not name:
            raise ItemRejected("2011", "the EndDeviceGroup has neither mRID nor Names/name")
        group = DeviceRef(mrid=mrid) if mrid else DeviceRef(name=name)
        if verb == "change":
            return ChangeEndDeviceGroup(
                ctx.utility_id,
                group,
                name=name if mrid else None,
                description=item.description,
                members=tuple(members) if item.has_end_devices else None,
            )
        if verb == "close":
            return CloseEndDeviceGroup(ctx.utility_id, group)
        return DeleteEndDeviceGroup(ctx.utility_id, group)


def _unknown(item: EndDeviceGroup, exc: UnknownMembers, base: str) -> list[ErrorDetail]:
    """One 2001 per unknown meter, at the xpath of (the first) EndDevices naming it."""
    where: dict[DeviceRef, int] = {}
    for n, device in enumerate(item.end_devices, 1):
        ref = _ref(device)
        if ref is not None:
            where.setdefault(ref, n)
    return [
        ErrorDetail(
            "2001",
            f"unknown meter {ref}: the group is not applied",
            xpath=f"{base}/EndDevices[{where.get(ref, 1)}]",
            **named_object(ref, "EndDevice"),
        )
        for ref in exc.refs
    ]
