"""The request gate: no worker thread waits for a slow client (issue 12, point 7).

cheroot hands every new connection to a worker thread at once, and a worker reads the
request line and headers with blocking reads whose timeout (``socket_timeout``)
starts again with every byte: twenty clients sending one header byte a second held
every worker for as long as they liked, and nobody else was served.

:class:`GatedServer` is cheroot's WSGI server with another connection manager: its
selector thread reads what each connection sends, without blocking, into the
connection's own buffer until the request's headers are complete and, when the
request announces a ``Content-Length`` up to ``buffer_bytes``, its body too. Only then
does a worker get the connection (reading first from that buffer, then from the
socket). A request that is not complete within ``request_timeout`` of its first byte
(of its connection, for a new one) is answered ``408 Request Timeout`` and closed. Slow
clients then cost a socket and at most ``buffer_bytes`` each, never a worker. A body
larger than ``buffer_bytes``, chunked, or after ``Expect: 100-continue`` is read by
the worker (``socket_timeout`` per read), as before.

Kept-alive connections go through the same gate for their next request. With TLS
(:class:`GatedTLSAdapter`) the gate also does the handshake, without blocking, on the
connection's readable events (cheroot did it blocking in its accepting thread: a client
that connected and sent no ClientHello stopped every new connection for
``socket_timeout``); ``request_timeout`` counts from the accept, handshake included.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from cheroot import connections, wsgi
from cheroot.makefile import StreamReader
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger("amihub.soap")

#: headers longer than this go to a worker at once; cheroot refuses them (413)
MAX_HEADER_BYTES: Final = 64 * 1024
#: the listening socket's backlog (the kernel caps it at net.core.somaxconn)
LISTEN_BACKLOG: Final = 1024
TIMEOUT_ANSWER: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class _BufferedSocketIO(socket.SocketIO):
    """The socket's raw reader, giving what the gate read before the socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "rb")
        self.early = bytearray()

    def readinto(self, b: Any) -> int | None:
        if self.early:
            n = min(len(b), len(self.early))
            b[:n] = self.early[:n]
            del self.early[:n]
            return n
        return super().readinto(b)


class _GatedReader(StreamReader):
    """cheroot's socket reader over :class:`_BufferedSocketIO`."""

    def __init__(self, sock: socket.socket, bufsize: int) -> None:
        self.early_io = _BufferedSocketIO(sock)
        buffered_reader: Any = StreamReader.__mro__[1]  # _pyio.BufferedReader (cheroot's base)
        buffered_reader.__init__(self, self.early_io, bufsize)
        self.bytes_read = 0


def request_complete(data: bytes | bytearray, buffer_bytes: int) -> bool:
    """Whether a worker may take the request whose first bytes are ``data``: its
    headers are in, and its body when it has a Content-Length up to ``buffer_bytes``
    (a larger, chunked, or ``Expect: 100-continue`` body is read by the worker; a bad
    Content-Length is the worker's to refuse)."""
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 9112: empty lines before a request
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return len(data) - start > MAX_HEADER_BYTES
    length: int | None = None
    for line in bytes(data[start:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return True
        if name == b"expect" and b"100-continue" in value.lower():
            return True
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return True
    if length is None or length < 0 or length > buffer_bytes:
        return True
    return len(data) - (end + 4) >= length


class GatedConnections(connections.ConnectionManager):
    """cheroot's connection manager, handing a worker only complete requests."""

    # cheroot's own (not in its type stubs)
    _selector: Any
    _stop_requested: bool
    _remove_invalid_sockets: Callable[[], None]
    _from_server_socket: Callable[[Any], Any]

    def __init__(self, server: Any, *, request_timeout: float, buffer_bytes: int) -> None:
        super().__init__(server)
        self.request_timeout = request_timeout
        self.buffer_bytes = buffer_bytes
        #: connections reading a request: socket fd -> (connection, when it began)
        self._pending: dict[int, tuple[Any, float]] = {}
        self.timed_out = 0

    @property
    def _num_connections(self) -> int:
        # cheroot limits kept-alive connections by this count: the gate's are not idle
        return len(self._selector) - 1 - len(self._pending)

    def put(self, conn: Any) -> None:
        """A connection back from a worker (kept alive): its next request is gated."""
        conn.last_used = time.time()
        if conn.rfile.has_data() or getattr(conn.rfile, "early_io", None) is None:
            super().put(conn)
            return
        if conn.rfile.early_io.early:  # read ahead by the gate: a pipelined request
            self._waiting(conn, time.time())
            return
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def _admit(self, conn: Any) -> None:
        if isinstance(conn.socket, ssl.SSLSocket):
            conn.tls_handshaken = False  # GatedTLSAdapter: the gate does the handshake
        conn.rfile = _GatedReader(conn.socket, conn.rbufsize)
        now = time.time()
        conn.last_used = now
        self._pending[conn.socket.fileno()] = (conn, now)
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def _waiting(self, conn: Any, began: float) -> None:
        """A kept-alive connection whose next request is (partly) read already."""
        if request_complete(conn.rfile.early_io.early, self.buffer_bytes):
            self.server.process_conn(conn)
            return
        self._pending[conn.socket.fileno()] = (conn, began)
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def _handshake(self, fd: int, conn: Any) -> bool:
        """One step of a TLS handshake; whether it is done (False: wait, or dropped)."""
        sock = conn.socket
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", getattr(conn, "remote_addr", "?"), exc)
            self._drop(fd, conn)
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)
        conn.ssl_env = self.server.ssl_adapter.get_environ(sock)
        conn.tls_handshaken = True
        return True

    def _readable(self, fd: int, conn: Any) -> None:
        if getattr(conn, "tls_handshaken", True) is False and not self._handshake(fd, conn):
            return
        early = getattr(conn.rfile, "early_io", None)
        if early is None:  # not gated (cannot happen): as cheroot does
            self._selector.unregister(fd)
            self.server.process_conn(conn)
            return
        sock = conn.socket
        try:
            received = _receive(sock)
        except OSError:
            received = b""
        if received is None:  # a TLS record not complete yet
            return
        if not received:  # closed by the client (or broken)
            self._drop(fd, conn)
            return
        if fd not in self._pending:
            self._pending[fd] = (conn, time.time())  # a kept-alive connection's next request
        early.early += received
        if request_complete(early.early, self.buffer_bytes):
            self._selector.unregister(fd)
            del self._pending[fd]
            conn.last_used = time.time()
            self.server.process_conn(conn)

    def _drop(self, fd: int, conn: Any, answer: bytes = b"") -> None:
        self._pending.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(fd)
        if answer:
            with contextlib.suppress(OSError, ValueError):
                conn.socket.setblocking(False)
                conn.socket.send(answer)
        with contextlib.suppress(OSError):
            conn.close()

    def _expire_pending(self, now: float) -> None:
        late = [
            (fd, conn)
            for fd, (conn, began) in self._pending.items()
            if now - began > self.request_timeout
        ]
        for fd, conn in late:
            self._drop(fd, conn, TIMEOUT_ANSWER)
        if late:
            self.timed_out += len(late)
            log.warning(
                "closed %d connection(s) that did not send a whole request within %.0f s "
                "([soap] request_timeout)",
                len(late),
                self.request_timeout,
            )

    def _run(self, expiration_interval: float) -> None:
        last_check = time.time()
        tick = min(expiration_interval, 0.25)
        while not self._stop_requested:
            try:
                active = self._selector.select(timeout=tick)
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, conn in active:
                if conn is self.server:
                    new = self._from_server_socket(self.server.socket)
                    if new is not None:
                        self._admit(new)
                else:
                    self._readable(fd, conn)
            now = time.time()
            if now - last_check > tick:
                self._expire_pending(now)
                # idle kept-alive connections: cheroot's rule (``socket_timeout``)
                self._expire(threshold=now - self.server.timeout)
                last_check = now

    def _expire(self, threshold: float) -> None:
        idle = [
            (fd, conn)
            for fd, conn in self._selector.connections
            if conn is not self.server and fd not in self._pending and conn.last_used < threshold
        ]
        for fd, conn in idle:
            self._selector.unregister(fd)
            conn.close()


def _receive(sock: socket.socket) -> bytes | None:
    """What the client sent so far, without waiting (None: a TLS record is incomplete)."""
    if isinstance(sock, ssl.SSLSocket):
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            data = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return data or None
                if not chunk:
                    return data
                data += chunk
                if not sock.pending():
                    return data
        finally:
            sock.settimeout(timeout)
    return sock.recv(65536)


class GatedTLSAdapter(BuiltinSSLAdapter):
    """cheroot's TLS adapter, leaving the handshake to the gate (non-blocking)."""

    context: ssl.SSLContext

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        wrapped = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return wrapped, {}


class GatedServer(wsgi.Server):
    """cheroot's WSGI server with :class:`GatedConnections`."""

    def __init__(
        self, *args: Any, request_timeout: float, buffer_bytes: int, **kwargs: Any
    ) -> None:
        # cheroot listens with a backlog of 5: a burst of connections (or a client
        # connecting while the accepting thread waits for the GIL) lost SYNs and waited
        # a second for the retransmission
        kwargs.setdefault("request_queue_size", LISTEN_BACKLOG)
        super().__init__(*args, **kwargs)
        self.request_timeout = request_timeout
        self.buffer_bytes = buffer_bytes
        self.max_request_header_size = MAX_HEADER_BYTES

    _connections: Any

    def prepare(self) -> None:
        super().prepare()
        plain = self._connections
        self._connections = GatedConnections(
            self, request_timeout=self.request_timeout, buffer_bytes=self.buffer_bytes
        )
        plain._selector.close()  # cheroot's own manager, never run
