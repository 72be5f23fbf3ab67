"""The SOAP server under abuse, on a real PostgreSQL store (issue 12, point 8): gets with
several TimeSchedules on the streamed read path, and the store's timeouts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from lxml import etree

from adapters.memory import MemoryAdapter
from hub.samples import meter_readings_bytes
from tests.conftest import free_port
from tests.integration.soap.conftest import Server
from tests.integration.soap.test_bad_input import envelope, fault_of, get_body, post
from tests.unit.hub.conftest import START

pytestmark = pytest.mark.postgres

MR = "http://iec.ch/TC57/2011/MeterReadings#"


def schedules(meters: list[str], periods: list[tuple[datetime, datetime]]) -> str:
    devices = "".join(f"<p:EndDevice><p:mRID>{m}</p:mRID></p:EndDevice>" for m in meters)
    return devices + "".join(
        "<p:TimeSchedule><p:scheduleInterval>"
        f"<p:end>{end.isoformat()}</p:end><p:start>{start.isoformat()}</p:start>"
        "</p:scheduleInterval></p:TimeSchedule>"
        for start, end in periods
    )


def post_get(server: Server, devices: str, timeout: float = 30) -> requests.Response:
    return requests.post(
        server.endpoint("GetMeterReadings"),
        data=envelope(get_body(devices=devices)),
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings"',
        },
        auth=("cis", "cis-secret"),
        timeout=timeout,
    )


def values(response: requests.Response) -> list[str]:
    root = etree.fromstring(response.content)
    return [el.text or "" for el in root.iter(f"{{{MR}}}timeStamp")]


@pytest.mark.parametrize(
    ("meters", "days"),
    [
        (["MTR-1"], 63),
        (["MTR-1", "MTR-2"], 32),
        ([f"MTR-{n}" for n in range(1, 131)], 0.5),
    ],
    ids=["one meter, 2 x 63 days", "two meters, 2 x 32 days", "130 meters, 2 x 12 hours"],
)
def test_several_streamed_time_schedules_are_answered(
    soap_server_factory: Callable[..., Server],
    postgres_url: str,
    meters: list[str],
    days: float,
) -> None:
    """Two periods over the streamed path (more than 62 meter-days each) were two open
    streams on one connection: the second waited for psycopg's lock held by the first,
    for ever. Now both are answered, each period's readings once, in order."""
    from tests.unit.hub.conftest import add_meters

    server = soap_server_factory(database_url=postgres_url)
    add_meters(server.app, *meters[2:])  # the server has MTR-1 and MTR-2
    stored = MemoryAdapter(server.app.pipeline).request(
        meter_readings_bytes(meters, START, 192, registers=False)
    )
    assert stored.ok, stored.errors
    middle = START + timedelta(days=1)
    periods = [(middle - timedelta(days=days), middle), (middle, middle + timedelta(days=days))]
    response = post_get(server, schedules(meters, periods), timeout=20)
    assert response.status_code == 200, response.text[:500]
    stamps = values(response)
    stored_stamps = [START + timedelta(minutes=15 * k) for k in range(1, 193)]
    expected = [t for t in stored_stamps if periods[0][0] < t <= periods[1][1]]
    assert len(stamps) == len(expected) * len(meters)
    assert sorted(set(stamps)) == [t.isoformat() for t in expected]


def test_serve_stops_within_15_s_on_sigterm_with_requests_in_flight(
    postgres_url: str, tmp_path: Path
) -> None:
    """``amihub serve`` on PostgreSQL with gets of several streamed periods answered,
    slow clients mid-body, and gets waiting for a lock in the database (they would
    wait up to statement_timeout): SIGTERM ends it in under 15 s, exit 0."""
    from hub.bootstrap import bootstrap
    from hub.settings import load_settings
    from tests.integration.soap.conftest import USERS
    from tests.unit.hub.conftest import add_meters

    app = bootstrap(load_settings(database_url=postgres_url, users=USERS), migrate=True)
    try:
        add_meters(app, "MTR-1", "MTR-2")
        stored = MemoryAdapter(app.pipeline).request(
            meter_readings_bytes(["MTR-1", "MTR-2"], START, 96 * 60, registers=False)
        )
        assert stored.ok, stored.errors
    finally:
        app.close()
    port = free_port()
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "{postgres_url}"\n'
        "[soap]\nenabled = true\n"
        f"port = {port}\nthreads = 6\nsocket_timeout = 60\n"
        '[[users]]\nname = "cis"\npassword = "cis-secret"\npermissions = ["*:*"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    answered: list[int] = []
    slow: list[socket.socket] = []
    locker: psycopg.Connection[Any] | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/ws/GetMeterReadings?wsdl", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "amihub serve did not start"
                time.sleep(0.2)
        middle = START + timedelta(days=30)
        periods = [(middle - timedelta(days=40), middle), (middle, middle + timedelta(days=40))]
        body = envelope(get_body(devices=schedules(["MTR-1", "MTR-2"], periods)))

        def getter() -> None:
            session = requests.Session()
            while not stop.is_set():
                try:
                    response = session.post(
                        f"{url}/ws/GetMeterReadings",
                        data=body,
                        headers={"Content-Type": "text/xml; charset=utf-8"},
                        auth=("cis", "cis-secret"),
                        timeout=30,
                    )
                except requests.RequestException:
                    return
                answered.append(response.status_code)

        getters = [threading.Thread(target=getter, daemon=True) for _ in range(3)]
        for t in getters:
            t.start()
        for _ in range(2):  # a worker each, waiting for the rest of a body
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(
                b"POST /ws/GetMeterReadings HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: text/xml\r\nContent-Length: 5000\r\n\r\n<soapenv:Env"
            )
            slow.append(s)
        deadline = time.monotonic() + 60
        while not answered:  # the gets are answered, more are running
            assert time.monotonic() < deadline, "no get was answered"
            time.sleep(0.05)
        assert set(answered) == {200}
        # the next gets wait for a lock in the database (as behind a long statement)
        locker = psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"))
        locker.execute("LOCK TABLE reading IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql")) as watch:
            watch.autocommit = True
            while not watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "no get waited for the lock"
                time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if locker is not None:
            locker.close()
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for s in slow:
            s.close()
    print(f"amihub serve stopped {took:.2f} s after SIGTERM ({len(answered)} gets answered)")
    assert took < 15, output[-3000:]
    assert proc.returncode == 0, output[-3000:]


def raw_exchange(server: Server, request: bytes, timeout: float = 10) -> bytes:
    """One request on its own connection; everything the server answers until it closes
    or the answer's Content-Length is in."""
    with socket.create_connection(("127.0.0.1", server.service.port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and len(body) >= int(value):
                        return data


def test_a_long_user_name_gets_a_fault_and_an_audit_row(
    soap_server_factory: Callable[..., Server], postgres_url: str
) -> None:
    server = soap_server_factory(database_url=postgres_url)
    name = "u" * 250
    response = requests.post(
        server.endpoint("GetMeterReadings"),
        data=envelope(get_body()),
        headers={"Content-Type": "text/xml; charset=utf-8"},
        auth=(name, "x"),
        timeout=10,
    )
    assert response.status_code in (401, 500), response.text[:300]
    assert b"1010" in response.content
    with server.app.uow_factory() as uow:
        rows = uow.audit.list(10)
    assert rows[0][1] == name[:199] + "…"
    assert rows[0][2] == "refused"


def test_a_long_message_id_gets_a_fault_and_a_log_row(
    soap_server_factory: Callable[..., Server], postgres_url: str
) -> None:
    server = soap_server_factory(database_url=postgres_url)
    body = get_body().replace("<m:MessageID>", "<m:MessageID>" + "x" * 300)
    response = post(server, envelope(body))
    _faultcode, text, errors = fault_of(response)
    assert errors[0][0] == "1008", text
    assert "MessageID" in text
    assert "at most 200" in text
    with server.app.uow_factory() as uow:
        letters = uow.dead_letters.list()
    assert letters
    assert letters[0].error_code == "1008"


def test_a_negative_content_length_gets_400(
    soap_server_factory: Callable[..., Server], postgres_url: str
) -> None:
    server = soap_server_factory(database_url=postgres_url)
    answer = raw_exchange(
        server,
        b"POST /ws/GetMeterReadings HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        b"Content-Length: -5\r\n\r\n" + envelope(get_body()),
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


@pytest.mark.parametrize("field", ["mrid", "serial"])
def test_an_over_long_mrid_in_a_payload_gets_a_failed_reply(
    soap_server_factory: Callable[..., Server], postgres_url: str, field: str
) -> None:
    """Values longer than their store column (mRID 100, serial number 100 characters):
    a FAILED reply naming the problem, the connection stays, nothing half-applied."""
    from hub.samples import meter_config
    from mdm.model import DeviceRef

    server = soap_server_factory(database_url=postgres_url)
    item = {"mrid": "MTR-LONG", "serial": "SN-LONG", field: "M" * 150}
    body = meter_config("create", [item], style="wrapper")
    response = post(
        server,
        envelope(strip(body)),
        service="ExecuteMeterConfig",
        action="http://iec.ch/TC57/2011/ExecuteMeterConfig/CreateMeterConfig",
    )
    assert response.status_code in (200, 500), response.text[:500]
    assert b"<msg:Result>FAILED</msg:Result>" in response.content
    assert b"value too long for type character varying(100)" in response.content
    with server.app.uow_factory() as uow:
        assert uow.devices.find_many(1, [DeviceRef(mrid=item["mrid"])]) == {}


def strip(xml: bytes | str) -> str:
    text = xml.decode() if isinstance(xml, bytes) else xml
    return text.split("?>", 1)[1] if text.startswith("<?xml") else text
