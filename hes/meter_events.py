"""Meter events and head-end security events as CIM EndDeviceEvents: the one table.

Pure conversions, no IO:

* :data:`METER_EVENTS`: the DLMS event codes a meter logs (standard event log,
  fraud detection, disconnector control, firmware) -> CIM EndDeviceEventType, with
  where the code comes from (docs/hes.md "Meter events" has the reasons);
* :func:`meter_event_type`: one code, looked up in the vendor registrations of
  ``cim_schemas.codes.event_type`` first (vendor ``dlms``: a fleet whose meters
  number their events otherwise registers its own codes), then in the table;
* :func:`end_device_events`: a meter's events -> EndDeviceEvents. An unknown code is
  kept as :data:`~cim_schemas.codes.event_type.UNMAPPED_METER_EVENT` with the meter's
  code in the details, never dropped. Event mRIDs are stable (uuid5 of meter, code
  and instant), so a re-read, or a pushed event read again from the log, is the same
  event and is stored and published once;
* :class:`SecurityKind` / :func:`security_event`: what the head-end raises when a
  push or an association fails its security checks (domain 12, security).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from cim_schemas.codes import event_type as et
from cim_schemas.codes.event_type import EndDeviceEventType
from hes.client.session import MeterEvent
from mdm.model import EndDeviceEvent

#: namespace of the mRIDs of meter and security events (stable across re-reads)
_IDS: Final = uuid.UUID("b3c0f3e2-5d0a-4b8e-8f1e-6a2d9c4e7b15")
#: vendor name under which cim_schemas' vendor registrations override the table
VENDOR: Final = "dlms"
#: who names the code: the public DLMS/IDIS-derived standard event list, or our meters
STANDARD: Final = "standard event list"
AMIHUB_METERS: Final = "amihub meters"


@dataclass(frozen=True)
class MeterEventCode:
    name: str
    cim: EndDeviceEventType
    numbering: str = STANDARD


#: DLMS event code -> CIM. See docs/hes.md "Meter events" for the sources and choices.
METER_EVENTS: Final[dict[int, MeterEventCode]] = {
    1: MeterEventCode("power down", et.POWER_FAILURE),
    2: MeterEventCode("power up", et.POWER_RESTORED),
    3: MeterEventCode("daylight saving time enabled or disabled", et.DST_CHANGED),
    4: MeterEventCode("clock adjusted (old time)", et.CLOCK_CHANGED),
    5: MeterEventCode("clock adjusted (new time)", et.CLOCK_CHANGED),
    6: MeterEventCode("clock invalid", et.CLOCK_INVALID),
    7: MeterEventCode("replace battery", et.BATTERY_REPLACE),
    8: MeterEventCode("battery voltage low", et.BATTERY_LOW),
    9: MeterEventCode("TOU activated", et.TOU_ACTIVATED),
    10: MeterEventCode("error register cleared", et.REGISTER_CLEARED),
    11: MeterEventCode("alarm register cleared", et.REGISTER_CLEARED),
    12: MeterEventCode("program memory error", et.PROGRAM_MEMORY_ERROR),
    13: MeterEventCode("RAM error", et.RAM_ERROR),
    14: MeterEventCode("NV memory error", et.NV_MEMORY_ERROR),
    15: MeterEventCode("watchdog error", et.WATCHDOG_ERROR),
    16: MeterEventCode("measurement system error", et.MEASUREMENT_ERROR),
    17: MeterEventCode("firmware ready for activation", et.FIRMWARE_READY),
    18: MeterEventCode("firmware activated", et.FIRMWARE_ACTIVATED),
    20: MeterEventCode("passive calendar activated", et.TOU_ACTIVATED, AMIHUB_METERS),
    40: MeterEventCode("terminal cover opened", et.COVER_REMOVED),
    41: MeterEventCode("terminal cover closed", et.TERMINAL_COVER_CLOSED),
    42: MeterEventCode("strong DC field detected", et.STRONG_DC_FIELD),
    43: MeterEventCode("no strong DC field anymore", et.STRONG_DC_FIELD_GONE),
    44: MeterEventCode("meter cover opened", et.METER_COVER_OPENED),
    45: MeterEventCode("meter cover closed", et.METER_COVER_CLOSED),
    46: MeterEventCode("n times failed authentication", et.FAILED_LOGIN),
    47: MeterEventCode("strong DC field (tamper)", et.TAMPER_DETECTED, AMIHUB_METERS),
    59: MeterEventCode("remote disconnection", et.REMOTE_DISCONNECTED, AMIHUB_METERS),
    60: MeterEventCode("remote connection", et.REMOTE_CONNECTED, AMIHUB_METERS),
    64: MeterEventCode("firmware verification failed", et.FIRMWARE_FAILED, AMIHUB_METERS),
    71: MeterEventCode(
        "limiter threshold exceeded (relay opened)", et.LIMITER_EXCEEDED, AMIHUB_METERS
    ),
    73: MeterEventCode("limiter threshold changed", et.LIMITER_CHANGED, AMIHUB_METERS),
}


def meter_event_type(code: int) -> EndDeviceEventType | None:
    """The CIM type of a meter's event code (vendor registration, then the table)."""
    registered = et.from_vendor_code(VENDOR, str(code))
    if registered is not None:
        return registered
    known = METER_EVENTS.get(code)
    return known.cim if known is not None else None


def _event_id(*parts: str) -> str:
    return str(uuid.uuid5(_IDS, "\n".join(parts)))


def end_device_events(
    device_mrid: str, events: Iterable[MeterEvent], *, source: str = "event log"
) -> list[EndDeviceEvent]:
    """EndDeviceEvents for a meter's events; unknown codes kept as UNMAPPED_METER_EVENT."""
    out = []
    for e in events:
        cim = meter_event_type(e.code)
        known = METER_EVENTS.get(e.code)
        if cim is None:
            cim, reason = et.UNMAPPED_METER_EVENT, f"unmapped meter event {e.code}"
        else:
            reason = known.name if known is not None else f"meter event {e.code}"
        out.append(
            EndDeviceEvent(
                device_mrid=device_mrid,
                event_type=str(cim),
                created_at=e.ts,
                reason=reason,
                mrid=_event_id(device_mrid, str(e.code), e.ts.isoformat()),
                details={"meter_code": str(e.code), "source": source},
            )
        )
    return out


# -- security events -------------------------------------------------------------------------


class SecurityKind(StrEnum):
    ASSOCIATION_REFUSED = "association_refused"  # wrong password or keys: AARE refused
    AUTHENTICATION_FAILED = "authentication_failed"  # bad GCM tag, frame not deciphered
    REPLAY = "replay"  # replayed, rewound or stale invocation counter
    UNKNOWN_SENDER = "unknown_system_title"  # a ciphered push from a system title we do not know
    PLAIN_FOR_SECURED = "plain_for_secured"  # a plain push naming a meter that has keys
    VIOLATION = "security_violation"  # any other refused frame (unprotected, wrong suite...)


SECURITY_TYPES: Final[dict[SecurityKind, EndDeviceEventType]] = {
    SecurityKind.ASSOCIATION_REFUSED: et.SECURITY_ASSOCIATION_REFUSED,
    SecurityKind.AUTHENTICATION_FAILED: et.SECURITY_AUTHENTICATION_FAILED,
    SecurityKind.REPLAY: et.SECURITY_REPLAY,
    SecurityKind.UNKNOWN_SENDER: et.SECURITY_UNKNOWN_SENDER,
    SecurityKind.PLAIN_FOR_SECURED: et.SECURITY_AUTHENTICATION_FAILED,
    SecurityKind.VIOLATION: et.SECURITY_AUTHENTICATION_FAILED,
}

#: bytes of a refused frame kept in its security event (pushes are a few hundred bytes)
MAX_APDU_KEPT: Final = 2048
#: the pseudo-asset of a push from a system title no meter has (docs/hes.md)
UNKNOWN_SENDER_PREFIX: Final = "UNKNOWN-SYSTEM-TITLE-"


def unknown_sender_mrid(system_title: bytes | None) -> str:
    return UNKNOWN_SENDER_PREFIX + (system_title.hex().upper() if system_title else "NONE")


def security_kind(error: str | None) -> SecurityKind | None:
    """Classify a failure as reported by the engine and control jobs
    (``"<exception class>: <message>"``); None when it is no security failure."""
    if not error:
        return None
    name, _, message = error.partition(":")
    text = message.lower()
    if name == "AssociationRefused":
        return SecurityKind.ASSOCIATION_REFUSED
    if name not in ("SecurityViolation", "PushRejected"):
        return None
    if "unknown system title" in text:
        return SecurityKind.UNKNOWN_SENDER
    if "plain push for secured" in text:
        return SecurityKind.PLAIN_FOR_SECURED
    if "invocation counter" in text or "replayed" in text or "rewound" in text:
        return SecurityKind.REPLAY
    if "tag" in text or "decipher" in text:
        return SecurityKind.AUTHENTICATION_FAILED
    return SecurityKind.VIOLATION


def security_event(
    device_mrid: str,
    kind: SecurityKind,
    at: datetime,
    *,
    reason: str,
    source: str,
    system_title: bytes | None = None,
    apdu: bytes | None = None,
) -> EndDeviceEvent:
    """One security EndDeviceEvent (``source``: push, read or control). A refused frame
    (``apdu``) is kept in the details in hex, up to :data:`MAX_APDU_KEPT` bytes."""
    details = {"kind": kind.value, "source": source, "detail": reason}
    if system_title is not None:
        details["system_title"] = system_title.hex().upper()
    if apdu is not None:
        details["apdu"] = apdu[:MAX_APDU_KEPT].hex()
        if len(apdu) > MAX_APDU_KEPT:
            details["apdu_bytes"] = str(len(apdu))
    return EndDeviceEvent(
        device_mrid=device_mrid,
        event_type=str(SECURITY_TYPES[kind]),
        created_at=at,
        reason=f"security: {kind.value.replace('_', ' ')} ({source})",
        severity="alarm",
        mrid=_event_id(device_mrid, kind.value, source, at.isoformat(), reason),
        details=details,
    )


def failure_security_events(
    failures: Iterable[tuple[str, str | None, datetime]], source: str
) -> list[EndDeviceEvent]:
    """Security events for (meter, error, instant) failures that are security failures
    (a control job's outcomes, an engine's results); the others give none."""
    out = []
    for device, error, at in failures:
        kind = security_kind(error)
        if kind is not None and error is not None:
            out.append(security_event(device, kind, at, reason=error, source=source))
    return out
