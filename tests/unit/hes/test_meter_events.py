"""The meter event table and the security event classification (pure, no IO)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cim_schemas.codes import event_type as et
from hes.client.session import MeterEvent
from hes.meter_events import (
    AMIHUB_METERS,
    METER_EVENTS,
    SecurityKind,
    end_device_events,
    failure_security_events,
    meter_event_type,
    security_event,
    security_kind,
    unknown_sender_mrid,
)
from hes.simulator.meter import EventCode

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_vendor_codes() -> Iterator[None]:
    et.clear_vendor_codes()
    yield
    et.clear_vendor_codes()


def test_every_code_the_simulated_meters_log_is_mapped() -> None:
    for code in EventCode:
        cim = meter_event_type(code)
        assert cim is not None, code
        assert cim != et.UNMAPPED_METER_EVENT
        assert cim.type in (3, 26), code  # electric meter (power restored: seen as 26.26.0.216)


@pytest.mark.parametrize(
    ("code", "cim"),
    [
        (EventCode.POWER_DOWN, "3.26.0.85"),
        (EventCode.POWER_UP, "26.26.0.216"),
        (EventCode.CLOCK_ADJUSTED_NEW, "3.36.0.24"),
        (EventCode.TERMINAL_COVER_OPENED, "3.12.29.212"),
        (EventCode.STRONG_DC_FIELD, "3.12.0.257"),
        (EventCode.FIRMWARE_READY_FOR_ACTIVATION, "3.11.31.25"),
        (EventCode.FIRMWARE_ACTIVATED, "3.11.31.4"),
        (EventCode.PASSIVE_CALENDAR_ACTIVATED, "3.20.121.4"),
        (EventCode.DISCONNECTED_REMOTE, "3.31.0.68"),
        (EventCode.CONNECTED_REMOTE, "3.31.0.42"),
        (EventCode.FIRMWARE_VERIFICATION_FAILED, "3.11.0.85"),
        (EventCode.LIMITER_THRESHOLD_EXCEEDED, "3.15.261.139"),
        (EventCode.LIMITER_THRESHOLD_CHANGED, "3.15.261.24"),
    ],
)
def test_simulator_codes(code: int, cim: str) -> None:
    assert str(meter_event_type(code)) == cim


def test_table_codes_are_valid_and_described() -> None:
    for code, entry in METER_EVENTS.items():
        parsed = et.EndDeviceEventType.parse(str(entry.cim))
        assert parsed == entry.cim
        assert entry.cim.domain in et.DOMAINS, code
        assert entry.cim.event_or_action in et.EVENTS_OR_ACTIONS, code
        assert entry.name
    # the codes where our meters' numbering differs from the public list are marked
    assert {c for c, e in METER_EVENTS.items() if e.numbering == AMIHUB_METERS} == {
        20,
        47,
        59,
        60,
        64,
        71,
        73,
    }


def test_unknown_code_is_kept_with_its_raw_code() -> None:
    [event] = end_device_events("MTR-1", [MeterEvent(AT, 231)])
    assert event.event_type == str(et.UNMAPPED_METER_EVENT) == "3.0.0.0"
    assert event.details == {"meter_code": "231", "source": "event log"}
    assert event.reason == "unmapped meter event 231"
    assert event.created_at == AT


def test_event_mrids_are_stable_and_distinct() -> None:
    events = [MeterEvent(AT, 1), MeterEvent(AT, 2)]
    first = end_device_events("MTR-1", events)
    again = end_device_events("MTR-1", events, source="push")
    assert [e.mrid for e in first] == [e.mrid for e in again]  # pushed then read: one event
    assert len({e.mrid for e in first}) == 2
    other = end_device_events("MTR-2", events)
    assert not {e.mrid for e in first} & {e.mrid for e in other}
    assert first[0].details == {"meter_code": "1", "source": "event log"}
    assert first[0].reason == "power down"


def test_a_vendor_registration_overrides_the_table() -> None:
    et.register_vendor_code("dlms", "47", et.EndDeviceEventType(3, 12, 66, 242))
    et.register_vendor_code("dlms", "231", et.EndDeviceEventType(3, 12, 0, 257))
    assert str(meter_event_type(47)) == "3.12.66.242"
    [event] = end_device_events("MTR-1", [MeterEvent(AT, 231)])
    assert event.event_type == "3.12.0.257"
    assert event.details["meter_code"] == "231"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("AssociationRefused: association refused: AUTHENTICATION_FAILURE", "association_refused"),
        ("SecurityViolation: authentication tag mismatch", "authentication_failed"),
        ("SecurityViolation: meter refused our frame: deciphering failed", "authentication_failed"),
        (
            "SecurityViolation: meter refused our frame: invocation counter not accepted",
            "replay",
        ),
        ("SecurityViolation: invocation counter 5 of 4d4d does not go forward", "replay"),
        ("SecurityViolation: AARE from an unexpected system title", "security_violation"),
        ("MeterUnreachable: no answer", None),
        ("MeterProtocolError: meter exception response d80101", None),
        (None, None),
        ("", None),
    ],
)
def test_security_kind_of_a_failure(error: str | None, kind: str | None) -> None:
    found = security_kind(error)
    assert (found.value if found else None) == kind


def test_security_event_codes_and_details() -> None:
    e = security_event(
        "MTR-1", SecurityKind.REPLAY, AT, reason="replayed", source="push", system_title=b"MMM\x01"
    )
    assert e.event_type == "3.12.43.257"
    assert e.severity == "alarm"
    assert e.details == {
        "kind": "replay",
        "source": "push",
        "detail": "replayed",
        "system_title": "4D4D4D01",
    }
    codes = {
        k: str(security_event("M", k, AT, reason="r", source="read").event_type)
        for k in SecurityKind
    }
    assert codes[SecurityKind.ASSOCIATION_REFUSED] == "3.12.24.85"
    assert codes[SecurityKind.AUTHENTICATION_FAILED] == "3.12.0.85"
    assert codes[SecurityKind.UNKNOWN_SENDER] == "3.12.24.79"
    assert all(et.EndDeviceEventType.parse(c).domain == 12 for c in codes.values())
    assert unknown_sender_mrid(bytes.fromhex("4d4d4d0000bc614e")) == (
        "UNKNOWN-SYSTEM-TITLE-4D4D4D0000BC614E"
    )


def test_failure_security_events_only_for_security_failures() -> None:
    events = failure_security_events(
        [
            ("MTR-1", "AssociationRefused: refused", AT),
            ("MTR-2", "MeterUnreachable: no answer", AT),
            ("MTR-3", "", AT),
        ],
        "control",
    )
    assert [(e.device_mrid, e.event_type, e.details["source"]) for e in events] == [
        ("MTR-1", "3.12.24.85", "control")
    ]
