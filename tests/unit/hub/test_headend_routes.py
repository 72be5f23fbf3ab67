"""CIM EndDeviceControls, EndDeviceEvents and MeterReadSchedule end to end: the hub
pipeline, the head-end (adapters.dlms on hes.*) and simulated meters over real TCP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from pydantic import SecretStr

from adapters.dlms import DlmsHeadEnd, MeterDirectory, directory_from_settings
from adapters.memory import MemoryAdapter
from cim_schemas.codes import event_type
from cim_schemas.errors import ConfigurationError, SecurityViolation
from cim_schemas.xml import parse_bytes
from hes.cli import fleet_manifest
from hes.security.keystore import KeyStore
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App, bootstrap
from hub.bootstrap import hes_service as build_hes_service
from hub.headend import ControlRequest
from hub.messages import Outcome
from hub.samples import (
    end_device_controls,
    end_device_events,
    get_end_device_events,
    meter_read_schedule,
)
from hub.settings import HesSettings, Settings, load_settings
from mdm.model import EndDeviceEvent
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters

DISCONNECT = str(event_type.REMOTE_DISCONNECT)  # 3.31.0.23
RECONNECT = str(event_type.REMOTE_CONNECT)  # 3.31.0.18
CLOCK_SET = str(event_type.CLOCK_SET)  # 3.36.0.24
DISCONNECTED = str(event_type.REMOTE_DISCONNECTED)  # 3.31.0.68
CONNECTED = str(event_type.REMOTE_CONNECTED)  # 3.31.0.42
EDE = "{http://iec.ch/TC57/2011/EndDeviceEvents#}"
EDC = "{http://iec.ch/TC57/2011/EndDeviceControls#}"


def hub_settings(url: str, **hes: object) -> Settings:
    settings = load_settings(database_url=url)
    return settings.model_copy(
        update={
            "amqp": settings.amqp.model_copy(update={"enabled": True}),
            "hes": settings.hes.model_copy(
                update={"timeout": 1.0, "attempts": 1, "concurrency": 3, **hes}
            ),
        }
    )


def mrids(fleet: Fleet) -> list[str]:
    return [f"MTR-{m.serial}" for m in fleet.meters]


def fleet_app(settings: Settings, fleet: Fleet) -> App:
    """The hub over a migrated store, reaching ``fleet``'s meters, which the MDM knows."""
    application = bootstrap(settings, migrate=True, meters=MeterDirectory.from_fleet(fleet))
    add_meters(application, *mrids(fleet))
    return application


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=6)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    application = fleet_app(hub_settings(sqlite_url), fleet)
    yield application
    application.close()


def send(app: App, body: bytes) -> Outcome:
    return MemoryAdapter(app.pipeline).request(body, source="cis")


def events(app: App, **options: object) -> list[EndDeviceEvent]:
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        found = uow.events.query(utility.id, None, None, None)
    return [e for e in found if all(e.details.get(k) == v for k, v in options.items())]


def payload(outcome: Outcome, tag: str) -> list[etree._Element]:
    return parse_bytes(outcome.reply).getroot().findall(f".//{tag}")


def type_of(event: etree._Element) -> str | None:
    found = event.find(f"{EDE}EndDeviceEventType")
    return found.get("ref") if found is not None else None


def relay(fleet: Fleet, index: int) -> ControlState:
    return fleet.meters[index].control_state


def outbox_bodies(app: App) -> list[bytes]:
    with app.uow_factory() as uow:
        items = uow.outbox.claim_due("amqp", datetime.now(UTC) + timedelta(seconds=1), 100)
    return [i.body for i in items]


def test_remote_disconnect_and_reconnect_end_to_end(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    fleet.meters[1].control_state = ControlState.DISCONNECTED  # already: a no-op success
    outcome = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "JOB-D1", "devices": meters[:2]}]
        ),
    )
    assert outcome.result == "OK", outcome.errors
    assert [e.text for e in payload(outcome, f"{EDC}EndDeviceControl/{EDC}mRID")] == ["JOB-D1"]
    # recorded with the request, not run yet
    assert {(e.device_mrid, e.event_type) for e in events(app, job="JOB-D1")} == {
        (meters[0], DISCONNECT),
        (meters[1], DISCONNECT),
    }
    assert fleet.meters[0].control_state == ControlState.CONNECTED

    assert app.headend is not None
    [report] = app.headend.run_due()
    assert report.state == "succeeded"
    assert [(r.device_mrid, r.event_type, r.detail) for r in report.results] == [
        (meters[0], DISCONNECTED, ""),
        (meters[1], DISCONNECTED, "already"),
    ]
    assert relay(fleet, 0) == ControlState.DISCONNECTED
    assert fleet.meters[1].events == []  # its relay was not operated
    done = events(app, job="JOB-D1", state="succeeded")
    assert sorted((e.device_mrid, e.event_type) for e in done) == [
        (meters[0], DISCONNECTED),
        (meters[1], DISCONNECTED),
    ]
    [published] = outbox_bodies(app)
    event_message = parse_bytes(published).getroot()
    assert event_message.findtext(".//{*}Verb") == "created"
    assert event_message.findtext(".//{*}Noun") == "EndDeviceEvents"
    assert [e.get("ref") for e in event_message.iter(f"{EDE}EndDeviceEventType")] == [
        DISCONNECTED,
        DISCONNECTED,
    ]

    # reconnect the first meter through its usage point
    back = send(
        app,
        end_device_controls("create", [{"type": RECONNECT, "usage_points": [f"UP-{meters[0]}"]}]),
    )
    assert back.result == "OK", back.errors
    job = payload(back, f"{EDC}EndDeviceControl/{EDC}mRID")[0].text
    assert job
    [report] = app.headend.run_due()
    assert report.state == "succeeded"
    assert fleet.meters[0].control_state == ControlState.CONNECTED

    # the events, answered through the pipeline
    answer = send(app, get_end_device_events([meters[0]], job=job))
    assert answer.result == "OK", answer.errors
    got = payload(answer, f"{EDE}EndDeviceEvent")
    assert [type_of(e) for e in got] == [RECONNECT, CONNECTED]
    everything = send(app, get_end_device_events([meters[0]], event_types=[DISCONNECTED]))
    assert len(payload(everything, f"{EDE}EndDeviceEvent")) == 1


def test_unknown_meter_and_unknown_control_type(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    add_meters(app, "MTR-NO-ADDRESS", install=False)  # in the MDM, not in the manifest
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {"type": DISCONNECT, "devices": [meters[0], "MTR-NOT-THERE"]},
                {"type": "3.15.0.18", "devices": [meters[1]]},  # load limit without threshold
                {"type": "3.31.x.23", "devices": [meters[1]]},
                {"type": DISCONNECT, "devices": ["MTR-NO-ADDRESS"]},
                {"type": DISCONNECT, "groups": ["ALL-METERS"]},
                {"type": DISCONNECT, "usage_points": ["UP-NOT-THERE"]},
            ],
        ),
    )
    assert outcome.result == "PARTIAL"
    base = "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl"
    assert [(e.code, e.xpath) for e in outcome.errors] == [
        ("2001", f"{base}[1]/EndDevices[2]"),
        ("2013", f"{base}[2]/priceSignal"),
        ("2013", f"{base}[3]/EndDeviceControlType"),
        ("2001", f"{base}[4]/EndDevices[1]"),
        ("2015", f"{base}[5]/EndDeviceGroups[1]"),
        ("2002", f"{base}[6]/UsagePoints[1]"),
    ]
    assert "needs its threshold" in outcome.errors[1].reason
    assert "head-end address" in outcome.errors[3].reason
    assert outcome.counts == {"controls": 6, "accepted": 1}
    assert outcome.dead_letter_id is not None
    assert app.headend is not None
    [report] = app.headend.run_due()
    assert [r.device_mrid for r in report.results] == [meters[0]]
    assert fleet.meters[0].control_state == ControlState.DISCONNECTED
    assert fleet.meters[1].control_state == ControlState.CONNECTED


def test_cancel_a_scheduled_job(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    later = datetime.now(UTC) + timedelta(hours=1)
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {
                    "type": DISCONNECT,
                    "mrid": "JOB-LATER",
                    "areas": [],
                    "devices": meters,
                    "start": later,
                }
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    assert app.headend is not None
    assert app.headend.run_due() == []  # not due
    cancel = send(app, end_device_controls("cancel", [{"type": DISCONNECT, "mrid": "JOB-LATER"}]))
    assert cancel.result == "OK", cancel.errors
    assert app.headend.run_due() == []
    assert all(m.control_state == ControlState.CONNECTED for m in fleet.meters)
    assert {e.device_mrid for e in events(app, job="JOB-LATER", state="cancelled")} == set(meters)
    assert len(outbox_bodies(app)) == 1  # the cancel is published

    again = send(app, end_device_controls("cancel", [{"type": DISCONNECT, "mrid": "JOB-LATER"}]))
    assert again.result == "FAILED"
    assert [e.code for e in again.errors] == ["2009"]  # cancelled already
    assert "cancelled" in again.errors[0].reason
    unknown = send(app, end_device_controls("cancel", [{"type": DISCONNECT, "mrid": "NO-SUCH"}]))
    assert [e.code for e in unknown.errors] == ["2008"]

    # a finished job cannot be cancelled
    now = send(
        app,
        end_device_controls(
            "create", [{"type": RECONNECT, "mrid": "JOB-NOW", "devices": meters[:1]}]
        ),
    )
    assert now.result == "OK"
    app.headend.run_due()
    too_late = send(app, end_device_controls("cancel", [{"type": RECONNECT, "mrid": "JOB-NOW"}]))
    assert [e.code for e in too_late.errors] == ["2009"]  # finished
    assert "succeeded" in too_late.errors[0].reason
    # the same job id twice
    dup = send(
        app,
        end_device_controls(
            "create",
            [{"type": DISCONNECT, "mrid": "JOB-TWICE", "devices": meters[:1], "start": later}] * 2,
        ),
    )
    assert dup.result == "PARTIAL"
    assert [e.code for e in dup.errors] == ["2007"]
    app.headend.run_due()  # JOB-TWICE is a scheduled job in the table
    later_dup = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "JOB-TWICE", "devices": meters[1:2]}]
        ),
    )
    assert [e.code for e in later_dup.errors] == ["2007"]


def test_scheduled_job_is_taken_up_after_a_restart(sqlite_url: str, fleet: Fleet) -> None:
    """The job table survives the process: another head-end on the store runs the job."""
    meters = mrids(fleet)
    directory = MeterDirectory.from_fleet(fleet)
    first = bootstrap(hub_settings(sqlite_url), migrate=True, meters=directory)
    add_meters(first, *meters)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    outcome = send(
        first,
        end_device_controls(
            "create",
            [
                {"type": DISCONNECT, "mrid": "JOB-SOON", "devices": meters[:1], "start": soon},
                {"type": DISCONNECT, "mrid": "JOB-KEPT", "devices": meters[1:2], "start": soon},
            ],
        ),
    )
    assert outcome.result == "OK"
    assert send(first, end_device_controls("cancel", [{"type": DISCONNECT, "mrid": "JOB-KEPT"}])).ok
    first.close()  # the process ends before the job is due

    second = bootstrap(hub_settings(sqlite_url), meters=directory)
    try:
        assert isinstance(second.headend, DlmsHeadEnd)
        reports = second.headend.run_due()
        while not reports and datetime.now(UTC) < soon + timedelta(seconds=5):
            time.sleep(0.05)
            reports = second.headend.run_due()
        [report] = reports  # not the cancelled one
        assert report.request.job_id == "JOB-SOON"
        assert report.state == "succeeded"
        assert fleet.meters[0].control_state == ControlState.DISCONNECTED
        assert fleet.meters[1].control_state == ControlState.CONNECTED
        assert second.headend.run_due() == []  # finished
        assert second.headend.state(report.request.utility_id, "JOB-SOON") == "succeeded"
        assert second.headend.state(report.request.utility_id, "JOB-KEPT") == "cancelled"
    finally:
        second.close()


def test_a_job_whose_request_never_committed_never_runs(app: App, fleet: Fleet) -> None:
    assert isinstance(app.headend, DlmsHeadEnd)
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        app.headend.submit(
            uow,
            ControlRequest(
                "ROLLED-BACK", utility.id, DISCONNECT, tuple(mrids(fleet)), datetime.now(UTC)
            ),
        )
        uow.rollback()  # the request's transaction fails
    assert app.headend.run_due() == []
    assert app.headend.state(utility.id, "ROLLED-BACK") is None
    assert all(m.control_state == ControlState.CONNECTED for m in fleet.meters)
    # the same request processed again after its first transaction was rolled back
    again = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "ROLLED-BACK", "devices": mrids(fleet)[:1]}]
        ),
    )
    assert again.result == "OK", again.errors
    [report] = app.headend.run_due()
    assert report.request.control_type == DISCONNECT
    assert relay(fleet, 0) == ControlState.DISCONNECTED


def test_clock_set_and_an_unreachable_meter(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    fleet.meters[0].faults.clock_drift_s = 600
    fleet.meters[2].faults.no_answer = True
    outcome = send(
        app,
        end_device_controls("create", [{"type": CLOCK_SET, "devices": [meters[0], meters[2]]}]),
    )
    assert outcome.result == "OK"
    assert app.headend is not None
    [report] = app.headend.run_due()
    assert report.state == "partial"
    assert [(r.device_mrid, r.ok) for r in report.results] == [
        (meters[0], True),
        (meters[2], False),
    ]
    assert abs(fleet.meters[0].faults.clock_drift_s) < 5
    failed = [e for e in events(app, state="partial") if e.details["ok"] == "false"]
    assert [e.device_mrid for e in failed] == [meters[2]]


def test_meter_read_schedule_reads_into_the_mdm(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    fleet.meters[2].faults.no_answer = True
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    outcome = send(
        app,
        meter_read_schedule([*meters, "MTR-NOT-THERE"], end - timedelta(hours=2), end),
    )
    assert outcome.result == "PARTIAL"
    assert sorted(e.code for e in outcome.errors) == ["2001", "2014"]
    assert outcome.counts["read"] == 2
    assert outcome.counts["stored"] == outcome.counts["readings"] > 2 * 8
    again = send(app, meter_read_schedule(meters[:2], end - timedelta(hours=2), end))
    assert again.result == "OK"
    counts = again.counts
    assert counts["stored"] + counts["superseded"] + counts["unchanged"] == counts["readings"]
    assert counts["unchanged"] >= 2 * 8  # the profile read again: nothing new

    # a future start: stored as a read schedule (tests/unit/hub/test_headend_jobs.py)
    future = send(app, meter_read_schedule(meters[:1], end + timedelta(days=1), None))
    assert future.result == "OK", future.errors
    assert future.counts == {"meters": 1, "scheduled": 1}


def test_end_device_events_from_another_headend(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    outcome = send(
        app,
        end_device_events(
            "created",
            [
                {
                    "meter": meters[0],
                    "type": "3.12.29.212",
                    "at": at,
                    "mrid": "EV-1",
                    "details": {"source": "other-hes"},
                },
                {"meter": "MTR-NOT-THERE", "type": "3.26.0.85", "at": at},
                {"meter": meters[1], "type": "not-a-code", "at": at},
            ],
        ),
    )
    assert outcome.result == "PARTIAL"
    assert [e.code for e in outcome.errors] == ["2001", "2013"]
    answer = send(app, get_end_device_events([meters[0]], at, at + timedelta(hours=1)))
    assert answer.result == "OK"
    [event] = payload(answer, f"{EDE}EndDeviceEvent")
    assert event.findtext(f"{EDE}mRID") == "EV-1"
    assert type_of(event) == "3.12.29.212"
    unknown = send(app, get_end_device_events(["MTR-NOT-THERE"]))
    assert unknown.result == "FAILED"
    assert [e.code for e in unknown.errors] == ["2001"]
    by_up = send(app, get_end_device_events(usage_points=[f"UP-{meters[0]}"]))
    assert len(payload(by_up, f"{EDE}EndDeviceEvent")) == 1


def test_without_a_headend_controls_are_refused(sqlite_url: str) -> None:
    app = bootstrap(hub_settings(sqlite_url), migrate=True)
    try:
        assert app.headend is None
        outcome = send(app, end_device_controls("create", [{"type": DISCONNECT, "devices": ["X"]}]))
        assert outcome.result == "FAILED"
        assert [e.code for e in outcome.errors] == ["1011"]
    finally:
        app.close()


def test_wrapper_messages_as_the_soap_services_send_them(app: App, fleet: Fleet) -> None:
    """ExecuteEndDeviceControls / GetEndDeviceEvents / ExecuteMeterReadSchedule bodies."""
    meters = mrids(fleet)
    order = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "W-1", "devices": meters[:1]}], style="wrapper"
        ),
    )
    assert order.result == "OK", order.errors
    root = parse_bytes(order.reply).getroot()
    assert etree.QName(root).localname == "EndDeviceControlsResponseMessage"
    assert app.headend is not None
    [report] = app.headend.run_due()
    assert report.state == "succeeded"
    answer = send(app, get_end_device_events(meters[:1], job="W-1", style="wrapper"))
    assert answer.result == "OK", answer.errors
    assert [type_of(e) for e in payload(answer, f"{EDE}EndDeviceEvent")] == [
        DISCONNECT,
        DISCONNECTED,
    ]
    end = datetime.now(UTC)
    read = send(
        app, meter_read_schedule(meters[1:], end - timedelta(hours=1), end, style="wrapper")
    )
    assert read.result == "OK", read.errors
    bad = send(
        app,
        end_device_controls(
            "create", [{"type": "3.11.0.24", "devices": meters[:1]}], style="wrapper"
        ),
    )
    assert bad.result == "FAILED"
    assert bad.errors[0].xpath == (
        "/CreateEndDeviceControls/Payload/EndDeviceControls/EndDeviceControl[1]/EndDeviceAction"
    )  # a firmware update without its image reference


def test_execute_end_device_controls_over_soap(sqlite_url: str, fleet: Fleet) -> None:
    """The SOAP adapter's ExecuteEndDeviceControls answers through these routes."""
    import requests

    from adapters.soap.catalogue import SERVICES
    from adapters.soap.service import SoapService

    settings = hub_settings(sqlite_url)
    settings = settings.model_copy(
        update={
            "soap": settings.soap.model_copy(
                update={"enabled": True, "port": free_port(), "allow_anonymous": True}
            )
        }
    )
    app = fleet_app(settings, fleet)
    service = SoapService(app)
    service.start()
    try:
        body = end_device_controls(
            "create", [{"type": DISCONNECT, "devices": mrids(fleet)[:1]}], style="wrapper"
        )
        soap = (
            b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            b"<soapenv:Body>" + body.split(b"?>", 1)[1] + b"</soapenv:Body></soapenv:Envelope>"
        )
        spec = SERVICES["ExecuteEndDeviceControls"]
        response = requests.post(
            f"{service.url}/ws/ExecuteEndDeviceControls",
            data=soap,
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": f'"{spec.soap_action("CreateEndDeviceControls")}"',
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text[:500]
        answer = etree.fromstring(response.content)
        assert answer.findtext(".//{*}Reply/{*}Result") == "OK"
        assert app.headend is not None
        [report] = app.headend.run_due()
        assert report.state == "succeeded"
        assert relay(fleet, 0) == ControlState.DISCONNECTED
    finally:
        service.stop()
        app.close()


def test_headend_from_the_settings_manifest_and_the_scheduler_service(
    sqlite_url: str, fleet: Fleet, tmp_path: Path
) -> None:
    """[hes] manifest (as `hes simulate --manifest` writes it) + simulated_seed; the
    scheduler thread of `amihub serve` runs the job without anyone calling run_due."""
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    settings = hub_settings(
        sqlite_url, manifest=manifest, simulated_seed=6, tick_seconds=0.05, enabled=True
    )
    app = bootstrap(settings, migrate=True)
    add_meters(app, *mrids(fleet))
    service = build_hes_service(app)
    service.start()
    try:
        outcome = send(
            app,
            end_device_controls(
                "create", [{"type": DISCONNECT, "mrid": "SVC", "devices": mrids(fleet)[2:]}]
            ),
        )
        assert outcome.result == "OK", outcome.errors
        deadline = time.monotonic() + 10
        while not events(app, job="SVC", state="succeeded") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e.event_type for e in events(app, job="SVC", state="succeeded")] == [DISCONNECTED]
        assert relay(fleet, 2) == ControlState.DISCONNECTED
    finally:
        service.stop()
        app.close()


def test_a_manifest_without_keys_is_refused(tmp_path: Path, fleet: Fleet) -> None:
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    with pytest.raises(ConfigurationError, match="no keys"):
        MeterDirectory.from_manifest(manifest)
    manifest.write_text("{}")
    with pytest.raises(ConfigurationError, match="not a JSON list"):
        MeterDirectory.from_manifest(manifest, simulated_seed=6)


def test_one_association_at_a_time_per_meter(app: App, fleet: Fleet) -> None:
    """A scheduler job and an on-demand read of the same meter at once: both succeed
    (two parallel associations would take the same invocation counter)."""
    assert isinstance(app.headend, DlmsHeadEnd)
    headend = app.headend
    meter = mrids(fleet)[0]
    fleet.meters[0].faults.slow_answer_s = 0.02
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    results: list[str] = []

    def read() -> None:
        [got] = headend.read([meter], end - timedelta(hours=2), end)
        results.append(got.outcome)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["done"] * 3


def test_keys_from_the_key_store(tmp_path: Path, fleet: Fleet) -> None:
    master = bytes(range(32))
    store = KeyStore(master)
    for m in fleet.meters:
        store.put(f"MTR-{m.serial}", m.system_title, m.keys)
    (tmp_path / "keys.json").write_text(store.dumps())
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    settings = HesSettings(
        manifest=manifest, keystore=tmp_path / "keys.json", master_key=SecretStr(master.hex())
    )
    directory = directory_from_settings(settings)
    assert directory is not None
    target = directory[mrids(fleet)[1]]
    assert target.credentials.keys == fleet.meters[1].keys
    assert "keys" not in repr(directory)
    wrong = settings.model_copy(update={"master_key": SecretStr(bytes(32).hex())})
    with pytest.raises(SecurityViolation):
        directory_from_settings(wrong)
    (tmp_path / "keys.json").write_text("not json")
    with pytest.raises(ConfigurationError, match="keystore: JSONDecodeError"):
        directory_from_settings(settings)
