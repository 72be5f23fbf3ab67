"""The SOAP server fixtures (docs/master-data.md's curl example runs against one)."""

from tests.integration.soap.conftest import soap_server_factory

__all__ = ["soap_server_factory"]
