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
