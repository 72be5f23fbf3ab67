# mypy: disable-error-code="no-untyped-call,misc"
"""Buffered frame reading for py-amqp over plain TCP.

py-amqp's ``TCPTransport`` reads each frame part with ``recv`` of the exact size
(header, payload, frame-end: at least two system calls a frame, three frames a
message) and its ``blocking_read`` sets and restores the socket timeout around every
frame. :class:`BufferedTCPTransport` reads with ``recv_into`` into one large buffer
and serves frames from it by offset; :class:`BufferedConnection` parses a frame that
is already complete in the buffer without touching the socket or its timeout.

Wiring: :class:`BufferedTransport` (a kombu pyamqp transport) is passed as
``transport=`` to :class:`kombu.Connection` for ``amqp://`` URLs; TLS (``amqps://``)
keeps py-amqp's own ``SSLTransport``. Nothing here polls the socket for readability:
amihub's loops call ``drain_events(timeout=...)``, which consults the buffer first.
kombu's event-loop reader (``on_readable``) drains until a read times out, so it
empties the buffer too.
"""

from __future__ import annotations

import errno
from struct import Struct
from typing import Any

import amqp.transport
from amqp.exceptions import UnexpectedFrame
from kombu.transport import pyamqp

#: initial receive buffer; grows if a frame is larger (frame_max is 128 KiB by default)
CHUNK = 256 * 1024

_HEADER = Struct(">BHI")
_FRAME_END = 0xCE
_RETRY = (errno.EAGAIN, errno.EINTR)

Frame = tuple[int, int, bytes]


class BufferedTCPTransport(amqp.transport.TCPTransport):
    """A plain TCP transport that receives in large chunks and parses frames in place.

    Unconsumed bytes live in ``_buf[_start:_end]``. A timeout or an interrupted read
    leaves what was received in the buffer, so the next read resumes the frame; a
    closed socket raises ``OSError`` and marks the transport disconnected.
    """

    _buf: bytearray
    _view: memoryview
    _start: int
    _end: int

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._recv_into = self.sock.recv_into

    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return self._end - self._start

    def buffered_frame(self) -> Frame | None:
        """The next frame if it is complete in the buffer (no socket access), else None."""
        start = self._start
        available = self._end - start
        if available < 8:
            return None
        frame_type, channel, size = _HEADER.unpack_from(self._buf, start)
        if available < size + 8:
            return None
        return self._take(frame_type, channel, size)

    def _take(self, frame_type: int, channel: int, size: int) -> Frame:
        start = self._start + 7
        end = start + size
        frame_end = self._buf[end]
        payload = self._view[start:end].tobytes()
        if end + 1 == self._end:
            self._start = self._end = 0  # all consumed: start again at the front
        else:
            self._start = end + 1
        if frame_end != _FRAME_END:
            self.connected = False
            raise UnexpectedFrame(
                f"Received frame_end {frame_end:#04x} while expecting 0xce "
                f"(frame type {frame_type}, channel {channel}, size {size})"
            )
        return frame_type, channel, payload

    def read_frame(self, unpack: Any = None) -> Frame:
        """Parse the next frame, receiving until it is complete (see py-amqp's)."""
        try:
            if self._end - self._start < 7:
                self._fill(7, initial=True)
            frame_type, channel, size = _HEADER.unpack_from(self._buf, self._start)
            if self._end - self._start < size + 8:
                self._fill(size + 8, initial=False)
        except TimeoutError:
            raise
        except OSError as exc:
            if exc.errno not in amqp.transport._UNAVAIL:
                self.connected = False
            raise
        return self._take(frame_type, channel, size)

    def _fill(self, need: int, *, initial: bool) -> None:
        """Receive until ``need`` bytes are buffered from ``_start``."""
        if self._start + need > len(self._buf):
            self._make_room(need)
        view = self._view
        recv_into = self._recv_into
        while self._end - self._start < need:
            try:
                got = recv_into(view[self._end :])
            except OSError as exc:
                if exc.errno in _RETRY:
                    if initial and self.raise_on_initial_eintr and self._end == self._start:
                        raise TimeoutError() from exc
                    continue
                raise
            if not got:
                raise OSError("Server unexpectedly closed connection")
            self._end += got

    def _make_room(self, need: int) -> None:
        """Move the pending bytes to the front, growing the buffer if ``need`` exceeds it."""
        pending = self._end - self._start
        if need > len(self._buf):
            grown = bytearray(max(need, 2 * len(self._buf)))
            grown[:pending] = self._view[self._start : self._end]
            self._view.release()
            self._buf = grown
            self._view = memoryview(grown)
        else:
            self._buf[:pending] = self._view[self._start : self._end].tobytes()
        self._start = 0
        self._end = pending


class BufferedConnection(pyamqp.Connection):
    """py-amqp connection using :class:`BufferedTCPTransport` for plain TCP."""

    def Transport(  # noqa: N802 - py-amqp's factory name
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> amqp.transport._AbstractTransport:
        if ssl:
            return super().Transport(
                host,
                connect_timeout,
                ssl=ssl,
                read_timeout=read_timeout,
                write_timeout=write_timeout,
                socket_settings=socket_settings,
                **kwargs,
            )
        return BufferedTCPTransport(
            host,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            socket_settings=socket_settings,
            **kwargs,
        )

    def blocking_read(self, timeout: float | None = None) -> Any:
        transport = self.transport
        if isinstance(transport, BufferedTCPTransport):
            frame = transport.buffered_frame()
            if frame is not None:  # complete in the buffer: no socket, no settimeout
                return self.on_inbound_frame(frame)
        with transport.having_timeout(timeout):
            frame = transport.read_frame()
        return self.on_inbound_frame(frame)


class BufferedTransport(pyamqp.Transport):
    """kombu's py-amqp transport with :class:`BufferedConnection`.

    kombu's event-loop reader needs no change: after each readable event it calls
    ``drain_events(timeout=0)`` again and again until one times out, and each call
    serves buffered frames before it touches the socket."""

    Connection = BufferedConnection
