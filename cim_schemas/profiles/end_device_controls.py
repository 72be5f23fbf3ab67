"""The EndDeviceControls profile (``http://iec.ch/TC57/2011/EndDeviceControls#``).

EndDeviceControl*{mRID?, drProgramLevel?, drProgramMandatory?, issuerID?,
issuerTrackingID?, priceSignal?, reason?, EndDeviceAction?, EndDeviceControlType@ref,
EndDeviceGroups*, EndDevices*, primaryDeviceTiming?, secondaryDeviceTiming?,
UsagePointGroups*, UsagePoints*}. The control type code (e.g. 3.31.0.23) says
what to do; primaryDeviceTiming.interval.start schedules it. EndDeviceAction
{command?, duration?, durationIndefinite?, startDateTime?} is the CIM's generic
action (the PAN subclasses of the 2011 profiles are not modelled); with priceSignal
it carries a control's parameters (docs/controls.md "Control parameters").
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
    ref,
    render_identified,
    render_interval,
    root,
    sub_bool,
    sub_dec,
    sub_dt,
    sub_int,
    sub_ref,
    sub_text,
    text,
)

NOUN: Final = "EndDeviceControls"
NAMESPACE: Final = profile_ns(NOUN)
NS: Final = "{" + NAMESPACE + "}"

RANDOMISATION_KINDS: Final = ("start", "end", "startAndEnd", "default", "none")


@dataclass(frozen=True)
class FloatQuantity:
    value: Decimal
    multiplier: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class EndDeviceTiming:
    duration: Decimal | None = None  # seconds
    duration_indefinite: bool | None = None
    randomisation: str | None = None  # one of RANDOMISATION_KINDS
    interval: DateTimeInterval | None = None


@dataclass(frozen=True)
class EndDeviceAction:
    """The action a control issues: command text, how long, from when."""

    command: str | None = None
    duration: Decimal | None = None  # minutes
    duration_indefinite: bool | None = None
    start_date_time: datetime | None = None


@dataclass(frozen=True)
class EndDeviceControl:
    end_device_control_type: str  # type.domain.subDomain.eventOrAction
    mrid: str | None = None
    dr_program_level: int | None = None
    dr_program_mandatory: bool | None = None
    issuer_id: str | None = None
    issuer_tracking_id: str | None = None
    price_signal: FloatQuantity | None = None
    reason: str | None = None
    end_device_action: EndDeviceAction | None = None
    end_device_groups: tuple[IdentifiedObject, ...] = ()
    end_devices: tuple[IdentifiedObject, ...] = ()
    primary_device_timing: EndDeviceTiming | None = None
    secondary_device_timing: EndDeviceTiming | None = None
    usage_point_groups: tuple[IdentifiedObject, ...] = ()
    usage_points: tuple[IdentifiedObject, ...] = ()

    @property
    def scheduled_at(self) -> Any:
        """primaryDeviceTiming.interval.start, or None (= now)."""
        timing = self.primary_device_timing
        return timing.interval.start if timing and timing.interval else None


@dataclass(frozen=True)
class EndDeviceControls:
    end_device_controls: tuple[EndDeviceControl, ...] = ()


def _parse_timing(el: etree._Element) -> EndDeviceTiming:
    values: dict[str, Any] = {}
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "duration":
            values["duration"] = dec(child, "2013")
        elif local == "durationIndefinite":
            values["duration_indefinite"] = boolean(child)
        elif local == "randomisation":
            values["randomisation"] = text(child)
        elif local == "interval":
            values["interval"] = parse_interval(child, NS)
    return EndDeviceTiming(**values)


def _parse_action(el: etree._Element) -> EndDeviceAction:
    values: dict[str, Any] = {}
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "command":
            values["command"] = text(child)
        elif local == "duration":
            values["duration"] = dec(child, "2013")
        elif local == "durationIndefinite":
            values["duration_indefinite"] = boolean(child)
        elif local == "startDateTime":
            values["start_date_time"] = dt(child)
    return EndDeviceAction(**values)


def _parse_quantity(el: etree._Element) -> FloatQuantity:
    value = Decimal(0)
    multiplier = unit = None
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local == "value":
            value = dec(child, "2013")
        elif local == "multiplier":
            multiplier = text(child)
        elif local == "unit":
            unit = text(child)
    return FloatQuantity(value, multiplier, unit)


_LISTS: Final = {
    "EndDeviceGroups": "end_device_groups",
    "EndDevices": "end_devices",
    "UsagePointGroups": "usage_point_groups",
    "UsagePoints": "usage_points",
}
_TEXTS: Final = {
    "mRID": "mrid",
    "issuerID": "issuer_id",
    "issuerTrackingID": "issuer_tracking_id",
    "reason": "reason",
}


def parse_end_device_control(el: etree._Element) -> EndDeviceControl:
    values: dict[str, Any] = {}
    lists: dict[str, list[IdentifiedObject]] = {v: [] for v in _LISTS.values()}
    control_type = ""
    for tag, child in children(el):
        local = tag[len(NS) :]
        if local in _LISTS:
            lists[_LISTS[local]].append(parse_identified(child, NS))
        elif local in _TEXTS:
            values[_TEXTS[local]] = text(child)
        elif local == "EndDeviceControlType":
            control_type = ref(child)
        elif local == "drProgramLevel":
            values["dr_program_level"] = integer(child)
        elif local == "drProgramMandatory":
            values["dr_program_mandatory"] = boolean(child)
        elif local == "priceSignal":
            values["price_signal"] = _parse_quantity(child)
        elif local == "EndDeviceAction":
            values["end_device_action"] = _parse_action(child)
        elif local == "primaryDeviceTiming":
            values["primary_device_timing"] = _parse_timing(child)
        elif local == "secondaryDeviceTiming":
            values["secondary_device_timing"] = _parse_timing(child)
    for key, items in lists.items():
        values[key] = tuple(items)
    return EndDeviceControl(control_type, **values)


def parse_end_device_controls(element: etree._Element) -> EndDeviceControls:
    """Parse a ``{...EndDeviceControls#}EndDeviceControls`` element."""
    expect_root(element, NS, "EndDeviceControls")
    return EndDeviceControls(
        tuple(
            parse_end_device_control(child)
            for tag, child in children(element)
            if tag == NS + "EndDeviceControl"
        )
    )


def _render_timing(parent: etree._Element, tag: str, t: EndDeviceTiming) -> None:
    el = etree.SubElement(parent, tag)
    sub_dec(el, NS + "duration", t.duration)
    sub_bool(el, NS + "durationIndefinite", t.duration_indefinite)
    sub_text(el, NS + "randomisation", t.randomisation)
    if t.interval is not None:
        render_interval(el, NS + "interval", t.interval, NS)


def render_end_device_controls(obj: EndDeviceControls) -> etree._Element:
    """The ``EndDeviceControls`` profile element."""
    root_el = root("EndDeviceControls", NS)
    for c in obj.end_device_controls:
        el = etree.SubElement(root_el, NS + "EndDeviceControl")
        sub_text(el, NS + "mRID", c.mrid)
        sub_int(el, NS + "drProgramLevel", c.dr_program_level)
        sub_bool(el, NS + "drProgramMandatory", c.dr_program_mandatory)
        sub_text(el, NS + "issuerID", c.issuer_id)
        sub_text(el, NS + "issuerTrackingID", c.issuer_tracking_id)
        if c.price_signal is not None:
            ps = etree.SubElement(el, NS + "priceSignal")
            sub_text(ps, NS + "multiplier", c.price_signal.multiplier)
            sub_text(ps, NS + "unit", c.price_signal.unit)
            sub_dec(ps, NS + "value", c.price_signal.value)
        sub_text(el, NS + "reason", c.reason)
        if c.end_device_action is not None:
            action = etree.SubElement(el, NS + "EndDeviceAction")
            sub_text(action, NS + "command", c.end_device_action.command)
            sub_dec(action, NS + "duration", c.end_device_action.duration)
            sub_bool(action, NS + "durationIndefinite", c.end_device_action.duration_indefinite)
            sub_dt(action, NS + "startDateTime", c.end_device_action.start_date_time)
        sub_ref(el, NS + "EndDeviceControlType", c.end_device_control_type)
        for item in c.end_device_groups:
            render_identified(el, NS + "EndDeviceGroups", item, NS)
        for item in c.end_devices:
            render_identified(el, NS + "EndDevices", item, NS)
        if c.primary_device_timing is not None:
            _render_timing(el, NS + "primaryDeviceTiming", c.primary_device_timing)
        if c.secondary_device_timing is not None:
            _render_timing(el, NS + "secondaryDeviceTiming", c.secondary_device_timing)
        for item in c.usage_point_groups:
            render_identified(el, NS + "UsagePointGroups", item, NS)
        for item in c.usage_points:
            render_identified(el, NS + "UsagePoints", item, NS)
    return root_el
