"""An event accepted over SOAP is in the outbox when the reply leaves: ``amihub serve``
killed (SIGKILL) after the commit and before the forwarding delivers it after restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from lxml import etree

from hub.bootstrap import bootstrap
from hub.settings import load_settings
from tests.conftest import free_port
from tests.integration.soap.conftest import Receiver
from tests.integration.soap.test_delivery import send_readings
from tests.unit.hub.conftest import add_meters


class _Running:
    """What :func:`send_readings` needs of a server: its WSDL URLs."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def wsdl(self, name: str) -> str:
        return f"{self.url}/ws/{name}?wsdl"


def _serve(config: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=config.parent,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AMIHUB_")},
    )
    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 30
    while True:
        try:
            session.get(f"http://127.0.0.1:{port}/ws/ReceiveMeterReadings?wsdl", timeout=2)
            return proc
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"amihub serve did not start:\n{output}") from None
            time.sleep(0.1)


@pytest.mark.timeout(90)
def test_event_accepted_before_a_kill_is_delivered_after_restart(tmp_path: Path) -> None:
    port, receiver_port = free_port(), free_port()
    database = f"sqlite:///{tmp_path}/amihub.db"
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "{database}"\n'
        "[soap]\n"
        "enabled = true\n"
        f"port = {port}\n"
        "delivery_first_delay = 0.05\n"
        "delivery_max_delay = 0.2\n"
        "delivery_poll_interval = 0.05\n"
        "delivery_max_attempts = 1000\n"
        "[soap.subscribers]\n"
        f'MeterReadings = ["http://127.0.0.1:{receiver_port}/ws/SendMeterReadings"]\n'
        "[[users]]\n"
        'name = "cis"\n'
        'password = "cis-secret"\n'
        'permissions = ["*:*"]\n'
        'reply_addresses = ["http://127.0.0.1:*"]\n'  # the subscriber below
    )
    settings = load_settings(database_url=database)
    app = bootstrap(settings, migrate=True)
    add_meters(app, "MTR-1")
    app.close()

    # nobody listens at the subscriber's address: the event cannot leave before the kill
    first = _serve(config, port)
    try:
        message_id = send_readings(_Running(port))  # type: ignore[arg-type]
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    app = bootstrap(settings)
    with app.uow_factory() as uow:
        assert uow.readings.count() == 96 + 1  # the day's intervals and the register
        assert uow.outbox.pending_count("soap") == 1  # committed with the readings
    app.close()

    receiver = Receiver(port=receiver_port)
    receiver.start()
    second = _serve(config, port)
    try:
        assert receiver.arrived.wait(30), "the event was not delivered after the restart"
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
        receiver.stop()
    path, action, body = receiver.received[0]
    assert path == "/ws/SendMeterReadings"
    assert action == "http://iec.ch/TC57/2011/SendMeterReadings/CreatedMeterReadings"
    event = etree.fromstring(body)
    assert event.findtext(".//{*}Header/{*}CorrelationID") == message_id
    assert len(event.findall(".//{*}IntervalReadings")) == 96
