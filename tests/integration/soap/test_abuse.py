"""The SOAP server under abuse (issue 12, points 7 and 9-13), over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from cim_schemas.errors import ConfigurationError
from hub.bootstrap import ensure_utility
from hub.settings import load_settings
from tests.integration.soap.conftest import Receiver, Server, header, start_server, zeep_client
from tests.integration.soap.test_bad_input import envelope, fault_of, get_body, post
from tests.integration.soap.test_delivery import async_get


def test_a_cross_utility_read_is_answered_unknown_and_audited(server: Server) -> None:
    """north (utility NORTH) asks for DEFAULT's MTR-1: unknown to it (2001, nothing
    told), and the audit log has the refused read as it has refused writes."""
    ensure_utility(server.app.uow_factory, "NORTH", "North utility")
    response = post(
        server,
        envelope(get_body(devices="<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>")),
        auth=("north", "north-secret"),
    )
    assert response.status_code == 200, response.text[:300]
    assert b"<msg:code>2001</msg:code>" in response.content
    with server.app.uow_factory() as uow:
        entries = [e for e in uow.audit.list(20) if e[2] == "refused"]
    assert [(e[1], e[3], e[4]) for e in entries] == [("north", "get MeterReadings", "MTR-1")]
    assert "not a meter of utility NORTH" in (entries[0][5] or "")
    response = post(  # a meter that exists nowhere is not an audited refusal
        server,
        envelope(get_body(devices="<p:EndDevice><p:mRID>NOPE</p:mRID></p:EndDevice>")),
        auth=("north", "north-secret"),
    )
    assert b"<msg:code>2001</msg:code>" in response.content
    with server.app.uow_factory() as uow:
        assert len([e for e in uow.audit.list(20) if e[2] == "refused"]) == 1


def test_a_user_with_an_empty_password_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="user 'cis' has an empty password"):
        load_settings(users=[{"name": "cis", "password": ""}])
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path}/amihub.db"\n'
        "[soap]\nenabled = true\nport = 0\n"
        '[[users]]\nname = "ok"\npassword = "secret"\n'
        '[[users]]\nname = "cis"\npassword = "  "\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "user 'cis' has an empty password" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "amihub.db").exists()


def _period(days: int) -> str:
    from datetime import timedelta

    from tests.unit.hub.conftest import START

    end = START + timedelta(days=days)
    return (
        "<p:TimeSchedule><p:scheduleInterval>"
        f"<p:end>{end.isoformat()}</p:end><p:start>{START.isoformat()}</p:start>"
        "</p:scheduleInterval></p:TimeSchedule>"
    )


def test_a_get_over_the_meter_days_limit_gets_a_fault_naming_it(
    soap_server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIHUB_LIMITS__MAX_GET_METER_DAYS", "10")
    server = soap_server_factory()
    two = "<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>" + (
        "<p:EndDevice><p:mRID>MTR-2</p:mRID></p:EndDevice>"
    )
    assert post(server, envelope(get_body(devices=two + _period(5)))).status_code == 200
    for devices, asked in ((two + _period(6), "12"), (two, "732")):  # no period: 366 days each
        response = post(server, envelope(get_body(devices=devices)))
        faultcode, text, errors = fault_of(response)
        assert faultcode.endswith("Client")
        assert errors[0][0] == "1003"
        assert f"asks {asked} meter-days" in text
        assert "[limits] max_get_meter_days" in text
        assert "at most 10 " in text
    with server.app.uow_factory() as uow:  # refused as any refusal: dead-lettered
        assert [d.error_code for d in uow.dead_letters.list()] == ["1003", "1003"]


def test_a_reply_address_outside_the_users_allow_list_is_refused_and_audited(
    server: Server, receiver: Receiver
) -> None:
    """cis may be called back at http://127.0.0.1:* only (conftest): an internal
    address elsewhere, or any address for reader (no reply_addresses), is refused as a
    whole (1010, nothing queued, nothing posted) and audited; an allowed one is served."""
    from zeep.exceptions import Fault

    for user, password, address in (
        ("cis", "cis-secret", "http://169.254.169.254/latest/meta-data/"),
        ("cis", "cis-secret", "https://127.0.0.1:1/ws/ReplyMeterReadings"),  # other scheme
        ("reader", "reader-secret", f"{receiver.url}/ws/ReplyMeterReadings"),
    ):
        client, _ = zeep_client(server, "GetMeterReadings", user=user, password=password)
        head = header("get", "MeterReadings", AsyncReplyFlag=True, ReplyAddress=address)
        with pytest.raises(Fault) as refused:
            client.service.GetMeterReadings(
                Header=head, Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}]}}
            )
        assert "1010" in str(refused.value.message)
        assert "reply addresses allowed" in str(refused.value.message)
        with server.app.uow_factory() as uow:
            entry = uow.audit.list(1)[0]
            assert uow.outbox.pending_count("soap") == 0
        assert entry[1:4] == (user, "refused", "get MeterReadings")
        assert entry[4] == head["MessageID"]
        assert address in (entry[5] or "")
    async_get(server, f"{receiver.url}/ws/ReplyMeterReadings")  # allowed: served
    assert receiver.arrived.wait(15)
    assert len(receiver.received) == 1


def test_a_subscriber_url_no_user_allows_is_refused_at_start(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="matches no user's reply_addresses"):
        start_server(sqlite_url, subscribers={"MeterReadings": ["http://10.0.0.1/internal"]})


class SlowClients:
    """``count`` connections to the server, each sending one byte of a request header a
    second, from one thread, for at most ``seconds``; counts the ones the server closed."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        self.port = port
        self.count = count
        self.seconds = seconds
        self.opened = 0
        self.closed_by_server = 0
        self.answers: list[bytes] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        assert self.ready.wait(30), "could not open the slow connections"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        """A quarter of them trickle their headers, the others (headers sent whole) a
        body: by Content-Length, chunked, or after ``Expect: 100-continue``."""
        post = b"POST /ws/GetMeterReadings HTTP/1.1\r\nHost: slow\r\n"
        heads = [
            b"",
            post + b"Content-Length: 5000\r\n\r\n",
            post + b"Transfer-Encoding: chunked\r\n\r\n",
            post + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
        ]
        trickles = [
            post + b"X-Slow: " + b"a" * 64,
            b"a" * 5000,
            b"1388\r\n" + b"a" * 5000,
            b"a" * 5000,
        ]
        sockets: dict[socket.socket, tuple[int, int]] = {}
        try:
            for n in range(self.count):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                if heads[n % 4]:
                    s.sendall(heads[n % 4])
                s.setblocking(False)
                sockets[s] = (n % 4, 0)
            self.opened = len(sockets)
            self.ready.set()
            deadline = time.monotonic() + self.seconds
            while sockets and not self._stop.is_set() and time.monotonic() < deadline:
                for s, (kind, sent) in list(sockets.items()):
                    try:
                        s.send(trickles[kind][sent : sent + 1])
                        sockets[s] = (kind, sent + 1)
                        data = s.recv(4096)  # nothing, until the server gives up on us
                        if data == b"HTTP/1.1 100 Continue\r\n\r\n":  # to Expect: go on
                            continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    self.answers.append(data.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""))
                    self.closed_by_server += 1
                    del sockets[s]
                    s.close()
                self._stop.wait(1.0)
        finally:
            self.ready.set()
            for s in sockets:
                s.close()


def test_slow_clients_do_not_hold_the_workers(
    soap_server_factory: Callable[..., Server],
) -> None:
    """200 connections sending one byte a second, of their headers or of their body
    (by Content-Length, over the gate's memory buffer; chunked; after Expect:
    100-continue), the server having 6 worker threads: normal gets are answered within
    a second all along; the slow ones are answered 408 and closed after request_timeout."""
    server = soap_server_factory(request_timeout=6.0, request_buffer_bytes=1000)
    session = requests.Session()

    def get() -> requests.Response:
        return session.post(
            server.endpoint("GetMeterReadings"),
            data=envelope(get_body()),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            auth=("cis", "cis-secret"),
            timeout=10,
        )

    assert get().status_code == 200  # the first get (connection, pool) is not measured
    latencies: list[float] = []
    with SlowClients(server.service.port, 200, seconds=12) as slow:
        assert slow.opened == 200
        started = time.monotonic()
        while time.monotonic() - started < 9:  # past request_timeout: the gate closes them
            before = time.monotonic()
            response = get()
            latencies.append(time.monotonic() - before)
            assert response.status_code == 200
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while slow.closed_by_server < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
    latencies.sort()
    print(
        f"{len(latencies)} gets while 200 slow connections were held: "
        f"median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms; {slow.closed_by_server} slow ones closed"
    )
    assert latencies[-1] < 1.0
    assert slow.closed_by_server == 200
    assert all(a.startswith(b"HTTP/1.1 408") or a == b"" for a in slow.answers)
    assert any(a.startswith(b"HTTP/1.1 408") for a in slow.answers)


@pytest.mark.parametrize(
    ("name", "problem"),
    [("x" * 201, "at most 200 characters"), ("eve\nINFO forged", "should match pattern")],
)
def test_user_names_are_bounded_in_the_settings(name: str, problem: str) -> None:
    """A configured user name fits the audit and message log (200 characters) and holds
    no control character."""
    with pytest.raises(ConfigurationError, match=problem):
        load_settings(users=[{"name": name, "password": "secret"}])


def test_silent_tls_clients_do_not_hold_the_server(
    soap_server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """50 clients connect to the HTTPS port and send no ClientHello (cheroot did the
    handshake blocking, in its accepting thread): gets over HTTPS are answered within a
    second meanwhile; the silent ones are closed after request_timeout."""
    from tests.integration.soap.test_security import _self_signed

    cert, key = _self_signed(tmp_path)
    server = soap_server_factory(tls_cert=cert, tls_key=key, request_timeout=4.0)
    session = requests.Session()
    session.trust_env = False
    session.verify = str(cert)

    def get() -> requests.Response:
        return session.post(
            server.endpoint("GetMeterReadings"),
            data=envelope(get_body()),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            auth=("cis", "cis-secret"),
            timeout=10,
        )

    assert get().status_code == 200
    silent = [socket.create_connection(("127.0.0.1", server.service.port)) for _ in range(50)]
    try:
        latencies = []
        fresh = requests.Session()  # a new connection each time: a handshake each
        fresh.trust_env = False
        fresh.verify = str(cert)
        started = time.monotonic()
        while time.monotonic() - started < 5:
            before = time.monotonic()
            response = fresh.post(
                server.endpoint("GetMeterReadings"),
                data=envelope(get_body()),
                headers={"Content-Type": "text/xml; charset=utf-8", "Connection": "close"},
                auth=("cis", "cis-secret"),
                timeout=10,
            )
            latencies.append(time.monotonic() - before)
            assert response.status_code == 200
        print(f"{len(latencies)} HTTPS gets beside 50 silent TLS clients: max {max(latencies):.3f}")
        assert max(latencies) < 1.0
        for s in silent:  # closed by the server after request_timeout
            s.settimeout(10)
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b""
    finally:
        for s in silent:
            s.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_large_body_waits_in_a_file_and_is_answered(
    soap_server_factory: Callable[..., Server], chunked: bool
) -> None:
    """A 1.5 MB request over a gate buffer of 1,000 bytes: the body waits in the gate's
    temporary file, the worker reads it whole, the get is answered."""
    server = soap_server_factory(request_buffer_bytes=1000)
    body = envelope("<!--" + "x" * 1_500_000 + "-->" + get_body())

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    response = requests.post(
        server.endpoint("GetMeterReadings"),
        data=pieces() if chunked else body,
        headers={"Content-Type": "text/xml; charset=utf-8"},
        auth=("cis", "cis-secret"),
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert b"<msg:Result>OK</msg:Result>" in response.content
