"""IO for the reading client: WRAPPER frames over a blocking TCP socket with timeouts.

The only module of the client that touches a socket. Every network failure
becomes :class:`cim_schemas.errors.MeterUnreachable` (recoverable: the engine retries).
"""

from __future__ import annotations

import socket
from typing import Protocol

from cim_schemas.errors import MeterUnreachable
from hes.dlms import wrapper
from hes.dlms.wrapper import WrapperFrame


class Transport(Protocol):
    """Sends and receives APDUs of one client SAP to one logical device."""

    def send(self, client: int, apdu: bytes) -> None: ...

    def receive(self, client: int) -> bytes: ...

    def close(self) -> None: ...


class TcpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        logical_device: int,
        *,
        timeout: float = 5.0,
        connect_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.logical_device = logical_device
        self.timeout = timeout
        self._sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout or timeout)
        except OSError as exc:
            raise MeterUnreachable(f"{host}:{port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        self._sock = sock

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise MeterUnreachable(f"{self.host}:{self.port}: connection closed")
        return self._sock

    def send(self, client: int, apdu: bytes) -> None:
        try:
            self._require().sendall(WrapperFrame(client, self.logical_device, apdu).encode())
        except OSError as exc:
            self.close()
            raise MeterUnreachable(f"{self.host}:{self.port}: send failed: {exc}") from exc

    def _read_exactly(self, n: int) -> bytes:
        sock = self._require()
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                self.close()
                raise MeterUnreachable(
                    f"{self.host}:{self.port}/{self.logical_device}: no answer in "
                    f"{self.timeout:g} s"
                ) from None
            except OSError as exc:
                self.close()
                raise MeterUnreachable(f"{self.host}:{self.port}: {exc}") from exc
            if not chunk:
                self.close()
                raise MeterUnreachable(f"{self.host}:{self.port}: connection dropped")
            buf += chunk
        return bytes(buf)

    def receive(self, client: int) -> bytes:
        while True:
            try:
                source, destination, length = wrapper.parse_header(
                    self._read_exactly(wrapper.HEADER_SIZE)
                )
            except wrapper.FrameError as exc:
                self.close()
                raise MeterUnreachable(f"{self.host}:{self.port}: bad frame: {exc}") from exc
            apdu = self._read_exactly(length)
            if source == self.logical_device and destination == client:
                return apdu
            # a frame for another association on this connection: ignore it

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
