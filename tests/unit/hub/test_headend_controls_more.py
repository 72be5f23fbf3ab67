"""CIM CreateEndDeviceControls for load limit, ToU calendar and firmware update, end to
end with the parameters in the request: hub pipeline -> DlmsHeadEnd -> control jobs ->
simulated meters over real TCP -> EndDeviceEvents. The threshold is the control's
priceSignal (W), the calendar and the firmware image are named by EndDeviceAction/command
from the folders of [hes] calendars_dir and firmware_dir (docs/controls.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hes.simulator.fleet import Fleet
from hes.simulator.meter import FIRMWARE, ImageTransferStatus, make_firmware_image
from hub.bootstrap import App
from hub.samples import end_device_controls, get_end_device_events
from tests.unit.hub import test_headend_routes as routes
from tests.unit.hub.test_headend_routes import (
    EDC,
    EDE,
    events,
    fleet_app,
    hub_settings,
    mrids,
    payload,
    send,
    type_of,
)

# the simulated 3-meter fleet over TCP of the CIM route tests
fleet = routes.fleet

LOAD_LIMIT_SET = "3.15.0.18"
LOAD_LIMIT_CLEAR = "3.15.0.23"
TOU = "3.20.0.24"
FIRMWARE_UPDATE = "3.11.0.24"
IMAGE = make_firmware_image("AMH-3.1.0", b"\x5a" * 600)
SHA = hashlib.sha256(IMAGE).hexdigest()
CALENDAR = {
    "seasons": [{"name": "ALL", "start": "2026-01-01T00:00:00+00:00", "week": "WK"}],
    "weeks": [{"name": "WK", "days": [1, 1, 1, 1, 1, 2, 2]}],
    "days": [
        {"id": 1, "schedules": [{"start": "00:00", "tariff": 2}, {"start": "06:00", "tariff": 1}]},
        {"id": 2, "schedules": [{"start": "00:00", "tariff": 2}]},
    ],
}


@dataclass
class Folders:
    firmware: Path
    calendars: Path


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    f = Folders(tmp_path / "firmware", tmp_path / "calendars")
    f.firmware.mkdir()
    f.calendars.mkdir()
    (f.firmware / "AMH-3.1.0.img").write_bytes(IMAGE)
    (f.calendars / "TOU-CIM.json").write_text(json.dumps(CALENDAR))
    broken = json.loads(json.dumps(CALENDAR))
    broken["weeks"][0]["days"][3] = 7
    (f.calendars / "BROKEN.json").write_text(json.dumps(broken))
    return f


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet, folders: Folders) -> Iterator[App]:
    settings = hub_settings(
        sqlite_url, firmware_dir=folders.firmware, calendars_dir=folders.calendars
    )
    application = fleet_app(settings, fleet)
    yield application
    application.close()


def firmware_command(image: str = "AMH-3.1.0.img", sha: str = SHA) -> str:
    return f"image={image} version=AMH-3.1.0 sha256={sha}"


def test_load_limit_and_tou_calendar_from_the_request(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {
                    "type": LOAD_LIMIT_SET,
                    "mrid": "JOB-LL",
                    "devices": meters[:2],
                    "price_signal": ("4.5", "k", "W"),
                },
                {
                    "type": TOU,
                    "mrid": "JOB-TOU",
                    "devices": meters[2:],
                    "command": "calendar=TOU-CIM",
                },
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    # the reply echoes what was accepted, parameters included
    [ll, tou] = payload(outcome, f"{EDC}EndDeviceControl")
    assert ll.findtext(f"{EDC}priceSignal/{EDC}value") == "4.5"
    assert ll.findtext(f"{EDC}priceSignal/{EDC}unit") == "W"
    assert tou.findtext(f"{EDC}EndDeviceAction/{EDC}command") == "calendar=TOU-CIM"
    assert app.headend is not None
    reports = {r.request.job_id: r for r in app.headend.run_due()}
    assert reports["JOB-LL"].state == "succeeded"
    assert {(r.event_type, r.detail) for r in reports["JOB-LL"].results} == {
        ("3.15.0.24", "threshold 4500 W (active 4500 W)")
    }
    # read back on the meters themselves
    assert [m.limiter.threshold_normal for m in fleet.meters] == [4_500, 4_500, 0]
    assert reports["JOB-TOU"].state == "succeeded"
    meter = fleet.meters[2]
    assert meter.calendar_active.name == b"TOU-CIM"
    assert [w.days for w in meter.calendar_active.weeks] == [(1, 1, 1, 1, 1, 2, 2)]
    assert [[a.selector for a in d.actions] for d in meter.calendar_active.days] == [[2, 1], [2]]
    done = events(app, job="JOB-TOU", state="succeeded")
    assert [(e.device_mrid, e.event_type) for e in done] == [(meters[2], "3.20.0.24")]
    answer = send(app, get_end_device_events([meters[0]], job="JOB-LL"))
    assert [type_of(e) for e in payload(answer, f"{EDE}EndDeviceEvent")] == [
        LOAD_LIMIT_SET,
        "3.15.0.24",
    ]
    clear = send(
        app, end_device_controls("create", [{"type": LOAD_LIMIT_CLEAR, "devices": meters[:1]}])
    )
    assert clear.result == "OK", clear.errors
    [report] = app.headend.run_due()
    assert report.state == "succeeded"
    assert fleet.meters[0].limiter.threshold_normal == 0


def test_tou_calendar_activated_at_the_requested_time(app: App, fleet: Fleet) -> None:
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    meter_id = mrids(fleet)[0]
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {
                    "type": TOU,
                    "mrid": "JOB-TOU-LATER",
                    "devices": [meter_id],
                    "command": "calendar=TOU-CIM",
                    "activate_at": at,
                }
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    assert app.headend is not None
    [report] = app.headend.run_due()
    assert report.state == "succeeded", report
    assert report.results[0].detail == f"calendar TOU-CIM activates at {at.isoformat()}"
    meter = fleet.meters[0]
    assert meter.calendar_passive.name == b"TOU-CIM"
    assert meter.calendar_active.name != b"TOU-CIM"


def test_firmware_update_verified_and_activated(app: App, fleet: Fleet, folders: Folders) -> None:
    meters = mrids(fleet)
    # a second image whose SHA-256 the request states correctly, but which the meter's
    # own verification refuses (a flipped bit inside the signed part)
    flipped = bytearray(IMAGE)
    flipped[100] ^= 0x01
    (folders.firmware / "AMH-3.1.0-flipped.img").write_bytes(bytes(flipped))
    flipped_sha = hashlib.sha256(bytes(flipped)).hexdigest()
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {
                    "type": FIRMWARE_UPDATE,
                    "mrid": "JOB-FW",
                    "devices": meters[:1],
                    "command": firmware_command(),
                },
                {
                    "type": FIRMWARE_UPDATE,
                    "mrid": "JOB-FW-BAD",
                    "devices": meters[1:2],
                    "command": firmware_command("AMH-3.1.0-flipped.img", flipped_sha),
                },
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    assert app.headend is not None
    reports = {r.request.job_id: r for r in app.headend.run_due()}
    assert reports["JOB-FW"].state == "succeeded"
    [ok] = reports["JOB-FW"].results
    assert (ok.event_type, ok.detail) == ("3.11.0.24", "firmware AMH-3.1.0, 6 block(s) sent")
    assert reports["JOB-FW-BAD"].state == "failed"
    [failed] = reports["JOB-FW-BAD"].results
    assert failed.event_type == "3.11.0.85"
    assert "verification failed" in failed.detail
    assert [m.firmware for m in fleet.meters] == ["AMH-3.1.0", FIRMWARE, FIRMWARE]
    assert fleet.meters[0].image.status == ImageTransferStatus.ACTIVATION_SUCCESSFUL
    recorded = events(app, job="JOB-FW-BAD", state="failed")
    assert [(e.device_mrid, e.event_type) for e in recorded] == [(meters[1], "3.11.0.85")]


def test_firmware_image_changed_after_the_request_is_not_transferred(
    app: App, fleet: Fleet, folders: Folders
) -> None:
    """The runner loads the image itself and checks the request's SHA-256 again."""
    meter_id = mrids(fleet)[2]
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {
                    "type": FIRMWARE_UPDATE,
                    "mrid": "JOB-FW-SWAP",
                    "devices": [meter_id],
                    "command": firmware_command(),
                }
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    (folders.firmware / "AMH-3.1.0.img").write_bytes(make_firmware_image("AMH-6.6.6"))
    assert app.headend is not None
    [report] = app.headend.run_due()
    assert report.state == "failed"
    [result] = report.results
    assert result.event_type == "3.11.0.85"
    assert f"expected {SHA}: not transferred" in result.detail
    assert fleet.meters[2].firmware == FIRMWARE
    assert fleet.meters[2].image.status == ImageTransferStatus.NOT_INITIATED


def test_bad_parameters_are_refused_with_their_xpath_and_nothing_is_scheduled(
    app: App, fleet: Fleet
) -> None:
    meters = mrids(fleet)
    before = [
        (m.limiter.threshold_normal, m.calendar_active.name, m.firmware) for m in fleet.meters
    ]
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {"type": LOAD_LIMIT_SET, "mrid": "B-1", "devices": meters},
                {
                    "type": LOAD_LIMIT_SET,
                    "mrid": "B-2",
                    "devices": meters,
                    "price_signal": ("-3", "k", "W"),
                },
                {
                    "type": FIRMWARE_UPDATE,
                    "mrid": "B-3",
                    "devices": meters,
                    "command": firmware_command("AMH-9.9.9.img"),
                },
                {
                    "type": FIRMWARE_UPDATE,
                    "mrid": "B-4",
                    "devices": meters,
                    "command": firmware_command(sha="0" * 64),
                },
                {
                    "type": TOU,
                    "mrid": "B-5",
                    "devices": meters,
                    "command": "calendar=BROKEN",
                },
                {
                    "type": LOAD_LIMIT_SET,
                    "mrid": "B-6",
                    "devices": meters,
                    "price_signal": ("4", "k", "Wh"),
                },
            ],
        ),
    )
    assert outcome.result == "FAILED"
    base = "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl"
    assert [(e.code, e.xpath) for e in outcome.errors] == [
        ("2013", f"{base}[1]/priceSignal"),
        ("2013", f"{base}[2]/priceSignal/value"),
        ("2013", f"{base}[3]/EndDeviceAction/command"),
        ("2013", f"{base}[4]/EndDeviceAction/command"),
        ("2013", f"{base}[5]/EndDeviceAction/command"),
        ("2013", f"{base}[6]/priceSignal/unit"),
    ]
    reasons = [e.reason for e in outcome.errors]
    assert "needs its threshold" in reasons[0]
    assert "threshold -3000 W is not above 0" in reasons[1]
    assert "no firmware image 'AMH-9.9.9.img'" in reasons[2]
    assert f"SHA-256 is {SHA}, the request says {'0' * 64}" in reasons[3]
    assert "BROKEN.json: weeks.0.days.3: no day profile with id 7" in reasons[4]
    assert "unit must be W, not 'Wh'" in reasons[5]
    # nothing scheduled: no job record, nothing to run, the meters untouched
    assert all(events(app, job=f"B-{n}") == [] for n in range(1, 7))
    assert app.headend is not None
    assert app.headend.run_due() == []
    after = [(m.limiter.threshold_normal, m.calendar_active.name, m.firmware) for m in fleet.meters]
    assert after == before


def test_load_limit_over_soap_with_zeep(sqlite_url: str, fleet: Fleet, folders: Folders) -> None:
    """ExecuteEndDeviceControls from a zeep client built from our WSDL: the priceSignal
    and EndDeviceAction are plain WSDL types to a CIS client."""
    from adapters.soap.service import SoapService
    from hub.settings import SoapSettings
    from tests.conftest import free_port
    from tests.integration.soap.conftest import USERS, Server, header, received_body, zeep_client

    settings = hub_settings(
        sqlite_url, firmware_dir=folders.firmware, calendars_dir=folders.calendars
    ).model_copy(
        update={
            "users": USERS,
            "soap": SoapSettings(enabled=True, port=free_port(), threads=4),
        }
    )
    app = fleet_app(settings, fleet)
    service = SoapService(app)
    service.start()
    try:
        client, history = zeep_client(Server(app, service), "ExecuteEndDeviceControls")
        control = {
            "mRID": "SOAP-LL",
            "priceSignal": {"multiplier": "k", "unit": "W", "value": Decimal("3.2")},
            "EndDeviceControlType": {"ref": LOAD_LIMIT_SET},
            "EndDevices": [{"mRID": mrids(fleet)[1]}],
        }
        bad = {
            "mRID": "SOAP-FW",
            "EndDeviceAction": {"command": firmware_command(sha="f" * 64)},
            "EndDeviceControlType": {"ref": FIRMWARE_UPDATE},
            "EndDevices": [{"mRID": mrids(fleet)[1]}],
        }
        response = client.service.CreateEndDeviceControls(
            Header=header("create", "EndDeviceControls"),
            Payload={"EndDeviceControls": {"EndDeviceControl": [control, bad]}},
        )
        assert response.Reply.Result == "PARTIAL", response.Reply
        [error] = response.Reply.Error
        assert error.code == "2013"
        assert error.xpath is None  # an xs:QName in IEC 61968-100: the path is in details
        assert error.details.endswith("EndDeviceControl[2]/EndDeviceAction/command")
        received_body(history)
        assert app.headend is not None
        [report] = app.headend.run_due()
        assert (report.request.job_id, report.state) == ("SOAP-LL", "succeeded")
        assert fleet.meters[1].limiter.threshold_normal == 3_200
    finally:
        service.stop()
        app.close()
