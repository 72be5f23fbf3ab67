"""IEC 61968-9 SOAP web services: inbound (our WSGI front door on cheroot), outbound (zeep).

Public API::

    from adapters.soap import SoapService, SoapGateway, SoapSender, SERVICES

See docs/soap.md.
"""

from adapters.soap.catalogue import OUTBOUND, SERVICES, ServiceSpec
from adapters.soap.client import SoapSender
from adapters.soap.gateway import SoapGateway
from adapters.soap.service import SoapService

__all__ = [
    "OUTBOUND",
    "SERVICES",
    "ServiceSpec",
    "SoapGateway",
    "SoapSender",
    "SoapService",
]
