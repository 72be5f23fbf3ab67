"""``amihub serve`` starts the SOAP services (cheroot, threads, access log) from amihub.toml."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import free_port


def test_amihub_serve_runs_the_soap_services(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path}/amihub.db"\n'
        "[soap]\n"
        "enabled = true\n"
        f"port = {port}\n"
        "threads = 4\n"
        "[[users]]\n"
        'name = "cis"\n'
        'password = "cis-secret"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        text=True,
    )
    try:
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + 30
        while True:
            try:
                response = session.get(
                    f"http://127.0.0.1:{port}/ws/GetMeterReadings?wsdl", timeout=2
                )
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "amihub serve did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert (
            f'location="http://127.0.0.1:{port}/ws/GetMeterReadings"'.encode() in response.content
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert '"GET /ws/GetMeterReadings?wsdl" 200' in output, output


def test_two_server_processes_share_the_port(soap_server_factory: object) -> None:
    from tests.integration.soap.conftest import header, zeep_client

    port = free_port()
    server = soap_server_factory(port=port, processes=2)  # type: ignore[operator]
    children = list(server.service._children)
    assert len(children) == 1
    deadline = time.monotonic() + 30
    while not children[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # the second process bootstraps and binds
    client, _ = zeep_client(server, "GetMeterReadings")
    for _ in range(10):
        response = client.service.GetMeterReadings(
            Header=header("get", "MeterReadings"),
            Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}]}},
        )
        assert response.Reply.Result == "OK"
    server.service.stop()
    assert not children[0].is_alive()
