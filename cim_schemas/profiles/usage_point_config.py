"""The UsagePointConfig profile (``http://iec.ch/TC57/2011/UsagePointConfig#``).

UsagePoint*{mRID?, isSdp?, isVirtual?, readCycle?, servicePriority?, status?,
ConfigurationEvents?, Names*, ServiceCategory?{kind}, UsagePointLocation?}.
ServiceCategory.kind is the CIM ServiceKind (electricity, gas, water, heat...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles.common import (
    ConfigurationEvent,
    IdentifiedObject,
    Name,
    Status,
    boolean,
    children,
    expect_root,
    parse_configuration_event,
    parse_identified,
    parse_name,
    parse_status,
    render_configuration_event,
    render_identified,
    render_names,
    render_status,
    root,
    sub_bool,
    sub_text,
    text,
)

NOUN: Final = "UsagePointConfig"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class UsagePoint:
    mrid: str | None = None
    is_sdp: bool | None = None
    is_virtual: bool | None = None
    read_cycle: str | None = None
    service_priority: str | None = None
    status: Status | None = None
    configuration_events: ConfigurationEvent | None = None
    names: tuple[Name, ...] = ()
    service_category: str | None = None  # ServiceCategory/kind
    usage_point_location: IdentifiedObject | None = None

    @property
    def ref(self) -> IdentifiedObject:
        return IdentifiedObject(self.mrid, self.names)


@dataclass(frozen=True)
class UsagePointConfig:
    usage_points: tuple[UsagePoint, ...] = ()


_TEXTS: Final = {
    "mRID": "mrid",
    "readCycle": "read_cycle",
    "servicePriority": "service_priority",
}


def parse_usage_point(el: etree._Element) -> UsagePoint:
    values: dict[str, Any] = {}
    names: list[Name] = []
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local in _TEXTS:
            values[_TEXTS[local]] = text(child)
        elif local == "isSdp":
            values["is_sdp"] = boolean(child)
        elif local == "isVirtual":
            values["is_virtual"] = boolean(child)
        elif local == "status":
            values["status"] = parse_status(child, NS)
        elif local == "ConfigurationEvents":
            values["configuration_events"] = parse_configuration_event(child, NS)
        elif local == "Names":
            names.append(parse_name(child, NS))
        elif local == "ServiceCategory":
            kind = child.find(NS + "kind")
            values["service_category"] = text(kind) if kind is not None else None
        elif local == "UsagePointLocation":
            values["usage_point_location"] = parse_identified(child, NS)
    return UsagePoint(names=tuple(names), **values)


def parse_usage_point_config(element: etree._Element) -> UsagePointConfig:
    """Parse a ``{...UsagePointConfig#}UsagePointConfig`` element."""
    expect_root(element, NS, "UsagePointConfig")
    return UsagePointConfig(
        tuple(
            parse_usage_point(child) for tag, child in children(element) if tag == NS + "UsagePoint"
        )
    )


def render_usage_point_config(obj: UsagePointConfig) -> etree._Element:
    """The ``UsagePointConfig`` profile element."""
    root_el = root("UsagePointConfig", NS)
    for up in obj.usage_points:
        el = etree.SubElement(root_el, NS + "UsagePoint")
        sub_text(el, NS + "mRID", up.mrid)
        sub_bool(el, NS + "isSdp", up.is_sdp)
        sub_bool(el, NS + "isVirtual", up.is_virtual)
        sub_text(el, NS + "readCycle", up.read_cycle)
        sub_text(el, NS + "servicePriority", up.service_priority)
        if up.status is not None:
            render_status(el, NS + "status", up.status, NS)
        if up.configuration_events is not None:
            render_configuration_event(el, NS + "ConfigurationEvents", up.configuration_events, NS)
        render_names(el, up.names, NS)
        if up.service_category is not None:
            sc = etree.SubElement(el, NS + "ServiceCategory")
            sub_text(sc, NS + "kind", up.service_category)
        if up.usage_point_location is not None:
            render_identified(el, NS + "UsagePointLocation", up.usage_point_location, NS)
    return root_el
