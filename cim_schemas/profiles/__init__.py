"""Typed parse/render pairs for the IEC 61968-9 profiles amihub speaks.

One module per profile: frozen dataclasses that mirror the profile, a
``parse_<noun>(element)`` and a ``render_<noun>(obj)`` returning the profile's
root element (in its ``http://iec.ch/TC57/2011/<Noun>#`` namespace).
Parsers expect a schema-valid element and raise
:class:`cim_schemas.errors.PayloadInvalid` (with the element's xpath and the published
error code) for values they cannot use: a timestamp without zone, a value
that is not a decimal.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from cim_schemas.namespaces import noun_of_profile_ns

#: noun -> module in this package (imported on first use).
MODULES: Final[dict[str, str]] = {
    "MeterReadings": "meter_readings",
    "GetMeterReadings": "get_meter_readings",
    "EndDeviceControls": "end_device_controls",
    "EndDeviceEvents": "end_device_events",
    "MeterReadSchedule": "meter_read_schedule",
    "MeterConfig": "meter_config",
    "UsagePointConfig": "usage_point_config",
    "MasterDataLinkageConfig": "master_data_linkage_config",
}


@dataclass(frozen=True)
class Codec:
    """The parse/render pair of one profile."""

    noun: str
    type: type[Any]
    parse: Callable[[etree._Element], Any]
    render: Callable[[Any], etree._Element]


def codec(noun: str) -> Codec:
    """The codec of a profile noun; KeyError for a noun we have no profile for."""
    module_name = MODULES[noun]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return Codec(
        noun,
        getattr(module, noun),
        getattr(module, f"parse_{module_name}"),
        getattr(module, f"render_{module_name}"),
    )


def parse_profile(element: etree._Element) -> Any:
    """Parse any of our profile root elements into its dataclass."""
    namespace = etree.QName(element).namespace or ""
    noun = noun_of_profile_ns(namespace)
    if noun is None:
        raise KeyError(f"no profile for namespace {namespace!r}")
    return codec(noun).parse(element)


def render_profile(obj: Any) -> etree._Element:
    """Render any of our profile dataclasses (by its class name = the noun)."""
    return codec(type(obj).__name__).render(obj)
