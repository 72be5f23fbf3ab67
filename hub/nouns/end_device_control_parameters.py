"""The parameters of one CIM EndDeviceControl, read and checked at the hub.

Where they are (docs/controls.md "Control parameters" says why):

* 3.15.0.18 load limit set: ``priceSignal`` {value, multiplier (none | k | M), unit W},
  a whole number of W above 0;
* 3.20.0.24 ToU calendar update: ``EndDeviceAction/command`` ``calendar=<name>`` (the
  definition file ``<name>.json`` of ``[hes] calendars_dir``), optional
  ``EndDeviceAction/startDateTime`` (activation; none: as soon as written);
* 3.11.0.24 firmware update: ``EndDeviceAction/command`` ``image=<file> version=<id>
  sha256=<hex>`` (a file of ``[hes] firmware_dir`` with that SHA-256; ``version`` is
  what the meter reports once activated), optional ``EndDeviceAction/startDateTime``
  (activation; none: right after verification).

Any other control type takes neither. Every problem is one ErrorDetail (2013) with
the xpath of the element at fault; a control with one is not scheduled.
"""

from __future__ import annotations

import re
from typing import Final

from cim_schemas.codes import event_type
from cim_schemas.errors import ErrorDetail, by_mrid
from cim_schemas.profiles.end_device_controls import EndDeviceControl
from hub.control_parameters import (
    CalendarUpdate,
    ControlLibrary,
    ControlParameterInvalid,
    ControlParameters,
    LoadLimit,
)

LOAD_LIMIT_SET: Final = str(event_type.LOAD_LIMIT_SET)  # 3.15.0.18
TOU_CALENDAR_UPDATE: Final = str(event_type.TARIFF_CHANGE)  # 3.20.0.24
FIRMWARE_UPDATE: Final = str(event_type.FIRMWARE_ACTIVATE)  # 3.11.0.24
#: CIM UnitMultiplier -> factor, for a threshold in W
MULTIPLIERS: Final = {None: 1, "": 1, "none": 1, "k": 1_000, "M": 1_000_000}
#: the keys ``EndDeviceAction/command`` may hold, per control type
COMMAND_KEYS: Final = {
    TOU_CALENDAR_UPDATE: ("calendar",),
    FIRMWARE_UPDATE: ("image", "version", "sha256"),
}
_SPLIT: Final = re.compile(r"[\s;]+")


class _Refused(Exception):
    """One problem: (xpath suffix, reason)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


def parse_command(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` pairs separated by blanks or ``;``; each of ``keys`` once, no other."""
    values: dict[str, str] = {}
    for token in filter(None, _SPLIT.split(text.strip())):
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise ValueError(f"{token!r} is not key=value")
        if key not in keys:
            raise ValueError(f"unknown key {key!r} (expected {', '.join(keys)})")
        if key in values:
            raise ValueError(f"{key} is given twice")
        values[key] = value
    missing = [k for k in keys if k not in values]
    if missing:
        raise ValueError(f"command lacks {', '.join(missing)} (expected {' '.join(keys)})")
    return values


def _load_limit(control: EndDeviceControl) -> LoadLimit:
    if control.end_device_action is not None:
        raise _Refused(
            "EndDeviceAction",
            "a load limit takes its threshold in priceSignal; EndDeviceAction is not used "
            "(a temporary limit is not supported)",
        )
    signal = control.price_signal
    if signal is None:
        raise _Refused(
            "priceSignal",
            "load limit set (3.15.0.18) needs its threshold: priceSignal with value, "
            "multiplier (none, k or M) and unit W",
        )
    if signal.unit != "W":
        raise _Refused(
            "priceSignal/unit", f"the threshold's unit must be W, not {signal.unit or 'none'!r}"
        )
    factor = MULTIPLIERS.get(signal.multiplier)
    if factor is None:
        raise _Refused(
            "priceSignal/multiplier",
            f"multiplier {signal.multiplier!r} is not none, k or M",
        )
    watts = signal.value * factor
    if watts <= 0:
        raise _Refused(
            "priceSignal/value",
            f"threshold {watts.normalize():f} W is not above 0 (no limit: control type 3.15.0.23)",
        )
    if watts != watts.to_integral_value():
        raise _Refused(
            "priceSignal/value", f"threshold {watts.normalize():f} W is not a whole number of W"
        )
    try:
        return LoadLimit(int(watts))
    except ControlParameterInvalid as exc:
        raise _Refused("priceSignal/value", str(exc)) from None


def _action_command(control: EndDeviceControl, code: str) -> dict[str, str]:
    keys = COMMAND_KEYS[code]
    example = " ".join(f"{k}=..." for k in keys)
    if control.price_signal is not None:
        raise _Refused("priceSignal", f"control type {code} takes no priceSignal")
    action = control.end_device_action
    if action is None or not (action.command or "").strip():
        raise _Refused(
            "EndDeviceAction/command" if action is not None else "EndDeviceAction",
            f"control type {code} needs EndDeviceAction/command {example!r}",
        )
    if action.duration is not None:
        raise _Refused(
            "EndDeviceAction/duration",
            f"control type {code} has no duration: it stays until replaced",
        )
    try:
        return parse_command(action.command or "", keys)
    except ValueError as exc:
        raise _Refused("EndDeviceAction/command", str(exc)) from None


def control_parameters(
    control: EndDeviceControl, code: str, base: str, library: ControlLibrary
) -> tuple[ControlParameters | None, list[ErrorDetail]]:
    """The parameters of ``control`` (type ``code``), or the error naming what is wrong."""
    try:
        return _parameters(control, code, library), []
    except _Refused as refused:
        return None, [
            ErrorDetail(
                "2013",
                refused.reason,
                xpath=f"{base}/{refused.where}",
                **by_mrid(code, "EndDeviceControlType"),
            )
        ]


def _parameters(
    control: EndDeviceControl, code: str, library: ControlLibrary
) -> ControlParameters | None:
    if code == LOAD_LIMIT_SET:
        return _load_limit(control)
    if code in COMMAND_KEYS:
        values = _action_command(control, code)
        at = control.end_device_action.start_date_time if control.end_device_action else None
        try:
            if code == TOU_CALENDAR_UPDATE:
                return CalendarUpdate(library.calendar(values["calendar"]), at)
            return library.firmware(values["image"], values["version"], values["sha256"], at)
        except ControlParameterInvalid as exc:
            raise _Refused("EndDeviceAction/command", str(exc)) from None
    if control.price_signal is not None:
        raise _Refused("priceSignal", f"control type {code} takes no parameters")
    if control.end_device_action is not None:
        raise _Refused("EndDeviceAction", f"control type {code} takes no parameters")
    return None
