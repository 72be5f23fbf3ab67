"""The EndDeviceEvents profile (``http://iec.ch/TC57/2011/EndDeviceEvents#``).

EndDeviceEvent*{mRID?, createdDateTime?, issuerID?, issuerTrackingID?,
reason?, severity?, userID?, Assets? (the device: mRID and/or Names),
EndDeviceEventDetails*{name?, value?}, EndDeviceEventType@ref, Names*,
UsagePoint?}.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from lxml import etree

from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles.common import (
    IdentifiedObject,
    Name,
    children,
    dt,
    expect_root,
    parse_identified,
    parse_name,
    ref,
    render_identified,
    render_names,
    root,
    sub_dt,
    sub_ref,
    sub_text,
    text,
)

NOUN: Final = "EndDeviceEvents"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class EndDeviceEvent:
    end_device_event_type: str  # type.domain.subDomain.eventOrAction
    mrid: str | None = None
    created_date_time: datetime | None = None
    issuer_id: str | None = None
    issuer_tracking_id: str | None = None
    reason: str | None = None
    severity: str | None = None
    user_id: str | None = None
    assets: IdentifiedObject | None = None  # the end device
    details: tuple[tuple[str | None, str | None], ...] = ()
    names: tuple[Name, ...] = ()
    usage_point: IdentifiedObject | None = None


@dataclass(frozen=True)
class EndDeviceEvents:
    end_device_events: tuple[EndDeviceEvent, ...] = ()


_TEXTS: Final = {
    "mRID": "mrid",
    "issuerID": "issuer_id",
    "issuerTrackingID": "issuer_tracking_id",
    "reason": "reason",
    "severity": "severity",
    "userID": "user_id",
}


def parse_end_device_event(el: etree._Element) -> EndDeviceEvent:
    values: dict[str, Any] = {}
    details: list[tuple[str | None, str | None]] = []
    names: list[Name] = []
    event_type = ""
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local in _TEXTS:
            values[_TEXTS[local]] = text(child)
        elif local == "createdDateTime":
            values["created_date_time"] = dt(child)
        elif local == "EndDeviceEventType":
            event_type = ref(child)
        elif local == "Assets":
            values["assets"] = parse_identified(child, NS)
        elif local == "UsagePoint":
            values["usage_point"] = parse_identified(child, NS)
        elif local == "Names":
            names.append(parse_name(child, NS))
        elif local == "EndDeviceEventDetails":
            name = value = None
            for t2, c2 in children(child):
                if t2 == NS + "name":
                    name = text(c2)
                elif t2 == NS + "value":
                    value = c2.text or ""
            details.append((name, value))
    return EndDeviceEvent(event_type, details=tuple(details), names=tuple(names), **values)


def parse_end_device_events(element: etree._Element) -> EndDeviceEvents:
    """Parse a ``{...EndDeviceEvents#}EndDeviceEvents`` element."""
    expect_root(element, NS, "EndDeviceEvents")
    return EndDeviceEvents(
        tuple(
            parse_end_device_event(child)
            for tag, child in children(element)
            if tag == NS + "EndDeviceEvent"
        )
    )


def render_end_device_events(obj: EndDeviceEvents) -> etree._Element:
    """The ``EndDeviceEvents`` profile element."""
    root_el = root("EndDeviceEvents", NS)
    for ev in obj.end_device_events:
        el = etree.SubElement(root_el, NS + "EndDeviceEvent")
        sub_text(el, NS + "mRID", ev.mrid)
        sub_dt(el, NS + "createdDateTime", ev.created_date_time)
        sub_text(el, NS + "issuerID", ev.issuer_id)
        sub_text(el, NS + "issuerTrackingID", ev.issuer_tracking_id)
        sub_text(el, NS + "reason", ev.reason)
        sub_text(el, NS + "severity", ev.severity)
        sub_text(el, NS + "userID", ev.user_id)
        if ev.assets is not None:
            render_identified(el, NS + "Assets", ev.assets, NS)
        for name, value in ev.details:
            d = etree.SubElement(el, NS + "EndDeviceEventDetails")
            sub_text(d, NS + "name", name)
            sub_text(d, NS + "value", value)
        sub_ref(el, NS + "EndDeviceEventType", ev.end_device_event_type)
        render_names(el, ev.names, NS)
        if ev.usage_point is not None:
            render_identified(el, NS + "UsagePoint", ev.usage_point, NS)
    return root_el
