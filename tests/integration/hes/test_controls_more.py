"""Load limit, ToU calendar and firmware jobs over real TCP against the simulator."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import pytest

from cim_schemas.codes import event_type
from cim_schemas.errors import ConfigurationError
from hes.client.session import ClientIdentity
from hes.controls import (
    FIRMWARE_UPDATE,
    LOAD_LIMIT_CLEAR,
    LOAD_LIMIT_SET,
    TOU_CALENDAR_UPDATE,
    CalendarUpdate,
    ControlCommand,
    ControlJobs,
    FirmwareFile,
    FirmwareUpdate,
    JobState,
    LoadLimit,
)
from hes.dlms.cosem_data import ActivityCalendar, Day, DayAction, Season, Week
from hes.engine import EnginePolicy, tcp_sessions
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import (
    FIRMWARE,
    ControlState,
    EventCode,
    ImageTransferStatus,
    make_firmware_image,
)
from tests.conftest import free_port
from tests.integration.hes.test_controls import _targets


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(2, free_port(), seed=6)
    with SimulatorThread(f):
        yield f


def _jobs() -> ControlJobs:
    return ControlJobs(
        tcp_sessions(ClientIdentity()),
        EnginePolicy(concurrency=2, timeout=0.5, attempts=3, backoff_base=0.05),
    )


def _run(jobs: ControlJobs, command: ControlCommand) -> JobState:
    job = jobs.submit(command)
    assert jobs.run_due() == [job]
    return job.state


def _codes(fleet: Fleet, i: int) -> list[int]:
    return [c for _, c in fleet.meters[i].events]


# --- load limit -----------------------------------------------------------------------------


def test_load_limit_set_read_back_and_the_limiter_trips(fleet: Fleet) -> None:
    meter = fleet.meters[0]
    meter.faults.load_w = 2_000
    meter.limiter.min_over_s = 0  # trip as soon as the load is seen over the threshold
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(LOAD_LIMIT_SET, _targets(fleet)[:1], parameters=LoadLimit(5_000))
    )
    jobs.run_due()
    assert job.state is JobState.SUCCEEDED, job.outcomes
    [outcome] = job.outcomes
    assert outcome.event_type == str(event_type.LOAD_LIMIT_CHANGED) == "3.15.0.24"
    assert outcome.detail == "threshold 5000 W (active 5000 W)"
    assert meter.limiter.threshold_normal == 5_000
    assert meter.control_state == ControlState.CONNECTED  # 2 kW < 5 kW
    # the load goes over the threshold: the next look at the meter opens the relay
    meter.faults.load_w = 9_000
    clear = jobs.submit(ControlCommand(LOAD_LIMIT_CLEAR, _targets(fleet)[:1]))
    jobs.run_due()
    assert meter.control_state == ControlState.DISCONNECTED
    assert EventCode.LIMITER_THRESHOLD_EXCEEDED in _codes(fleet, 0)
    assert clear.state is JobState.SUCCEEDED
    assert clear.outcomes[0].detail == "no limit (active 0 W)"
    assert meter.limiter.threshold_normal == 0


def test_limiter_waits_min_over_threshold_duration(fleet: Fleet) -> None:
    meter = fleet.meters[0]
    meter.faults.load_w = 9_000
    meter.limiter.min_over_s = 3600
    assert (
        _run(
            _jobs(),
            ControlCommand(LOAD_LIMIT_SET, _targets(fleet)[:1], parameters=LoadLimit(5_000)),
        )
        is JobState.SUCCEEDED
    )
    assert meter.limiter.over_since is not None  # over, but not for long enough
    assert meter.control_state == ControlState.CONNECTED


def test_load_limit_on_an_unreachable_meter_fails(fleet: Fleet) -> None:
    fleet.meters[1].faults.no_answer = True
    jobs = _jobs()
    job = jobs.submit(ControlCommand(LOAD_LIMIT_SET, _targets(fleet), parameters=LoadLimit(4_000)))
    jobs.run_due()
    assert job.state is JobState.PARTIAL
    assert [(o.ok, o.event_type) for o in job.outcomes] == [
        (True, "3.15.0.24"),
        (False, "3.15.0.85"),
    ]


def test_parameters_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        ControlCommand(LOAD_LIMIT_SET, ())
    with pytest.raises(ConfigurationError):
        ControlCommand(LOAD_LIMIT_CLEAR, (), parameters=LoadLimit(1))
    with pytest.raises(ConfigurationError):
        LoadLimit(-1)
    with pytest.raises(ConfigurationError):
        FirmwareUpdate(b"", "x")


# --- ToU calendar -----------------------------------------------------------------------------


def _calendar(name: bytes = b"TOU-2027") -> ActivityCalendar:
    peak = Day(1, (DayAction(clock_time(0, 0), 2), DayAction(clock_time(17, 0), 3)))
    flat = Day(2, (DayAction(clock_time(0, 0), 1),))
    return ActivityCalendar(
        name,
        (Season(b"WINTER", datetime(2027, 1, 1, tzinfo=UTC), b"WK"),),
        (Week(b"WK", (1, 1, 1, 1, 1, 2, 2)),),
        (peak, flat),
    )


def test_tou_calendar_activated_now(fleet: Fleet) -> None:
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            TOU_CALENDAR_UPDATE, _targets(fleet)[:1], parameters=CalendarUpdate(_calendar())
        )
    )
    jobs.run_due()
    assert job.state is JobState.SUCCEEDED, job.outcomes
    assert job.outcomes[0].event_type == "3.20.0.24"
    assert job.outcomes[0].detail == "calendar TOU-2027 active"
    assert fleet.meters[0].calendar_active == _calendar()  # every profile arrived intact
    assert EventCode.PASSIVE_CALENDAR_ACTIVATED in _codes(fleet, 0)
    assert fleet.meters[1].calendar_active.name == b"AMH-STD"


def test_tou_calendar_activated_at_a_time(fleet: Fleet) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0) + timedelta(seconds=1)
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            TOU_CALENDAR_UPDATE,
            _targets(fleet)[:1],
            parameters=CalendarUpdate(_calendar(b"LATER"), activate_at=at),
        )
    )
    jobs.run_due()
    assert job.state is JobState.SUCCEEDED, job.outcomes
    assert job.outcomes[0].detail == f"calendar LATER activates at {at.isoformat()}"
    meter = fleet.meters[0]
    assert meter.calendar_active.name == b"AMH-STD"
    assert meter.calendar_passive.name == b"LATER"
    # the meter notices the time when it supervises (on any request, too): told the
    # instants around the activation instead of sleeping until it
    meter.supervise(at - timedelta(milliseconds=1))
    assert meter.calendar_active.name == b"AMH-STD"
    meter.supervise(at)
    assert meter.calendar_active.name == b"LATER"


def test_malformed_calendar_is_refused(fleet: Fleet) -> None:
    bad = ActivityCalendar(b"BAD", (), (Week(b"WK", (1, 1, 1, 1, 1, 1, 1)),), ())
    bad_week = Week(b"WK", (1, 1, 1, 1, 1, 1, 1))
    # a week of 6 days cannot be written: the meter refuses the SET, the job fails
    object.__setattr__(bad_week, "days", (1, 1, 1, 1, 1, 1))
    bad = ActivityCalendar(b"BAD", (), (bad_week,), ())
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(TOU_CALENDAR_UPDATE, _targets(fleet)[:1], parameters=CalendarUpdate(bad))
    )
    jobs.run_due()
    assert job.state is JobState.FAILED
    assert job.outcomes[0].event_type == "3.20.0.85"
    assert "refused SET" in job.outcomes[0].detail
    assert fleet.meters[0].calendar_active.name == b"AMH-STD"


# --- firmware -----------------------------------------------------------------------------


IMAGE = make_firmware_image("AMH-2.0.0", bytes(range(256)) * 4)  # 1,063 bytes: 9 blocks of 128


def test_firmware_update_from_a_file(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "amh-2.0.0.img"
    path.write_bytes(IMAGE)
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, _targets(fleet), parameters=FirmwareUpdate.from_file(path, "AMH-2.0.0")
        )
    )
    jobs.run_due()
    assert job.state is JobState.SUCCEEDED, job.outcomes
    assert {o.event_type for o in job.outcomes} == {"3.11.0.24"}
    assert job.outcomes[0].detail == "firmware AMH-2.0.0, 9 block(s) sent"
    for i, meter in enumerate(fleet.meters):
        assert meter.firmware == "AMH-2.0.0"
        assert meter.image.status == ImageTransferStatus.ACTIVATION_SUCCESSFUL
        assert _codes(fleet, i)[-2:] == [
            EventCode.FIRMWARE_READY_FOR_ACTIVATION,
            EventCode.FIRMWARE_ACTIVATED,
        ]
    again = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, _targets(fleet)[:1], parameters=FirmwareUpdate(IMAGE, "AMH-2.0.0")
        )
    )
    jobs.run_due()
    assert again.state is JobState.SUCCEEDED
    assert again.outcomes[0].detail == "already"


def test_firmware_file_checked_against_its_sha256_before_the_transfer(
    fleet: Fleet, tmp_path: Path
) -> None:
    """FirmwareFile (the image a CIM request names): loaded once when the job runs; the
    file's SHA-256 must be the request's, else no meter is touched."""
    path = tmp_path / "amh-2.0.0.img"
    path.write_bytes(IMAGE)
    good = hashlib.sha256(IMAGE).hexdigest()
    jobs = _jobs()
    bad = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, _targets(fleet), parameters=FirmwareFile(path, "AMH-2.0.0", "0" * 64)
        )
    )
    jobs.run_due()
    assert bad.state is JobState.FAILED
    assert {o.event_type for o in bad.outcomes} == {"3.11.0.85"}
    assert all("SHA-256 is " + good in o.detail for o in bad.outcomes)
    assert all("not transferred" in o.detail for o in bad.outcomes)
    for meter in fleet.meters:  # nothing initiated, nothing sent
        assert meter.firmware == FIRMWARE
        assert meter.image.status == ImageTransferStatus.NOT_INITIATED
    gone = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE,
            _targets(fleet)[:1],
            parameters=FirmwareFile(tmp_path / "missing.img", "AMH-2.0.0", good),
        )
    )
    jobs.run_due()
    assert gone.state is JobState.FAILED
    assert "missing.img" in gone.outcomes[0].detail
    ok = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, _targets(fleet), parameters=FirmwareFile(path, "AMH-2.0.0", good)
        )
    )
    jobs.run_due()
    assert ok.state is JobState.SUCCEEDED, ok.outcomes
    assert [m.firmware for m in fleet.meters] == ["AMH-2.0.0", "AMH-2.0.0"]


def test_corrupted_image_fails_verification_and_keeps_the_firmware(fleet: Fleet) -> None:
    flipped = bytearray(IMAGE)
    flipped[500] ^= 0x10
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE,
            _targets(fleet)[:1],
            parameters=FirmwareUpdate(bytes(flipped), "AMH-2.0.0"),
        )
    )
    jobs.run_due()
    assert job.state is JobState.FAILED
    [outcome] = job.outcomes
    assert outcome.event_type == str(event_type.FIRMWARE_FAILED) == "3.11.0.85"
    assert "verification failed (image_transfer_status 4)" in outcome.detail
    meter = fleet.meters[0]
    assert meter.firmware == FIRMWARE
    assert meter.image.status == ImageTransferStatus.VERIFICATION_FAILED
    assert EventCode.FIRMWARE_VERIFICATION_FAILED in _codes(fleet, 0)
    assert EventCode.FIRMWARE_ACTIVATED not in _codes(fleet, 0)


def test_dropped_transfer_resumes_at_first_not_transferred_block(fleet: Fleet) -> None:
    meter = fleet.meters[0]
    meter.faults.drop_after_image_block = 4  # block 4 stored, then the connection dies
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE,
            _targets(fleet)[:1],
            parameters=FirmwareUpdate(
                IMAGE, "AMH-2.0.0", activate_at=datetime.now(UTC) + timedelta(seconds=0.3)
            ),
        )
    )
    jobs.run_due()
    assert job.state is JobState.SUCCEEDED, job.outcomes
    assert job.outcomes[0].detail == "firmware AMH-2.0.0, 9 block(s) sent, resumed at block 5"
    assert meter.image.received == list(range(9))  # every block once: none sent again
    assert meter.firmware == "AMH-2.0.0"


def test_firmware_on_a_meter_that_never_answers(fleet: Fleet) -> None:
    fleet.meters[0].faults.no_answer = True
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, _targets(fleet)[:1], parameters=FirmwareUpdate(IMAGE, "AMH-2.0.0")
        )
    )
    jobs.run_due()
    assert job.state is JobState.FAILED
    assert job.outcomes[0].event_type == "3.11.0.85"
    assert "MeterUnreachable" in job.outcomes[0].detail


def test_firmware_refused_when_image_transfer_is_disabled(fleet: Fleet) -> None:
    fleet.meters[0].image.enabled = False
    jobs = _jobs()
    job = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, _targets(fleet)[:1], parameters=FirmwareUpdate(IMAGE, "AMH-2.0.0")
        )
    )
    jobs.run_due()
    assert job.state is JobState.FAILED
    assert "image transfer is not enabled" in job.outcomes[0].detail
    assert fleet.meters[0].image.received == []
    assert fleet.meters[0].firmware == FIRMWARE
