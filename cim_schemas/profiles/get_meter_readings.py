"""The GetMeterReadings profile (``http://iec.ch/TC57/2011/GetMeterReadings#``).

What to read: EndDevice*, EndDeviceGroup*, ReadingType*, TimeSchedule*
{scheduleInterval}, UsagePoint*, UsagePointGroup*, each named by mRID and/or
Names (each with its NameType); an EndDevice also by its serialNumber. It travels
inside Request of the GetMeterReadings message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lxml import etree

from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles.common import (
    DateTimeInterval,
    IdentifiedObject,
    children,
    expect_root,
    parse_identified,
    parse_interval,
    render_identified,
    render_interval,
    root,
    text,
)

NOUN: Final = "GetMeterReadings"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class EndDeviceRef(IdentifiedObject):
    """An EndDevice of the get named (also) by its serialNumber; one named by mRID
    and/or Names only parses as a plain IdentifiedObject."""

    serial_number: str | None = None


@dataclass(frozen=True)
class GetMeterReadings:
    end_devices: tuple[IdentifiedObject, ...] = ()
    end_device_groups: tuple[IdentifiedObject, ...] = ()
    reading_types: tuple[IdentifiedObject, ...] = ()  # mRID = the ReadingType code
    time_schedules: tuple[DateTimeInterval, ...] = ()  # TimeSchedule/scheduleInterval
    usage_points: tuple[IdentifiedObject, ...] = ()
    usage_point_groups: tuple[IdentifiedObject, ...] = ()


_LISTS: Final = {
    "EndDevice": "end_devices",
    "EndDeviceGroup": "end_device_groups",
    "ReadingType": "reading_types",
    "UsagePoint": "usage_points",
    "UsagePointGroup": "usage_point_groups",
}


def parse_get_meter_readings(element: etree._Element) -> GetMeterReadings:
    """Parse a ``{...GetMeterReadings#}GetMeterReadings`` element."""
    expect_root(element, NS, "GetMeterReadings")
    lists: dict[str, list[IdentifiedObject]] = {v: [] for v in _LISTS.values()}
    schedules: list[DateTimeInterval] = []
    for tag, child in children(element):
        local = tag[len(NS) :]
        if local == "EndDevice":
            named = parse_identified(child, NS)
            serial = child.find(NS + "serialNumber")
            lists["end_devices"].append(
                named if serial is None else EndDeviceRef(named.mrid, named.names, text(serial))
            )
        elif local in _LISTS:
            lists[_LISTS[local]].append(parse_identified(child, NS))
        elif local == "TimeSchedule":
            interval = child.find(NS + "scheduleInterval")
            schedules.append(
                parse_interval(interval, NS) if interval is not None else DateTimeInterval()
            )
    return GetMeterReadings(
        end_devices=tuple(lists["end_devices"]),
        end_device_groups=tuple(lists["end_device_groups"]),
        reading_types=tuple(lists["reading_types"]),
        time_schedules=tuple(schedules),
        usage_points=tuple(lists["usage_points"]),
        usage_point_groups=tuple(lists["usage_point_groups"]),
    )


def render_get_meter_readings(obj: GetMeterReadings) -> etree._Element:
    """The ``GetMeterReadings`` profile element."""
    el = root("GetMeterReadings", NS)
    for item in obj.end_devices:
        device = render_identified(el, NS + "EndDevice", item, NS)
        serial = item.serial_number if isinstance(item, EndDeviceRef) else None
        if serial is not None:
            node = etree.Element(NS + "serialNumber")
            node.text = serial
            device.insert(1 if item.mrid is not None else 0, node)
    for item in obj.end_device_groups:
        render_identified(el, NS + "EndDeviceGroup", item, NS)
    for item in obj.reading_types:
        render_identified(el, NS + "ReadingType", item, NS)
    for interval in obj.time_schedules:
        schedule = etree.SubElement(el, NS + "TimeSchedule")
        render_interval(schedule, NS + "scheduleInterval", interval, NS)
    for item in obj.usage_points:
        render_identified(el, NS + "UsagePoint", item, NS)
    for item in obj.usage_point_groups:
        render_identified(el, NS + "UsagePointGroup", item, NS)
    return el
