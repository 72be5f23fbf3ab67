"""Outbound SOAP with zeep: async replies to Reply<Noun>, events to Send<Noun>.

Items come from the transactional outbox (channel ``soap``); the dispatcher in
:mod:`hub.outbox` retries what raises :class:`~cim_schemas.errors.TransportUnavailable`
with backoff and dead-letters after the configured attempts. The body is our own
already rendered message element; zeep posts it in a SOAP envelope with the
operation's soapAction from our WSDL and parses the answer (a Fault raises).

Which failures retry: connection errors, timeouts, HTTP 408/429/5xx and SOAP
``Server`` faults. A SOAP ``Client`` fault or another 4xx is permanent (the same
message would be refused again): dead-lettered at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

import requests
from lxml import etree
from zeep import Client, Settings, Transport
from zeep.exceptions import Fault as ZeepFault
from zeep.exceptions import TransportError

from adapters.soap.catalogue import OUTBOUND, ServiceSpec
from cim_schemas.errors import PermanentError, TransportUnavailable
from cim_schemas.xml import parse_bytes
from mdm.ports import OutboxItem

log = logging.getLogger("amihub.soap.client")

SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
CHANNEL: Final = "soap"


class DeliveryRefused(PermanentError):
    """The peer refused the message itself: retrying would not help."""


class SoapSender:
    """``send(item)`` for :class:`hub.outbox.OutboxDispatcher`."""

    def __init__(self, timeout: float = 10.0, verify: bool | str = True) -> None:
        self.timeout = timeout
        self.verify = verify
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    def client(self, spec: ServiceSpec) -> Client:
        with self._lock:
            client = self._clients.get(spec.name)
            if client is None:
                session = requests.Session()
                session.verify = self.verify
                transport = Transport(  # type: ignore[no-untyped-call]
                    session=session, timeout=self.timeout, operation_timeout=self.timeout
                )
                client = Client(  # type: ignore[no-untyped-call]
                    str(spec.wsdl_file),
                    transport=transport,
                    settings=Settings(strict=False, xml_huge_tree=False),
                )
                self._clients[spec.name] = client
            return client

    def send(self, item: OutboxItem) -> None:
        name = item.headers.get("service", "")
        spec = OUTBOUND.get(name)
        if spec is None:
            raise DeliveryRefused(f"outbox item {item.id} names no known service ({name!r})")
        operation_name = item.headers.get("operation") or spec.operations[0].name
        client = self.client(spec)
        binding = client.wsdl.services[spec.name].ports[spec.port].binding
        try:
            operation = binding.get(operation_name)
        except (KeyError, ValueError):
            raise DeliveryRefused(f"{spec.name} has no operation {operation_name!r}") from None
        body = parse_bytes(item.body).getroot()
        env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV})
        etree.SubElement(env, f"{{{SOAP_ENV}}}Body").append(body)
        headers = {
            "SOAPAction": f'"{spec.soap_action(operation_name)}"',
            "Content-Type": "text/xml; charset=utf-8",
        }
        try:
            response = client.transport.post_xml(item.destination, env, headers)
        except requests.RequestException as exc:
            raise TransportUnavailable(f"{item.destination}: {exc}") from exc
        status = int(response.status_code)
        if status in (408, 429) or status >= 502:
            raise TransportUnavailable(f"{item.destination} answered HTTP {status}")
        try:
            binding.process_reply(client, operation, response)
        except ZeepFault as fault:
            code = str(fault.code or "")
            text = f"{item.destination} answered a SOAP Fault {code}: {fault.message}"
            if code.endswith("Server") or code.endswith("Receiver"):
                raise TransportUnavailable(text) from None
            raise DeliveryRefused(text) from None
        except TransportError as exc:
            if status >= 500:
                raise TransportUnavailable(f"{item.destination}: {exc}") from None
            raise DeliveryRefused(f"{item.destination}: {exc}") from None
        except Exception as exc:  # zeep raises many parse errors for a garbled answer
            if status == 200:
                log.warning(
                    "unparsable answer from %s to outbox item %s: %s",
                    item.destination,
                    item.id,
                    exc,
                )
                return
            raise TransportUnavailable(f"{item.destination}: {type(exc).__name__}: {exc}") from None
        log.info(
            "delivered %s %s (%s) to %s", item.verb, item.noun, operation_name, item.destination
        )
