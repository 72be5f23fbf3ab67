# mypy: disable-error-code="no-untyped-call"
"""Control jobs with parameters carried to ``amihub engine`` processes over RabbitMQ.

The hub accepts a CIM CreateEndDeviceControls (load limit threshold in priceSignal,
firmware image named by EndDeviceAction/command) and checks it against its own folders;
the job (``ControlRequest.to_json``, parameters included, never the image bytes) goes
through the real broker to an engine subprocess, which loads the image from its own
``[hes] firmware_dir``, checks the SHA-256, runs the job against the simulated meters
over TCP and records the outcome in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kombu.connection import Connection

from adapters.dlms.jobs import JobDispatcher, collect, control_job
from adapters.memory import MemoryAdapter
from cim_schemas.profiles.end_device_controls import parse_end_device_controls
from cim_schemas.xml import parse_bytes
from hes.simulator.meter import FIRMWARE, ImageTransferStatus, make_firmware_image
from hub.bootstrap import bootstrap
from hub.control_parameters import ControlLibrary
from hub.headend import ControlRequest
from hub.nouns.end_device_control_parameters import control_parameters
from hub.samples import end_device_controls
from hub.settings import load_settings
from tests.integration.hes_engine.test_engine_scale_out import (
    REPO,
    Setup,
    make_setup,
    reply_queue,
    wait_for,
)
from tests.unit.hub.test_headend_routes import events

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

IMAGE = make_firmware_image("AMH-4.0.0", b"\x33" * 700)
SHA = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture
def fleet4(tmp_path: Path, postgres_url: str, amqp_url: str) -> Iterator[Setup]:
    yield from make_setup(tmp_path, postgres_url, amqp_url, 4)


@pytest.fixture
def replies(amqp_url: str) -> Iterator[tuple[Connection, str]]:
    yield from reply_queue(amqp_url)


def engine(setup: Setup, firmware_dir: Path) -> subprocess.Popen[bytes]:
    """An engine subprocess whose [hes] firmware_dir is ``firmware_dir``."""
    log = setup.tmp_path / f"engine-{len(setup.procs)}.log"
    env = {**setup.env(), "AMIHUB_HES__FIRMWARE_DIR": str(firmware_dir)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "engine", "--concurrency", "2", "--prefetch", "1"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    setup.procs.append(proc)
    wait_for(lambda: "consuming" in log.read_text(errors="replace"), 20, log.name)
    return proc


def accepted_requests(setup: Setup, firmware_dir: Path, body: bytes) -> list[ControlRequest]:
    """The hub's side: the CIM request's EndDeviceControls turned into ControlRequests
    the way the route does (parameters checked against the hub's folders), as the
    scheduler of a ``dispatch = "amqp"`` hub would publish them."""
    root = parse_bytes(body).getroot()
    payload = root.find("{*}Payload/{*}EndDeviceControls")
    assert payload is not None
    with setup.app.uow_factory() as uow:
        utility = uow.utilities.get(setup.app.settings.default_utility)
    assert utility is not None
    assert utility.id is not None
    library = ControlLibrary(firmware_dir=firmware_dir)
    out = []
    for n, control in enumerate(parse_end_device_controls(payload).end_device_controls, 1):
        code = control.end_device_control_type
        params, errors = control_parameters(control, code, f"EndDeviceControl[{n}]", library)
        assert errors == []
        out.append(
            ControlRequest(
                job_id=str(control.mrid),
                utility_id=utility.id,
                control_type=code,
                devices=tuple(d.mrid or "" for d in control.end_devices),
                requested_at=datetime.now(UTC),
                parameters=params,
            )
        )
    return out


def test_parameterised_control_jobs_run_by_an_engine(
    fleet4: Setup, replies: tuple[Connection, str], tmp_path: Path
) -> None:
    hub_firmware = tmp_path / "hub-firmware"
    engine_firmware = tmp_path / "engine-firmware"  # the engine's own copy of the repository
    for folder in (hub_firmware, engine_firmware):
        folder.mkdir()
        (folder / "AMH-4.0.0.img").write_bytes(IMAGE)
    # the engine's copy of a second image differs from the hub's: the engine must refuse it
    (hub_firmware / "AMH-4.0.1.img").write_bytes(make_firmware_image("AMH-4.0.1"))
    (engine_firmware / "AMH-4.0.1.img").write_bytes(make_firmware_image("AMH-4.0.1", b"x"))
    sha_401 = hashlib.sha256(make_firmware_image("AMH-4.0.1")).hexdigest()
    m = fleet4.mrids
    body = end_device_controls(
        "create",
        [
            {
                "type": "3.15.0.18",
                "mrid": "ENG-LL",
                "devices": m[:2],
                "price_signal": ("7.25", "k", "W"),
            },
            {
                "type": "3.11.0.24",
                "mrid": "ENG-FW",
                "devices": m[2:3],
                "command": f"image=AMH-4.0.0.img version=AMH-4.0.0 sha256={SHA}",
            },
            {
                "type": "3.11.0.24",
                "mrid": "ENG-FW-DIFF",
                "devices": m[3:4],
                "command": f"image=AMH-4.0.1.img version=AMH-4.0.1 sha256={sha_401}",
            },
        ],
    )
    requests = accepted_requests(fleet4, hub_firmware, body)
    conn, reply_to = replies
    engine(fleet4, engine_firmware)
    dispatcher = JobDispatcher(fleet4.hes, fleet4.amqp)
    try:
        ids = dispatcher.publish([control_job(r) for r in requests], reply_to)
        got = {r["job"]: r for r in collect(conn, reply_to, ids, 60)}
    finally:
        dispatcher.close()
    assert got["ENG-LL"]["state"] == "succeeded", got["ENG-LL"]
    assert [x.limiter.threshold_normal for x in fleet4.fleet.meters] == [7_250, 7_250, 0, 0]
    assert got["ENG-FW"]["state"] == "succeeded", got["ENG-FW"]
    assert fleet4.fleet.meters[2].firmware == "AMH-4.0.0"
    assert got["ENG-FW-DIFF"]["state"] == "failed"
    [diff] = got["ENG-FW-DIFF"]["meters"]
    assert f"expected {sha_401}: not transferred" in diff["error"]
    assert fleet4.fleet.meters[3].firmware == FIRMWARE
    assert fleet4.fleet.meters[3].image.status == ImageTransferStatus.NOT_INITIATED
    # the outcomes are in PostgreSQL, written by the engine
    ll = events(fleet4.app, job="ENG-LL", state="succeeded")
    assert sorted((e.device_mrid, e.event_type) for e in ll) == [
        (m[0], "3.15.0.24"),
        (m[1], "3.15.0.24"),
    ]
    assert ll[0].details["detail"] == "threshold 7250 W (active 7250 W)"
    [fw] = events(fleet4.app, job="ENG-FW", state="succeeded")
    assert (fw.device_mrid, fw.event_type) == (m[2], "3.11.0.24")
    [bad] = events(fleet4.app, job="ENG-FW-DIFF", state="failed")
    assert bad.event_type == "3.11.0.85"


def test_the_hub_refuses_before_anything_is_published(fleet4: Setup, tmp_path: Path) -> None:
    """Without a head-end the route answers 1011; with one, bad parameters are refused
    at the hub (see tests/unit/hub/test_headend_controls_more.py). Here: the hub process
    of a dispatch = "amqp" deployment refuses a wrong checksum with its xpath."""
    folder = tmp_path / "fw"
    folder.mkdir()
    (folder / "AMH-4.0.0.img").write_bytes(IMAGE)
    settings = load_settings(database_url=fleet4.database_url)
    settings = settings.model_copy(
        update={
            "hes": settings.hes.model_copy(
                update={"manifest": fleet4.manifest, "simulated_seed": 11, "firmware_dir": folder}
            )
        }
    )
    app = bootstrap(settings)
    try:
        outcome = MemoryAdapter(app.pipeline).request(
            end_device_controls(
                "create",
                [
                    {
                        "type": "3.11.0.24",
                        "mrid": "ENG-BAD",
                        "devices": fleet4.mrids[:1],
                        "command": f"image=AMH-4.0.0.img version=AMH-4.0.0 sha256={'e' * 64}",
                    }
                ],
            ),
            source="cis",
        )
    finally:
        app.close()
    assert outcome.result == "FAILED"
    [error] = outcome.errors
    assert (error.code, error.xpath) == (
        "2013",
        "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl[1]/EndDeviceAction/command",
    )
    assert events(fleet4.app, job="ENG-BAD") == []
