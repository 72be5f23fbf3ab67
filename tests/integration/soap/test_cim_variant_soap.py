"""A SOAP user whose [[users]] entry names a CIM variant: its messages' payloads are
normalised before they are validated (over real HTTP, the standard wrapper, a vendor's
payload)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from lxml import etree

from adapters.soap.service import SoapService
from hub.bootstrap import App, bootstrap
from hub.security import UserSettings
from hub.settings import SoapSettings, load_settings
from mappings.load import BUILTIN_DIR
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters, reading_count

MM = "http://iec.ch/TC57/2011/MeterReadingsMessage"
MSG = "http://iec.ch/TC57/2011/schema/message"
ACTION = "http://iec.ch/TC57/2011/ReceiveMeterReadings/CreatedMeterReadings"


@pytest.fixture
def served(sqlite_url: str) -> Iterator[tuple[App, SoapService]]:
    users = [
        UserSettings(name="vendor", password="vendor-secret", cim_variant="cim-vendor-draft"),  # type: ignore[arg-type]
        UserSettings(name="typo", password="typo-secret", cim_variant="cim-vendor-drafty"),  # type: ignore[arg-type]
        UserSettings(name="plain", password="plain-secret"),  # type: ignore[arg-type]
    ]
    soap = SoapSettings(enabled=True, port=free_port(), threads=4, socket_timeout=5.0)
    app = bootstrap(load_settings(database_url=sqlite_url, users=users, soap=soap), migrate=True)
    add_meters(app, "m-1001")
    service = SoapService(app)
    service.start()
    yield app, service
    service.stop()
    app.close()


def created_readings(message_id: str) -> bytes:
    """The standard wrapper around the vendor's payload (draft namespace, MeterID, ...)."""
    sample = etree.fromstring(
        (BUILTIN_DIR / "samples" / "cim-vendor-draft-message.xml").read_bytes()
    )
    payload = sample.find("{http://www.iec.ch/TC57/2011/schema/message}Payload")
    assert payload is not None
    vendor = etree.tostring(payload[0]).decode()
    return (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soapenv:Body><mm:CreatedMeterReadings xmlns:mm="{MM}" xmlns:msg="{MSG}">'
        "<mm:Header><msg:Verb>created</msg:Verb><msg:Noun>MeterReadings</msg:Noun>"
        f"<msg:MessageID>{message_id}</msg:MessageID></mm:Header>"
        f"<mm:Payload>{vendor}</mm:Payload></mm:CreatedMeterReadings>"
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()


def send(service: SoapService, user: str, message_id: str) -> requests.Response:
    return requests.post(
        f"{service.url}/ws/ReceiveMeterReadings",
        data=created_readings(message_id),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{ACTION}"'},
        auth=(user, f"{user}-secret"),
        timeout=10,
    )


def test_the_users_variant_is_applied(served: tuple[App, SoapService]) -> None:
    app, service = served
    send(service, "plain", "soap-variant-1")  # the same payload without the variant
    assert reading_count(app) == 0  # its draft namespace: no MeterReading is read
    response = send(service, "vendor", "soap-variant-2")
    assert response.status_code == 200, response.text[:500]
    assert b"<msg:Result>OK</msg:Result>" in response.content
    assert reading_count(app) == 2


def test_a_users_unknown_variant_is_refused_1012(served: tuple[App, SoapService]) -> None:
    app, service = served
    response = send(service, "typo", "soap-variant-3")
    assert b"1012" in response.content
    assert b"cim-vendor-drafty" in response.content
    assert reading_count(app) == 0
