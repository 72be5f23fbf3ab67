"""``amihub serve`` starts the SOAP services (cheroot, threads, access log) from amihub.toml."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests
from lxml import etree

from tests.conftest import free_port
from tests.integration.soap.conftest import Server, header, zeep_client
from tests.waiting import wait_until


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


def _listening(pid: int, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.Process(pid).net_connections(kind="tcp")
    )


def _serving_process(pids: set[int], port: int, client_port: int) -> int | None:
    """The process holding the server end of the connection from ``client_port``."""
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.laddr.port == port and c.raddr and c.raddr.port == client_port:
                return pid
    return None


@pytest.mark.timeout(90)
def test_two_server_processes_share_the_port(soap_server_factory: Callable[..., Server]) -> None:
    """Both processes answer: every connection is asked which process holds its server
    end (the kernel spreads new connections over the SO_REUSEPORT listeners)."""
    port = free_port()
    server = soap_server_factory(port=port, processes=2)
    [child] = server.service._children
    assert child.pid is not None
    pids = {os.getpid(), child.pid}
    wait_until(lambda: _listening(child.pid, port), 60, "the second process listening")
    client, _ = zeep_client(server, "GetMeterReadings")
    served: dict[int, int] = {}  # pid -> calls it answered OK
    connections: list[http.client.HTTPConnection] = []
    try:
        for _ in range(64):  # a new connection each: a keep-alive one stays in its process
            envelope = client.create_message(
                client.service,
                "GetMeterReadings",
                Header=header("get", "MeterReadings"),
                Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}]}},
            )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connections.append(conn)
            conn.request(
                "POST",
                "/ws/GetMeterReadings",
                etree.tostring(envelope),
                {"Content-Type": "text/xml; charset=utf-8"},
            )
            response = conn.getresponse()
            body = etree.fromstring(response.read())
            assert response.status == 200
            assert body.findtext(".//{*}Reply/{*}Result") == "OK"
            assert conn.sock is not None
            pid = _serving_process(pids, port, conn.sock.getsockname()[1])
            assert pid is not None, "no process holds the server end of an open connection"
            served[pid] = served.get(pid, 0) + 1
            if len(served) == 2:
                break
    finally:
        for conn in connections:
            conn.close()
    assert set(served) == pids, served
    server.service.stop()
    assert not child.is_alive()
