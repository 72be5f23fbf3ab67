"""Control parameters at the hub: where the CIM request carries them, how they are
checked (threshold, calendar file, firmware image and its SHA-256), and their JSON form
in ControlRequest.to_json / from_json (engine jobs, job records)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cim_schemas.profiles.end_device_controls import (
    EndDeviceAction,
    EndDeviceControl,
    FloatQuantity,
)
from hub.control_parameters import (
    CalendarUpdate,
    ControlLibrary,
    ControlParameterInvalid,
    FirmwareReference,
    LoadLimit,
    calendar_from_dict,
    parameters_from_dict,
    parameters_to_dict,
)
from hub.headend import ControlRequest
from hub.nouns.end_device_control_parameters import control_parameters, parse_command

BASE = "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl[1]"
IMAGE = b"AMHFW1 image bytes " * 40
SHA = hashlib.sha256(IMAGE).hexdigest()


def calendar_json() -> dict[str, Any]:
    return {
        "seasons": [{"name": "ALL", "start": "2027-01-01T00:00:00+00:00", "week": "WK"}],
        "weeks": [{"name": "WK", "days": [1, 1, 1, 1, 1, 2, 2]}],
        "days": [
            {
                "id": 1,
                "schedules": [{"start": "00:00", "tariff": 2}, {"start": "07:00", "tariff": 1}],
            },
            {"id": 2, "schedules": [{"start": "00:00", "tariff": 2}]},
        ],
    }


@pytest.fixture
def library(tmp_path: Path) -> ControlLibrary:
    (tmp_path / "calendars").mkdir()
    (tmp_path / "firmware").mkdir()
    (tmp_path / "calendars" / "TOU-2027.json").write_text(json.dumps(calendar_json()))
    (tmp_path / "calendars" / "BROKEN.json").write_text("{not json")
    bad = calendar_json()
    bad["weeks"][0]["days"][6] = 9
    (tmp_path / "calendars" / "DANGLING.json").write_text(json.dumps(bad))
    (tmp_path / "firmware" / "AMH-3.1.0.img").write_bytes(IMAGE)
    return ControlLibrary(tmp_path / "calendars", tmp_path / "firmware")


def check(
    control: EndDeviceControl, library: ControlLibrary
) -> tuple[object, list[tuple[str, str | None, str]]]:
    params, errors = control_parameters(control, control.end_device_control_type, BASE, library)
    return params, [(e.code, e.xpath, e.reason) for e in errors]


def load_limit(
    value: str | None, multiplier: str | None = "k", unit: str | None = "W"
) -> EndDeviceControl:
    signal = None if value is None else FloatQuantity(Decimal(value), multiplier, unit)
    return EndDeviceControl("3.15.0.18", price_signal=signal)


def action(code: str, command: str | None, at: datetime | None = None) -> EndDeviceControl:
    return EndDeviceControl(code, end_device_action=EndDeviceAction(command, start_date_time=at))


# -- the command text ---------------------------------------------------------------------------


def test_command_is_key_value_pairs() -> None:
    keys = ("image", "version", "sha256")
    assert parse_command(f"image=a.img;version=V1 sha256={SHA}", keys) == {
        "image": "a.img",
        "version": "V1",
        "sha256": SHA,
    }
    for text, why in (
        ("image=a.img version=V1", "lacks sha256"),
        (f"image=a.img version=V1 sha256={SHA} colour=red", "unknown key 'colour'"),
        (f"image=a.img image=b.img version=V1 sha256={SHA}", "image is given twice"),
        (f"a.img version=V1 sha256={SHA}", "'a.img' is not key=value"),
        (f"image= version=V1 sha256={SHA}", "is not key=value"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_command(text, keys)


# -- load limit -----------------------------------------------------------------------------------


def test_load_limit_threshold_from_price_signal(library: ControlLibrary) -> None:
    assert check(load_limit("4.5"), library) == (LoadLimit(4_500), [])
    assert check(load_limit("4500", None), library) == (LoadLimit(4_500), [])
    assert check(load_limit("4500", "none"), library) == (LoadLimit(4_500), [])
    assert check(load_limit("0.012", "M"), library) == (LoadLimit(12_000), [])


@pytest.mark.parametrize(
    ("control", "where", "why"),
    [
        (load_limit(None), "priceSignal", "needs its threshold"),
        (load_limit("-2"), "priceSignal/value", "threshold -2000 W is not above 0"),
        (load_limit("0"), "priceSignal/value", "not above 0 (no limit: control type 3.15.0.23)"),
        (load_limit("4.5005"), "priceSignal/value", "4500.5 W is not a whole number"),
        (load_limit("5000000", "k"), "priceSignal/value", "is not in 1..4294967295 W"),
        (load_limit("4.5", "k", "Wh"), "priceSignal/unit", "unit must be W, not 'Wh'"),
        (load_limit("4.5", "k", None), "priceSignal/unit", "unit must be W, not 'none'"),
        (load_limit("4.5", "G"), "priceSignal/multiplier", "multiplier 'G' is not none, k or M"),
        (
            EndDeviceControl(
                "3.15.0.18",
                price_signal=FloatQuantity(Decimal(4), "k", "W"),
                end_device_action=EndDeviceAction(duration=Decimal(30)),
            ),
            "EndDeviceAction",
            "a temporary limit is not supported",
        ),
    ],
)
def test_bad_load_limit(
    library: ControlLibrary, control: EndDeviceControl, where: str, why: str
) -> None:
    params, errors = check(control, library)
    assert params is None
    [(code, xpath, reason)] = errors
    assert (code, xpath) == ("2013", f"{BASE}/{where}")
    assert why in reason


# -- ToU calendar ---------------------------------------------------------------------------------


def test_calendar_named_by_the_command(library: ControlLibrary) -> None:
    at = datetime(2027, 1, 1, tzinfo=UTC)
    params, errors = check(action("3.20.0.24", "calendar=TOU-2027", at), library)
    assert errors == []
    assert isinstance(params, CalendarUpdate)
    assert params.activate_at == at
    cal = params.calendar
    assert cal.name == "TOU-2027"
    assert [w.days for w in cal.weeks] == [(1, 1, 1, 1, 1, 2, 2)]
    assert [(s.start, s.tariff) for s in cal.days[0].schedules] == [
        (clock_time(0, 0), 2),
        (clock_time(7, 0), 1),
    ]


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("calendar=NOPE", "no calendar 'NOPE' (NOPE.json is not in"),
        ("calendar=BROKEN", "BROKEN.json: not JSON"),
        ("calendar=DANGLING", "weeks.0.days.6: no day profile with id 9"),
        ("calendar=../etc/passwd", "is not a plain name"),
        ("TOU-2027", "'TOU-2027' is not key=value"),
        ("image=TOU-2027", "unknown key 'image'"),
    ],
)
def test_bad_calendar(library: ControlLibrary, command: str, why: str) -> None:
    params, errors = check(action("3.20.0.24", command), library)
    assert params is None
    [(code, xpath, reason)] = errors
    assert (code, xpath) == ("2013", f"{BASE}/EndDeviceAction/command")
    assert why in reason


def test_calendar_without_a_command_or_a_folder(library: ControlLibrary) -> None:
    _, errors = check(EndDeviceControl("3.20.0.24"), library)
    assert [(c, x) for c, x, _ in errors] == [("2013", f"{BASE}/EndDeviceAction")]
    assert "needs EndDeviceAction/command 'calendar=...'" in errors[0][2]
    _, errors = check(action("3.20.0.24", "calendar=TOU-2027"), ControlLibrary())
    assert "no calendar folder is configured ([hes] calendars_dir)" in errors[0][2]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda c: c["weeks"][0]["days"].pop(), "weeks.0.days: List should have at least 7"),
        (lambda c: c["seasons"][0].update(week="NONE"), "seasons.0.week: no week profile"),
        (lambda c: c["seasons"][0].update(start="2027-01-01T00:00:00"), "has no zone"),
        (lambda c: c["days"][0]["schedules"].reverse(), "days.0.schedules: start times must"),
        (lambda c: c["days"][1].update(id=1), "a day profile id appears twice"),
        (lambda c: c["days"][0]["schedules"][0].update(tariff=70_000), "less than or equal"),
        (lambda c: c.update(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda c: c.pop("days"), "days: Field required"),
    ],
)
def test_calendar_definition_is_checked(change: Any, why: str) -> None:
    data = calendar_json()
    change(data)
    with pytest.raises(ControlParameterInvalid, match=why):
        calendar_from_dict("X", data)


# -- firmware -------------------------------------------------------------------------------------


def test_firmware_reference_checked_against_the_folder(library: ControlLibrary) -> None:
    at = datetime(2027, 2, 1, 2, tzinfo=UTC)
    params, errors = check(
        action("3.11.0.24", f"image=AMH-3.1.0.img version=AMH-3.1.0 sha256={SHA.upper()}", at),
        library,
    )
    assert errors == []
    assert params == FirmwareReference("AMH-3.1.0.img", "AMH-3.1.0", SHA, len(IMAGE), at)


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (f"image=AMH-9.img version=AMH-9 sha256={SHA}", "no firmware image 'AMH-9.img' in"),
        (
            f"image=AMH-3.1.0.img version=AMH-3.1.0 sha256={'0' * 64}",
            f"SHA-256 is {SHA}, the request says {'0' * 64}",
        ),
        ("image=AMH-3.1.0.img version=AMH-3.1.0 sha256=abc", "is not 64 hexadecimal digits"),
        (f"image=../AMH-3.1.0.img version=V sha256={SHA}", "is not a plain file name"),
        ("image=AMH-3.1.0.img version=AMH-3.1.0", "command lacks sha256"),
    ],
)
def test_bad_firmware_reference(library: ControlLibrary, command: str, why: str) -> None:
    params, errors = check(action("3.11.0.24", command), library)
    assert params is None
    [(code, xpath, reason)] = errors
    assert (code, xpath) == ("2013", f"{BASE}/EndDeviceAction/command")
    assert why in reason


def test_parameters_where_none_are_taken(library: ControlLibrary) -> None:
    signal = FloatQuantity(Decimal(4), "k", "W")
    for control, where in (
        (EndDeviceControl("3.31.0.23", price_signal=signal), "priceSignal"),
        (action("3.15.0.23", "calendar=TOU-2027"), "EndDeviceAction"),
        (
            EndDeviceControl(
                "3.20.0.24",
                price_signal=signal,
                end_device_action=EndDeviceAction("calendar=TOU-2027"),
            ),
            "priceSignal",
        ),
        (
            EndDeviceControl(
                "3.11.0.24",
                end_device_action=EndDeviceAction(
                    f"image=AMH-3.1.0.img version=V sha256={SHA}", duration=Decimal(5)
                ),
            ),
            "EndDeviceAction/duration",
        ),
    ):
        params, errors = check(control, library)
        assert params is None
        assert [(c, x) for c, x, _ in errors] == [("2013", f"{BASE}/{where}")]
    assert check(EndDeviceControl("3.31.0.23"), library) == (None, [])


# -- the JSON form ------------------------------------------------------------------------------


def test_control_request_json_carries_the_parameters(library: ControlLibrary) -> None:
    at = datetime(2027, 1, 1, 6, tzinfo=UTC)
    for parameters in (
        None,
        LoadLimit(4_500),
        CalendarUpdate(library.calendar("TOU-2027"), at),
        CalendarUpdate(library.calendar("TOU-2027")),
        library.firmware("AMH-3.1.0.img", "AMH-3.1.0", SHA, at),
    ):
        request = ControlRequest(
            job_id="J-1",
            utility_id=1,
            control_type="3.15.0.18",
            devices=("MTR-1", "MTR-2"),
            requested_at=at,
            start=at,
            reason="r",
            correlation_id="m",
            parameters=parameters,
        )
        wire = json.loads(json.dumps(request.to_json()))
        assert ControlRequest.from_json(wire) == request
        assert parameters_from_dict(parameters_to_dict(parameters)) == parameters
    firmware = parameters_to_dict(library.firmware("AMH-3.1.0.img", "AMH-3.1.0", SHA))
    assert firmware == {
        "kind": "firmware",
        "image": "AMH-3.1.0.img",
        "version": "AMH-3.1.0",
        "sha256": SHA,
        "size": len(IMAGE),
        "activate_at": None,
    }  # a reference: the image's bytes never travel


@pytest.mark.parametrize(
    ("parameters", "why"),
    [
        ({"kind": "load_limit", "threshold_w": -5}, "not in 1..4294967295 W"),
        ({"kind": "load_limit"}, "threshold_w: Field required"),
        ({"kind": "firmware", "image": "../x", "version": "V", "sha256": SHA, "size": 1}, "image"),
        ({"kind": "calendar", "name": "C", **calendar_json(), "weeks": []}, "weeks"),
        ({"kind": "tariff"}, "unknown kind 'tariff'"),
    ],
)
def test_malformed_parameters_in_json_are_refused(parameters: dict[str, Any], why: str) -> None:
    data = ControlRequest("J", 1, "3.15.0.18", ("M",), datetime.now(UTC)).to_json()
    data["parameters"] = parameters
    with pytest.raises(ValueError, match=why):
        ControlRequest.from_json(data)
