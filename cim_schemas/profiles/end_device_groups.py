"""The EndDeviceGroups profile (``http://iec.ch/TC57/2011/EndDeviceGroups#``).

EndDeviceGroup+{mRID?, description?, groupAddress?, type?, EndDevices*, Names*,
status?}: named groups of meters (CIM Metering::EndDeviceGroup) that controls and read
schedules target as one. amihub keeps mRID, description, the first Names/name and the
member EndDevices (mRID or Names/name); groupAddress, type and status are parsed and
echoed, not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lxml import etree

from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles.common import (
    IdentifiedObject,
    Name,
    Status,
    children,
    expect_root,
    integer,
    parse_identified,
    parse_name,
    parse_status,
    render_identified,
    render_names,
    render_status,
    root,
    sub_int,
    sub_text,
    text,
)

NOUN: Final = "EndDeviceGroups"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class EndDeviceGroup:
    mrid: str | None = None
    description: str | None = None
    group_address: int | None = None
    type: str | None = None
    end_devices: tuple[IdentifiedObject, ...] = ()
    names: tuple[Name, ...] = ()
    status: Status | None = None
    #: whether the element listed EndDevices at all (change: none = membership kept)
    has_end_devices: bool = False

    def name(self) -> str | None:
        return self.names[0].name if self.names else None


@dataclass(frozen=True)
class EndDeviceGroups:
    end_device_groups: tuple[EndDeviceGroup, ...] = ()


def _parse_group(el: etree._Element) -> EndDeviceGroup:
    mrid = description = kind = None
    address: int | None = None
    status: Status | None = None
    devices: list[IdentifiedObject] = []
    names: list[Name] = []
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "mRID":
            mrid = text(child)
        elif local == "description":
            description = text(child)
        elif local == "groupAddress":
            address = integer(child)
        elif local == "type":
            kind = text(child)
        elif local == "EndDevices":
            devices.append(parse_identified(child, NS))
        elif local == "Names":
            names.append(parse_name(child, NS))
        elif local == "status":
            status = parse_status(child, NS)
    return EndDeviceGroup(
        mrid, description, address, kind, tuple(devices), tuple(names), status, bool(devices)
    )


def parse_end_device_groups(element: etree._Element) -> EndDeviceGroups:
    """Parse a ``{...EndDeviceGroups#}EndDeviceGroups`` element."""
    expect_root(element, NS, "EndDeviceGroups")
    return EndDeviceGroups(
        tuple(
            _parse_group(child) for tag, child in children(element) if tag == NS + "EndDeviceGroup"
        )
    )


def render_end_device_groups(obj: EndDeviceGroups) -> etree._Element:
    """The ``EndDeviceGroups`` profile element."""
    el = root("EndDeviceGroups", NS)
    for group in obj.end_device_groups:
        g = etree.SubElement(el, NS + "EndDeviceGroup")
        sub_text(g, NS + "mRID", group.mrid)
        sub_text(g, NS + "description", group.description)
        sub_int(g, NS + "groupAddress", group.group_address)
        sub_text(g, NS + "type", group.type)
        for device in group.end_devices:
            render_identified(g, NS + "EndDevices", device, NS)
        render_names(g, group.names, NS)
        if group.status is not None:
            render_status(g, NS + "status", group.status, NS)
    return el
