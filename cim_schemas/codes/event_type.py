"""EndDeviceEventType and EndDeviceControlType codes of IEC 61968-9.

Both are ``type.domain.subDomain.eventOrAction`` (four dot-separated
integers). type: 3 electric meter, 4 gas meter, 26 communication device, 0 n/a.
domain: 26 power, 31 RCD switch, 12 security, 36 clock, 11 firmware, 15 load
control (and the others in :data:`DOMAINS`). eventOrAction: 18 connect, 23
disconnect, 42 connected, 68 disconnected, 85 failed, 216 restored, 212 removed,
257 tamper detected (and :data:`EVENTS_OR_ACTIONS`). The meter event table that
uses them is ``hes/meter_events.py``.

The constants marked *seen in real systems* come from deployed interfaces.
The ones marked *amihub* are composed from the enumerations above for
operations whose code amihub had to choose (clock, load limit, firmware,
tariff); a partner that uses other codes is served through
:func:`register_vendor_code` / :func:`from_vendor_code`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Final, Self

DEVICE_TYPES: Final[dict[int, str]] = {
    0: "any device",
    3: "electric meter",
    4: "gas meter",
    26: "communication device",
}
DOMAINS: Final[dict[int, str]] = {
    0: "n/a",
    2: "battery",
    11: "firmware",
    12: "security",
    15: "load control",
    17: "logs",
    18: "memory",
    20: "tariff",
    21: "metrology",
    26: "power",
    31: "RCD switch",
    36: "clock",
}
EVENTS_OR_ACTIONS: Final[dict[int, str]] = {
    0: "n/a",
    4: "activated",
    7: "attempted",
    16: "closed",
    18: "connect",
    23: "disconnect",
    24: "changed",
    25: "ready for activation",
    28: "cleared",
    35: "invalid",
    39: "opened",
    42: "connected",
    68: "disconnected",
    79: "error",
    85: "failed",
    139: "threshold exceeded",
    150: "replace / low",
    212: "removed",
    216: "restored",
    242: "detected",
    243: "no longer detected",
    257: "tamper detected",
}

_CODE: Final = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)")
_FIELDS: Final = ("type", "domain", "subDomain", "eventOrAction")


@dataclass(frozen=True, order=True)
class _EndDeviceCode:
    type: int
    domain: int
    sub_domain: int
    event_or_action: int

    @classmethod
    def parse(cls, code: str) -> Self:
        """Parse ``type.domain.subDomain.eventOrAction``; ValueError says what is wrong."""
        text = code.strip()
        m = _CODE.fullmatch(text)
        if m is None:
            parts = text.split(".")
            if len(parts) != 4:
                raise ValueError(
                    f"{cls.__name__} {code!r} has {len(parts)} fields, not 4 "
                    "(type.domain.subDomain.eventOrAction)"
                )
            for name, part in zip(_FIELDS, parts, strict=True):
                if not part.isdigit():
                    raise ValueError(
                        f"{cls.__name__} {code!r}: field {name} {part!r} is not a number"
                    )
            raise ValueError(f"{cls.__name__} {code!r} is not valid")  # pragma: no cover
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)))

    def __str__(self) -> str:
        return f"{self.type}.{self.domain}.{self.sub_domain}.{self.event_or_action}"

    def describe(self) -> str:
        """E.g. ``electric meter RCD switch: disconnect``."""
        device = DEVICE_TYPES.get(self.type, f"device type {self.type}")
        domain = DOMAINS.get(self.domain, f"domain {self.domain}")
        what = EVENTS_OR_ACTIONS.get(self.event_or_action, f"event/action {self.event_or_action}")
        sub = f" (subdomain {self.sub_domain})" if self.sub_domain else ""
        return f"{device} {domain}{sub}: {what}"


@dataclass(frozen=True, order=True)
class EndDeviceEventType(_EndDeviceCode):
    """What happened at a device (EndDeviceEvent.EndDeviceEventType@ref)."""


@dataclass(frozen=True, order=True)
class EndDeviceControlType(_EndDeviceCode):
    """What a device is asked to do (EndDeviceControl.EndDeviceControlType@ref)."""


def is_valid_code(code: str) -> bool:
    return _CODE.fullmatch(code.strip()) is not None


# -- controls -----------------------------------------------------------------------------
#: Seen in real systems.
REMOTE_DISCONNECT: Final = EndDeviceControlType(3, 31, 0, 23)
REMOTE_CONNECT: Final = EndDeviceControlType(3, 31, 0, 18)
#: amihub: electric meter, load control domain: connect = arm/apply the limit,
#: disconnect = remove it (the limit value travels in the control's priceSignal
#: or a Request Option).
LOAD_LIMIT_SET: Final = EndDeviceControlType(3, 15, 0, 18)
LOAD_LIMIT_CLEAR: Final = EndDeviceControlType(3, 15, 0, 23)
#: amihub: clock domain, "changed": set/synchronise the meter clock.
CLOCK_SET: Final = EndDeviceControlType(3, 36, 0, 24)
#: amihub: firmware domain, "changed": activate a transferred firmware image.
FIRMWARE_ACTIVATE: Final = EndDeviceControlType(3, 11, 0, 24)
#: amihub: tariff domain, "changed": switch the activity calendar / tariff.
TARIFF_CHANGE: Final = EndDeviceControlType(3, 20, 0, 24)

# -- events -------------------------------------------------------------------------------
#: Seen in real systems.
POWER_FAILURE: Final = EndDeviceEventType(3, 26, 0, 85)
POWER_RESTORED: Final = EndDeviceEventType(26, 26, 0, 216)
COVER_REMOVED: Final = EndDeviceEventType(3, 12, 29, 212)
SWITCH_DISCONNECTED: Final = EndDeviceEventType(0, 31, 26, 68)
SWITCH_CONNECTED: Final = EndDeviceEventType(0, 31, 26, 42)
#: Composed from the enumerations: meter RCD switch disconnected / connected /
#: operation failed, tamper detected, clock / firmware / tariff changed.
REMOTE_DISCONNECTED: Final = EndDeviceEventType(3, 31, 0, 68)
REMOTE_CONNECTED: Final = EndDeviceEventType(3, 31, 0, 42)
SWITCH_OPERATION_FAILED: Final = EndDeviceEventType(3, 31, 0, 85)
TAMPER_DETECTED: Final = EndDeviceEventType(3, 12, 0, 257)
CLOCK_CHANGED: Final = EndDeviceEventType(3, 36, 0, 24)
FIRMWARE_CHANGED: Final = EndDeviceEventType(3, 11, 0, 24)
FIRMWARE_FAILED: Final = EndDeviceEventType(3, 11, 0, 85)
TARIFF_CHANGED: Final = EndDeviceEventType(3, 20, 0, 24)
LOAD_LIMIT_DISCONNECTED: Final = EndDeviceEventType(3, 15, 0, 68)
#: amihub: load control / tariff domain "changed" and "failed": the outcome of a load
#: limit job (threshold written and read back) and of a ToU calendar update.
LOAD_LIMIT_CHANGED: Final = EndDeviceEventType(3, 15, 0, 24)
LOAD_LIMIT_FAILED: Final = EndDeviceEventType(3, 15, 0, 85)
TARIFF_FAILED: Final = EndDeviceEventType(3, 20, 0, 85)

#: Meter event log codes (hes/meter_events.py has the table from DLMS/IDIS event codes).
#: Seen in real systems as ``0.d.s.e`` (a public head-end's DLMS -> CIM table, the
#: "any device" type): amihub uses the same domain, subDomain and eventOrAction with
#: type 3, electric meter.
DST_CHANGED: Final = EndDeviceEventType(3, 36, 56, 24)
CLOCK_INVALID: Final = EndDeviceEventType(3, 36, 43, 35)
BATTERY_REPLACE: Final = EndDeviceEventType(3, 2, 0, 150)
BATTERY_LOW: Final = EndDeviceEventType(3, 2, 22, 150)
TOU_ACTIVATED: Final = EndDeviceEventType(3, 20, 121, 4)
REGISTER_CLEARED: Final = EndDeviceEventType(3, 17, 89, 28)
PROGRAM_MEMORY_ERROR: Final = EndDeviceEventType(3, 18, 83, 79)
RAM_ERROR: Final = EndDeviceEventType(3, 18, 85, 79)
NV_MEMORY_ERROR: Final = EndDeviceEventType(3, 18, 72, 79)
WATCHDOG_ERROR: Final = EndDeviceEventType(3, 11, 3, 79)
MEASUREMENT_ERROR: Final = EndDeviceEventType(3, 21, 67, 79)
FIRMWARE_READY: Final = EndDeviceEventType(3, 11, 31, 25)
FIRMWARE_ACTIVATED: Final = EndDeviceEventType(3, 11, 31, 4)
TERMINAL_COVER_CLOSED: Final = EndDeviceEventType(3, 12, 141, 16)
STRONG_DC_FIELD: Final = EndDeviceEventType(3, 12, 66, 242)
STRONG_DC_FIELD_GONE: Final = EndDeviceEventType(3, 12, 66, 243)
METER_COVER_OPENED: Final = EndDeviceEventType(3, 12, 29, 39)
METER_COVER_CLOSED: Final = EndDeviceEventType(3, 12, 29, 16)
FAILED_LOGIN: Final = EndDeviceEventType(3, 12, 24, 7)
LIMITER_EXCEEDED: Final = EndDeviceEventType(3, 15, 261, 139)
LIMITER_OK: Final = EndDeviceEventType(3, 15, 261, 216)
LIMITER_CHANGED: Final = EndDeviceEventType(3, 15, 261, 24)
#: amihub: a meter event code with no mapping is kept (not dropped) as "electric meter:
#: n/a", the meter's own code in the details (``meter_code``).
UNMAPPED_METER_EVENT: Final = EndDeviceEventType(3, 0, 0, 0)

#: amihub: security events the head-end itself raises (domain 12 security), stored
#: against the meter concerned. subDomain 24 (access) as in FAILED_LOGIN; 43 as in a
#: public head-end's 0.12.43.257 (tamper).
SECURITY_ASSOCIATION_REFUSED: Final = EndDeviceEventType(3, 12, 24, 85)
SECURITY_AUTHENTICATION_FAILED: Final = EndDeviceEventType(3, 12, 0, 85)
SECURITY_REPLAY: Final = EndDeviceEventType(3, 12, 43, 257)
SECURITY_UNKNOWN_SENDER: Final = EndDeviceEventType(3, 12, 24, 79)


# -- vendor codes -------------------------------------------------------------------------

_vendor_lock = threading.Lock()
_vendor_events: dict[tuple[str, str], EndDeviceEventType] = {}


def register_vendor_code(vendor: str, vendor_code: str, event_type: EndDeviceEventType) -> None:
    """Map a vendor's own event code (e.g. a DLMS event-log number) to a 61968-9 code.

    A later registration for the same (vendor, code) replaces the earlier one.
    """
    with _vendor_lock:
        _vendor_events[(vendor.lower(), vendor_code)] = event_type


def from_vendor_code(vendor: str, vendor_code: str) -> EndDeviceEventType | None:
    """The 61968-9 code registered for a vendor code; a code already in
    ``type.domain.subDomain.eventOrAction`` form passes through; else None."""
    found = _vendor_events.get((vendor.lower(), vendor_code))
    if found is not None:
        return found
    if is_valid_code(vendor_code):
        return EndDeviceEventType.parse(vendor_code)
    return None


def clear_vendor_codes() -> None:
    """Forget every registration (tests, reconfiguration)."""
    with _vendor_lock:
        _vendor_events.clear()
