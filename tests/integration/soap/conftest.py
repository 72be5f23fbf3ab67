"""A real amihub SOAP server on a free port, zeep clients, and a test's own SOAP endpoint."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from cheroot import wsgi
from lxml import etree
from zeep import Client, Settings
from zeep.plugins import HistoryPlugin
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from adapters.soap.catalogue import SERVICES
from adapters.soap.service import SoapService
from cim_schemas import schemas
from hub.bootstrap import App, bootstrap, soap_service
from hub.security import UserSettings
from hub.settings import SoapSettings, load_settings
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
USERS = [
    UserSettings(  # type: ignore[arg-type]
        name="cis",
        password="cis-secret",
        permissions=["*:*"],
        reply_addresses=["http://127.0.0.1:*"],  # the tests' own receivers
    ),
    UserSettings(name="reader", password="reader-secret", permissions=["get:MeterReadings"]),  # type: ignore[arg-type]
    UserSettings(name="north", password="north-secret", utility="NORTH"),  # type: ignore[arg-type]
]


@dataclass
class Server:
    app: App
    service: SoapService

    @property
    def url(self) -> str:
        return self.service.url

    def wsdl(self, name: str) -> str:
        return f"{self.url}/ws/{name}?wsdl"

    def endpoint(self, name: str) -> str:
        return f"{self.url}/ws/{name}"


def start_server(database_url: str, *, meters: bool = True, **soap: Any) -> Server:
    options: dict[str, Any] = {
        "enabled": True,
        "port": free_port(),
        "threads": 6,
        "socket_timeout": 5.0,
        "max_body_bytes": 2 * 1024 * 1024,
        "delivery_first_delay": 0.05,
        "delivery_max_delay": 0.2,
        "delivery_poll_interval": 0.05,
        "delivery_max_attempts": 3,
        "delivery_timeout": 5.0,
    }
    options.update(soap)
    settings = load_settings(database_url=database_url, users=USERS, soap=SoapSettings(**options))
    app = bootstrap(settings, migrate=True)
    if meters:
        add_meters(app, "MTR-1", "MTR-2")
    service = soap_service(app)  # as amihub serve builds it ([soap] processes included)
    service.start()
    return Server(app, service)


@pytest.fixture
def soap_server_factory(sqlite_url: str) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(*, database_url: str | None = None, meters: bool = True, **soap: Any) -> Server:
        server = start_server(database_url or sqlite_url, meters=meters, **soap)
        started.append(server)
        return server

    yield make
    for server in started:
        server.service.stop()
        server.app.close()


@pytest.fixture
def server(soap_server_factory: Callable[..., Server]) -> Server:
    return soap_server_factory()


def zeep_client(
    server: Server,
    name: str,
    *,
    user: str = "cis",
    password: str = "cis-secret",
    digest: bool = False,
    basic: bool = False,
    verify: bool | str = True,
) -> tuple[Client, HistoryPlugin]:
    """A zeep client of one service, loading our WSDL from the server itself."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify; no proxies
    session.verify = verify
    wsse = None
    if basic:
        session.auth = (user, password)
    else:
        wsse = UsernameToken(user, password, use_digest=digest)
    history = HistoryPlugin()
    client = Client(
        server.wsdl(name),
        wsse=wsse,
        transport=Transport(session=session, timeout=10, operation_timeout=30),
        plugins=[history],
        settings=Settings(strict=True),
    )
    return client, history


def header(verb: str, noun: str, **extra: Any) -> dict[str, Any]:
    return {
        "Verb": verb,
        "Noun": noun,
        "Timestamp": datetime.now(UTC).replace(microsecond=0),
        "Source": "tests",
        "MessageID": str(uuid.uuid4()),
        **extra,
    }


def received_body(history: HistoryPlugin) -> etree._Element:
    """The body element of the last answer zeep received, checked against our XSDs."""
    envelope = history.last_received["envelope"]
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    element = body[0]
    if element.tag == f"{{{SOAP_ENV}}}Fault":
        detail = element.find("detail")
        assert detail is not None
        element = detail[0]
    standalone = etree.fromstring(etree.tostring(element))
    problems = schemas.validate(standalone)
    assert problems == [], problems
    return standalone


def wrapper_parts(client: Client, element: etree._Element) -> dict[str, Any]:
    """Our own wrapper element (from cim_schemas / hub.samples) as zeep objects, so the
    call goes through zeep's own serialisation of the WSDL types."""
    qname = etree.QName(element)
    xsd_element = client.get_element(f"{{{qname.namespace}}}{qname.localname}")
    value = xsd_element.parse(element, client.wsdl.types)
    return {name: value[name] for name in value if value[name] is not None}


# -- a test's own SOAP endpoint (Reply<Noun>, Send<Noun>) ---------------------------------


@dataclass
class Receiver:
    """A real SOAP endpoint on a free port that records what it receives.

    ``fail_first`` requests are answered HTTP 503 (to exercise retries);
    ``always_fail`` answers 503 forever.
    """

    port: int = field(default_factory=free_port)
    fail_first: int = 0
    always_fail: bool = False
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # path, action, body
    attempts: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        self.attempts += 1
        if self.always_fail or self.attempts <= self.fail_first:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"busy"]
        action = environ.get("HTTP_SOAPACTION", "").strip('"')
        self.received.append((environ.get("PATH_INFO", ""), action, data))
        self.arrived.set()
        envelope = etree.fromstring(data)
        body = envelope.find(f"{{{SOAP_ENV}}}Body")
        assert body is not None
        request = body[0]
        ns = etree.QName(request).namespace
        noun = (
            environ.get("PATH_INFO", "")
            .rsplit("/", 1)[-1]
            .removeprefix("Reply")
            .removeprefix("Send")
        )
        answer = (
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>'
            f'<r:{noun}ResponseMessage xmlns:r="{ns}" '
            'xmlns:m="http://iec.ch/TC57/2011/schema/message">'
            f"<r:Header><m:Verb>reply</m:Verb><m:Noun>{noun}</m:Noun></r:Header>"
            f"<r:Reply><m:Result>OK</m:Result></r:Reply></r:{noun}ResponseMessage>"
            "</soapenv:Body></soapenv:Envelope>"
        ).encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(answer)))],
        )
        return [answer]

    def start(self) -> None:
        self._server = wsgi.Server(("127.0.0.1", self.port), self, numthreads=2)
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(5)

    def bodies(self) -> list[etree._Element]:
        out = []
        for _, _, data in self.received:
            body = etree.fromstring(data).find(f"{{{SOAP_ENV}}}Body")
            assert body is not None
            out.append(body[0])
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


ALL_SERVICES = list(SERVICES)
