"""The MeterReadSchedule profile (``http://iec.ch/TC57/2011/MeterReadSchedule#``).

What to read and when: EndDevice*, EndDeviceGroup*, ReadingType*,
TimeSchedule*{mRID?, disabled?, offset?, recurrencePattern?,
recurrencePeriod?, scheduleInterval?, TimePoints*{dateTime?, sequenceNumber?}},
UsagePoint*, UsagePointGroup*. (amihub's replies give a stored schedule's next run
as its first TimePoints/dateTime.)
(amihub's layout, following GetMeterReadings plus the CIM TimeSchedule
attributes; offset and recurrencePeriod are seconds.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from lxml import etree

from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles.common import (
    DateTimeInterval,
    IdentifiedObject,
    boolean,
    children,
    dec,
    dt,
    expect_root,
    integer,
    parse_identified,
    parse_interval,
    render_identified,
    render_interval,
    root,
    sub_bool,
    sub_dec,
    sub_dt,
    sub_int,
    sub_text,
    text,
)

NOUN: Final = "MeterReadSchedule"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class TimePoint:
    date_time: datetime | None = None
    sequence_number: int | None = None


@dataclass(frozen=True)
class TimeSchedule:
    mrid: str | None = None
    disabled: bool | None = None
    offset: Decimal | None = None  # seconds
    recurrence_pattern: str | None = None
    recurrence_period: Decimal | None = None  # seconds
    schedule_interval: DateTimeInterval | None = None
    time_points: tuple[TimePoint, ...] = ()


@dataclass(frozen=True)
class MeterReadSchedule:
    end_devices: tuple[IdentifiedObject, ...] = ()
    end_device_groups: tuple[IdentifiedObject, ...] = ()
    reading_types: tuple[IdentifiedObject, ...] = ()
    time_schedules: tuple[TimeSchedule, ...] = ()
    usage_points: tuple[IdentifiedObject, ...] = ()
    usage_point_groups: tuple[IdentifiedObject, ...] = ()


_LISTS: Final = {
    "EndDevice": "end_devices",
    "EndDeviceGroup": "end_device_groups",
    "ReadingType": "reading_types",
    "UsagePoint": "usage_points",
    "UsagePointGroup": "usage_point_groups",
}


def _parse_schedule(el: etree._Element) -> TimeSchedule:
    values: dict[str, Any] = {}
    points: list[TimePoint] = []
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "mRID":
            values["mrid"] = text(child)
        elif local == "disabled":
            values["disabled"] = boolean(child)
        elif local == "offset":
            values["offset"] = dec(child, "2013")
        elif local == "recurrencePattern":
            values["recurrence_pattern"] = text(child)
        elif local == "recurrencePeriod":
            values["recurrence_period"] = dec(child, "2013")
        elif local == "scheduleInterval":
            values["schedule_interval"] = parse_interval(child, NS)
        elif local == "TimePoints":
            points.append(_parse_point(child))
    return TimeSchedule(**values, time_points=tuple(points))


def _parse_point(el: etree._Element) -> TimePoint:
    values: dict[str, Any] = {}
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "dateTime":
            values["date_time"] = dt(child)
        elif local == "sequenceNumber":
            values["sequence_number"] = integer(child)
    return TimePoint(**values)


def parse_meter_read_schedule(element: etree._Element) -> MeterReadSchedule:
    """Parse a ``{...MeterReadSchedule#}MeterReadSchedule`` element."""
    expect_root(element, NS, "MeterReadSchedule")
    lists: dict[str, list[IdentifiedObject]] = {v: [] for v in _LISTS.values()}
    schedules: list[TimeSchedule] = []
    for tag, child in children(element):
        local = tag[len(NS) :]
        if local in _LISTS:
            lists[_LISTS[local]].append(parse_identified(child, NS))
        elif local == "TimeSchedule":
            schedules.append(_parse_schedule(child))
    return MeterReadSchedule(
        end_devices=tuple(lists["end_devices"]),
        end_device_groups=tuple(lists["end_device_groups"]),
        reading_types=tuple(lists["reading_types"]),
        time_schedules=tuple(schedules),
        usage_points=tuple(lists["usage_points"]),
        usage_point_groups=tuple(lists["usage_point_groups"]),
    )


def render_meter_read_schedule(obj: MeterReadSchedule) -> etree._Element:
    """The ``MeterReadSchedule`` profile element."""
    el = root("MeterReadSchedule", NS)
    for item in obj.end_devices:
        render_identified(el, NS + "EndDevice", item, NS)
    for item in obj.end_device_groups:
        render_identified(el, NS + "EndDeviceGroup", item, NS)
    for item in obj.reading_types:
        render_identified(el, NS + "ReadingType", item, NS)
    for s in obj.time_schedules:
        ts = etree.SubElement(el, NS + "TimeSchedule")
        sub_text(ts, NS + "mRID", s.mrid)
        sub_bool(ts, NS + "disabled", s.disabled)
        sub_dec(ts, NS + "offset", s.offset)
        sub_text(ts, NS + "recurrencePattern", s.recurrence_pattern)
        sub_dec(ts, NS + "recurrencePeriod", s.recurrence_period)
        if s.schedule_interval is not None:
            render_interval(ts, NS + "scheduleInterval", s.schedule_interval, NS)
        for point in s.time_points:
            tp = etree.SubElement(ts, NS + "TimePoints")
            sub_dt(tp, NS + "dateTime", point.date_time)
            sub_int(tp, NS + "sequenceNumber", point.sequence_number)
    for item in obj.usage_points:
        render_identified(el, NS + "UsagePoint", item, NS)
    for item in obj.usage_point_groups:
        render_identified(el, NS + "UsagePointGroup", item, NS)
    return el
