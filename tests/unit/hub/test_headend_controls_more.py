"""CIM CreateEndDeviceControls for load limit, ToU calendar and firmware update, end to
end: hub pipeline -> DlmsHeadEnd -> control jobs -> simulated meters over real TCP ->
EndDeviceEvents. The parameters (threshold, calendar, image) come from the head-end's
configuration per control type (``DlmsHeadEnd.configure_controls``)."""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as clock_time

from adapters.dlms import DlmsHeadEnd
from hes.controls import CalendarUpdate, FirmwareUpdate, LoadLimit
from hes.dlms.cosem_data import ActivityCalendar, Day, DayAction, Season, Week
from hes.simulator.fleet import Fleet
from hes.simulator.meter import FIRMWARE, make_firmware_image
from hub.bootstrap import App
from hub.samples import end_device_controls, get_end_device_events
from tests.unit.hub import test_headend_routes as routes
from tests.unit.hub.test_headend_routes import EDE, events, mrids, payload, send, type_of

# the fixtures of the CIM route tests: a 3-meter fleet over TCP, an app on SQLite
fleet = routes.fleet
app = routes.app

LOAD_LIMIT_SET = "3.15.0.18"
LOAD_LIMIT_CLEAR = "3.15.0.23"
TOU = "3.20.0.24"
FIRMWARE_UPDATE = "3.11.0.24"
IMAGE = make_firmware_image("AMH-3.1.0", b"\x5a" * 600)


def _headend(app: App) -> DlmsHeadEnd:
    assert isinstance(app.headend, DlmsHeadEnd)
    return app.headend


def _calendar() -> ActivityCalendar:
    return ActivityCalendar(
        b"TOU-CIM",
        (Season(b"ALL", datetime(2026, 1, 1, tzinfo=UTC), b"WK"),),
        (Week(b"WK", (1, 1, 1, 1, 1, 1, 1)),),
        (Day(1, (DayAction(clock_time(0, 0), 2), DayAction(clock_time(6, 0), 1))),),
    )


def test_parameterised_types_need_configured_parameters(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    outcome = send(
        app,
        end_device_controls(
            "create",
            [{"type": t, "devices": meters[:1]} for t in (LOAD_LIMIT_SET, TOU, FIRMWARE_UPDATE)],
        ),
    )
    assert outcome.result == "FAILED"
    assert [e.code for e in outcome.errors] == ["2013", "2013", "2013"]
    assert LOAD_LIMIT_CLEAR in _headend(app).control_types  # needs no parameter


def test_load_limit_and_tou_calendar_end_to_end(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    _headend(app).configure_controls(
        {LOAD_LIMIT_SET: LoadLimit(4_500), TOU: CalendarUpdate(_calendar())}
    )
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {"type": LOAD_LIMIT_SET, "mrid": "JOB-LL", "devices": meters[:2]},
                {"type": TOU, "mrid": "JOB-TOU", "devices": meters[2:]},
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    reports = {r.request.job_id: r for r in _headend(app).run_due()}
    assert reports["JOB-LL"].state == "succeeded"
    assert {(r.event_type, r.detail) for r in reports["JOB-LL"].results} == {
        ("3.15.0.24", "threshold 4500 W (active 4500 W)")
    }
    assert [m.limiter.threshold_normal for m in fleet.meters] == [4_500, 4_500, 0]
    assert reports["JOB-TOU"].state == "succeeded"
    assert fleet.meters[2].calendar_active.name == b"TOU-CIM"
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
    [report] = _headend(app).run_due()
    assert report.state == "succeeded"
    assert fleet.meters[0].limiter.threshold_normal == 0


def test_firmware_update_end_to_end_success_and_corrupted_image(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    headend = _headend(app)
    headend.configure_controls({FIRMWARE_UPDATE: FirmwareUpdate(IMAGE, "AMH-3.1.0")})
    ok = send(
        app,
        end_device_controls(
            "create", [{"type": FIRMWARE_UPDATE, "mrid": "JOB-FW", "devices": meters[:1]}]
        ),
    )
    assert ok.result == "OK", ok.errors
    flipped = bytearray(IMAGE)
    flipped[100] ^= 0x01
    # a job keeps the parameters it was submitted with
    headend.configure_controls({FIRMWARE_UPDATE: FirmwareUpdate(bytes(flipped), "AMH-3.1.0")})
    bad = send(
        app,
        end_device_controls(
            "create", [{"type": FIRMWARE_UPDATE, "mrid": "JOB-FW-BAD", "devices": meters[1:2]}]
        ),
    )
    assert bad.result == "OK", bad.errors
    reports = {r.request.job_id: r for r in headend.run_due()}
    assert reports["JOB-FW"].state == "succeeded"
    assert reports["JOB-FW"].results[0].event_type == "3.11.0.24"
    assert reports["JOB-FW-BAD"].state == "failed"
    [failed] = reports["JOB-FW-BAD"].results
    assert failed.event_type == "3.11.0.85"
    assert "verification failed" in failed.detail
    assert [m.firmware for m in fleet.meters] == ["AMH-3.1.0", FIRMWARE, FIRMWARE]
    recorded = events(app, job="JOB-FW-BAD", state="failed")
    assert [(e.device_mrid, e.event_type) for e in recorded] == [(meters[1], "3.11.0.85")]
