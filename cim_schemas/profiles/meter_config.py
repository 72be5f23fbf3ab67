"""The MeterConfig profile (``http://iec.ch/TC57/2011/MeterConfig#``).

Meter*{mRID?, amrSystem?, formNumber?, isVirtual?, lotNumber?, serialNumber?,
status?, timeZoneOffset?, ConfigurationEvents?, EndDeviceInfo?{AssetModel?
{modelNumber?, modelVersion?, Manufacturer?{Names*}}}, MeterMultipliers*
{kind?, value?}, Names*, UsagePoint?}. timeZoneOffset is in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
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
    dec,
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
    sub_dec,
    sub_text,
    text,
)

NOUN: Final = "MeterConfig"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"


@dataclass(frozen=True)
class AssetModel:
    model_number: str | None = None
    model_version: str | None = None
    manufacturer: tuple[Name, ...] = ()  # Manufacturer/Names

    @property
    def manufacturer_name(self) -> str | None:
        return self.manufacturer[0].name if self.manufacturer else None


@dataclass(frozen=True)
class MeterMultiplier:
    kind: str | None = None
    value: Decimal | None = None


@dataclass(frozen=True)
class Meter:
    mrid: str | None = None
    amr_system: str | None = None
    form_number: str | None = None
    is_virtual: bool | None = None
    lot_number: str | None = None
    serial_number: str | None = None
    status: Status | None = None
    time_zone_offset: Decimal | None = None  # minutes
    configuration_events: ConfigurationEvent | None = None
    asset_model: AssetModel | None = None  # EndDeviceInfo/AssetModel
    meter_multipliers: tuple[MeterMultiplier, ...] = ()
    names: tuple[Name, ...] = ()
    usage_point: IdentifiedObject | None = None

    @property
    def ref(self) -> IdentifiedObject:
        return IdentifiedObject(self.mrid, self.names)


@dataclass(frozen=True)
class MeterConfig:
    meters: tuple[Meter, ...] = ()


_TEXTS: Final = {
    "mRID": "mrid",
    "amrSystem": "amr_system",
    "formNumber": "form_number",
    "lotNumber": "lot_number",
    "serialNumber": "serial_number",
}


def _parse_asset_model(el: etree._Element) -> AssetModel:
    number = version = None
    manufacturer: list[Name] = []
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "modelNumber":
            number = text(child)
        elif local == "modelVersion":
            version = text(child)
        elif local == "Manufacturer":
            manufacturer = [parse_name(c, NS) for t, c in children(child) if t == NS + "Names"]
    return AssetModel(number, version, tuple(manufacturer))


def parse_meter(el: etree._Element) -> Meter:
    values: dict[str, Any] = {}
    names: list[Name] = []
    multipliers: list[MeterMultiplier] = []
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local in _TEXTS:
            values[_TEXTS[local]] = text(child)
        elif local == "isVirtual":
            values["is_virtual"] = boolean(child)
        elif local == "status":
            values["status"] = parse_status(child, NS)
        elif local == "timeZoneOffset":
            values["time_zone_offset"] = dec(child, "2013")
        elif local == "ConfigurationEvents":
            values["configuration_events"] = parse_configuration_event(child, NS)
        elif local == "EndDeviceInfo":
            model = child.find(NS + "AssetModel")
            values["asset_model"] = _parse_asset_model(model) if model is not None else None
        elif local == "MeterMultipliers":
            kind = value = None
            for t2, c2 in children(child):
                if t2 == NS + "kind":
                    kind = text(c2)
                elif t2 == NS + "value":
                    value = dec(c2, "2013")
            multipliers.append(MeterMultiplier(kind, value))
        elif local == "Names":
            names.append(parse_name(child, NS))
        elif local == "UsagePoint":
            values["usage_point"] = parse_identified(child, NS)
    return Meter(names=tuple(names), meter_multipliers=tuple(multipliers), **values)


def parse_meter_config(element: etree._Element) -> MeterConfig:
    """Parse a ``{...MeterConfig#}MeterConfig`` element."""
    expect_root(element, NS, "MeterConfig")
    return MeterConfig(
        tuple(parse_meter(child) for tag, child in children(element) if tag == NS + "Meter")
    )


def render_meter_config(obj: MeterConfig) -> etree._Element:
    """The ``MeterConfig`` profile element."""
    root_el = root("MeterConfig", NS)
    for m in obj.meters:
        el = etree.SubElement(root_el, NS + "Meter")
        sub_text(el, NS + "mRID", m.mrid)
        sub_text(el, NS + "amrSystem", m.amr_system)
        sub_text(el, NS + "formNumber", m.form_number)
        sub_bool(el, NS + "isVirtual", m.is_virtual)
        sub_text(el, NS + "lotNumber", m.lot_number)
        sub_text(el, NS + "serialNumber", m.serial_number)
        if m.status is not None:
            render_status(el, NS + "status", m.status, NS)
        sub_dec(el, NS + "timeZoneOffset", m.time_zone_offset)
        if m.configuration_events is not None:
            render_configuration_event(el, NS + "ConfigurationEvents", m.configuration_events, NS)
        if m.asset_model is not None:
            info = etree.SubElement(el, NS + "EndDeviceInfo")
            model = etree.SubElement(info, NS + "AssetModel")
            sub_text(model, NS + "modelNumber", m.asset_model.model_number)
            sub_text(model, NS + "modelVersion", m.asset_model.model_version)
            if m.asset_model.manufacturer:
                manufacturer = etree.SubElement(model, NS + "Manufacturer")
                render_names(manufacturer, m.asset_model.manufacturer, NS)
        for mm in m.meter_multipliers:
            mel = etree.SubElement(el, NS + "MeterMultipliers")
            sub_text(mel, NS + "kind", mm.kind)
            sub_dec(mel, NS + "value", mm.value)
        render_names(el, m.names, NS)
        if m.usage_point is not None:
            render_identified(el, NS + "UsagePoint", m.usage_point, NS)
    return root_el
