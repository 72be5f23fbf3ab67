"""Serving our WSDL and XSD files as they are; only soap:address is rewritten.

The WSDL of a service is read once from ``cim_schemas/wsdl``; per base URL
(scheme://host:port the client used, or ``[soap] public_url``) the address is
replaced and the result cached.
"""

from __future__ import annotations

import threading
from typing import Final

from adapters.soap.catalogue import PLACEHOLDER_ADDRESS, ServiceSpec
from cim_schemas.schemas import read_xsd

_MAX_CACHED: Final = 256


class WsdlStore:
    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._rendered: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def wsdl(self, spec: ServiceSpec, base_url: str) -> bytes:
        key = (spec.name, base_url)
        cached = self._rendered.get(key)
        if cached is not None:
            return cached
        with self._lock:
            text = self._files.get(spec.name)
            if text is None:
                text = self._files[spec.name] = spec.wsdl_file.read_bytes()
            address = f"{base_url.rstrip('/')}/ws/{spec.name}".encode()
            placeholder = f"{PLACEHOLDER_ADDRESS}{spec.name}".encode()
            rendered = text.replace(placeholder, _escape(address))
            if len(self._rendered) >= _MAX_CACHED:  # Host headers are client-chosen: bound it
                self._rendered.clear()
            self._rendered[key] = rendered
            return rendered

    @staticmethod
    def xsd(relative: str) -> bytes:
        """One of our schema files (``messages/MeterReadingsMessage.xsd``); FileNotFoundError
        for anything else (no path escapes the package)."""
        return read_xsd(relative)


def _escape(value: bytes) -> bytes:
    return (
        value.replace(b"&", b"&amp;")
        .replace(b"<", b"&lt;")
        .replace(b">", b"&gt;")
        .replace(b'"', b"&quot;")
    )
