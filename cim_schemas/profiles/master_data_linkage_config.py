"""The MasterDataLinkageConfig profile (``http://iec.ch/TC57/2011/MasterDataLinkageConfig#``).

Links (create) or unlinks (delete / close) master data: ConfigurationEvent?
{createdDateTime?, effectiveDateTime?, reason?}, EndDevice*, Meter*,
ServiceLocation*, UsagePoint*, each named by mRID and/or Names. A meter
installed at a usage point from effectiveDateTime is one Meter and one
UsagePoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lxml import etree

from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles.common import (
    ConfigurationEvent,
    IdentifiedObject,
    children,
    expect_root,
    parse_configuration_event,
    parse_identified,
    render_configuration_event,
    render_identified,
    root,
)

NOUN: Final = "MasterDataLinkageConfig"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class MasterDataLinkageConfig:
    configuration_event: ConfigurationEvent | None = None
    end_devices: tuple[IdentifiedObject, ...] = ()
    meters: tuple[IdentifiedObject, ...] = ()
    service_locations: tuple[IdentifiedObject, ...] = ()
    usage_points: tuple[IdentifiedObject, ...] = ()


_LISTS: Final = {
    "EndDevice": "end_devices",
    "Meter": "meters",
    "ServiceLocation": "service_locations",
    "UsagePoint": "usage_points",
}


def parse_master_data_linkage_config(element: etree._Element) -> MasterDataLinkageConfig:
    """Parse a ``{...MasterDataLinkageConfig#}MasterDataLinkageConfig`` element."""
    expect_root(element, NS, "MasterDataLinkageConfig")
    event: ConfigurationEvent | None = None
    lists: dict[str, list[IdentifiedObject]] = {v: [] for v in _LISTS.values()}
    for tag, child in children(element):
        local = tag[len(NS) :]
        if local in _LISTS:
            lists[_LISTS[local]].append(parse_identified(child, NS))
        elif local == "ConfigurationEvent":
            event = parse_configuration_event(child, NS)
    return MasterDataLinkageConfig(
        configuration_event=event,
        end_devices=tuple(lists["end_devices"]),
        meters=tuple(lists["meters"]),
        service_locations=tuple(lists["service_locations"]),
        usage_points=tuple(lists["usage_points"]),
    )


def render_master_data_linkage_config(obj: MasterDataLinkageConfig) -> etree._Element:
    """The ``MasterDataLinkageConfig`` profile element."""
    el = root("MasterDataLinkageConfig", NS)
    if obj.configuration_event is not None:
        render_configuration_event(el, NS + "ConfigurationEvent", obj.configuration_event, NS)
    for item in obj.end_devices:
        render_identified(el, NS + "EndDevice", item, NS)
    for item in obj.meters:
        render_identified(el, NS + "Meter", item, NS)
    for item in obj.service_locations:
        render_identified(el, NS + "ServiceLocation", item, NS)
    for item in obj.usage_points:
        render_identified(el, NS + "UsagePoint", item, NS)
    return el
