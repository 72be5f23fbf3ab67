"""The request gate: no worker thread waits for a slow client (issue 12, point 7).

cheroot hands every new connection to a worker thread at once, and a worker reads the
request line and headers with blocking reads whose timeout (``socket_timeout``)
starts again with every byte: twenty clients sending one header byte a second held
every worker for as long as they liked, and nobody else was served.

:class:`GatedServer` is cheroot's WSGI server with another connection manager: its
selector thread reads what each connection sends, without blocking, into the
connection's own buffer until the request is whole: its headers, and its body up to
``max_body`` bytes, by its Content-Length or its chunked framing (a client waiting
for ``100 Continue`` gets it from the gate, and the worker no second one). The first
``buffer_bytes`` are kept in memory, the rest of a body in a temporary file. Only
then does a worker get the connection (reading first from that buffer, then from the
socket). A request that is not whole within ``request_timeout`` of its first byte (of
its connection, for a new one) is answered ``408 Request Timeout`` and closed. Slow
clients then cost a socket, at most ``buffer_bytes`` of memory and ``max_body`` of
disk each, never a worker. A body over ``max_body`` or with a bad Content-Length goes
to the worker at once, which refuses it unread.

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
import tempfile
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


class _ChunkScanner:
    """Follows a chunked body (RFC 9112 7.1) as it arrives: where it ends, its size."""

    def __init__(self) -> None:
        self.line = bytearray()  # a chunk-size line or a trailer line being read
        self.left = 0  # data bytes of the current chunk still to come
        self.crlf = 0  # CRLF bytes after a chunk's data still to come
        self.trailers = False  # after the last chunk: trailer lines until an empty one
        self.size = 0
        self.done = False
        self.bad = False

    def feed(self, data: bytes | bytearray) -> None:
        i, n = 0, len(data)
        while i < n and not self.done and not self.bad:
            if self.left:
                step = min(self.left, n - i)
                self.left -= step
                i += step
                continue
            if self.crlf:
                step = min(self.crlf, n - i)
                self.crlf -= step
                i += step
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self.line += data[i:]
                self.bad = len(self.line) > 4096
                return
            self.line += data[i:end]
            i = end + 1
            line = bytes(self.line).strip()
            self.line.clear()
            if self.trailers:
                self.done = not line
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self.bad = True
                return
            if size == 0:
                self.trailers = True
            else:
                self.size += size
                self.left, self.crlf = size, 2


class _BufferedSocketIO(socket.SocketIO):
    """The socket's raw reader, giving what the gate read before the socket: in memory
    up to the gate's buffer, the rest of a body in a temporary file."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "rb")
        self.early = bytearray()
        self.spill: Any = None  # a temporary file, when a body outgrew the memory buffer
        self.spill_read = 0
        self.reset()

    def reset(self) -> None:
        """Ready for the next request of the connection (what is left over stays)."""
        self.head_end: int | None = None  # where the body starts in ``early``
        self.body_left: int | None = None  # Content-Length bytes still to come
        self.chunks: _ChunkScanner | None = None
        self.ready = False

    def add(self, data: bytes, memory_bytes: int) -> None:
        if self.spill is None and (
            self.head_end is None or len(self.early) + len(data) <= memory_bytes
        ):
            self.early += data
            return
        if self.spill is None:
            # closed when read out, or with the connection
            self.spill = tempfile.TemporaryFile(prefix="amihub-request-")  # noqa: SIM115
        self.spill.seek(0, 2)
        self.spill.write(data)

    def readinto(self, b: Any) -> int | None:
        if self.early:
            n = min(len(b), len(self.early))
            b[:n] = self.early[:n]
            del self.early[:n]
            return n
        if self.spill is not None:
            self.spill.seek(self.spill_read)
            n = self.spill.readinto(b)
            if n:
                self.spill_read += n
                return int(n)
            self.spill.close()
            self.spill, self.spill_read = None, 0
        return super().readinto(b)

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()
            self.spill = None
        super().close()


class _GatedReader(StreamReader):
    """cheroot's socket reader over :class:`_BufferedSocketIO`."""

    def __init__(self, sock: socket.socket, bufsize: int) -> None:
        self.early_io = _BufferedSocketIO(sock)
        buffered_reader: Any = StreamReader.__mro__[1]  # _pyio.BufferedReader (cheroot's base)
        buffered_reader.__init__(self, self.early_io, bufsize)
        self.bytes_read = 0


CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def arrived(io: _BufferedSocketIO, data: bytes, *, memory_bytes: int, max_body: int) -> bytes:
    """Take ``data`` of the request arriving on ``io``; ``io.ready`` once a worker may
    take it: its headers are in, and its whole body (Content-Length or chunked) up to
    ``max_body`` bytes (a larger one is the worker's to refuse unread, as a bad
    Content-Length). Returns what to answer at once: ``100 Continue`` to a client
    that waits for it (its Expect line is taken out: the worker does not send a second)."""
    body = b""
    if io.head_end is None:
        io.early += data
        start = 0
        while io.early.startswith(b"\r\n", start):  # RFC 9112: empty lines before a request
            start += 2
        end = io.early.find(b"\r\n\r\n", start)
        if end < 0:
            io.ready = len(io.early) - start > MAX_HEADER_BYTES  # cheroot answers 413
            return b""
        answer = _headers(io, start, end + 4, max_body)
        if io.ready or io.head_end is None:
            io.ready = True
            return answer
        body = bytes(io.early[io.head_end :])
    else:
        answer = b""
        body = data
        io.add(data, memory_bytes)
    if io.chunks is not None:
        io.chunks.feed(body)
        io.ready = io.chunks.done or io.chunks.bad or io.chunks.size > max_body
    elif io.body_left is not None:
        io.body_left -= len(body)
        io.ready = io.body_left <= 0
    return answer


def _headers(io: _BufferedSocketIO, start: int, end: int, max_body: int) -> bytes:
    """The headers are in ``io.early[start:end]``: what the body will be."""
    lines = bytes(io.early[start : end - 4]).split(b"\r\n")
    length: int | None = None
    chunked = expect = False
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"expect" and value.strip().lower() == b"100-continue":
            expect = True
            continue
        kept.append(line)
        if key == b"transfer-encoding":
            chunked = value.strip().lower().endswith(b"chunked")
        elif key == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return b""  # head_end unset: the worker refuses it
    if not chunked and (length is None or length < 0 or length > max_body):
        return b""  # nothing to wait for, or the worker's to refuse
    if expect:  # answered here; the worker must not answer again
        head = b"\r\n".join(kept) + b"\r\n\r\n"
        io.early[start:end] = head
        end = start + len(head)
    io.head_end = end
    if chunked:
        io.chunks = _ChunkScanner()
    else:
        io.body_left = length
    return CONTINUE if expect else b""


class GatedConnections(connections.ConnectionManager):
    """cheroot's connection manager, handing a worker only complete requests."""

    # cheroot's own (not in its type stubs)
    _selector: Any
    _stop_requested: bool
    _remove_invalid_sockets: Callable[[], None]
    _from_server_socket: Callable[[Any], Any]

    def __init__(
        self, server: Any, *, request_timeout: float, buffer_bytes: int, max_body: int
    ) -> None:
        super().__init__(server)
        self.request_timeout = request_timeout
        self.buffer_bytes = buffer_bytes
        self.max_body = max_body
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
        io: _BufferedSocketIO | None = getattr(conn.rfile, "early_io", None)
        if io is None:
            super().put(conn)
            return
        io.reset()
        if conn.rfile.has_data():  # a pipelined request, partly in the worker's buffer
            super().put(conn)
            return
        left = bytes(io.early)  # read ahead by the gate: a pipelined request
        io.early.clear()
        if io.spill is not None:
            io.spill.seek(io.spill_read)
            left += io.spill.read()
            io.spill.close()
            io.spill, io.spill_read = None, 0
        if left:
            self._pending[conn.socket.fileno()] = (conn, time.time())
            self._arrived(conn.socket.fileno(), conn, io, left, registered=False)
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

    def _arrived(
        self, fd: int, conn: Any, io: _BufferedSocketIO, data: bytes, *, registered: bool
    ) -> None:
        """``data`` of the request arriving on ``conn`` (one of ``_pending``): to a
        worker once whole, else (on) in the selector."""
        answer = arrived(io, data, memory_bytes=self.buffer_bytes, max_body=self.max_body)
        if answer:  # 100 Continue: a few bytes, the socket's buffer takes them
            with contextlib.suppress(OSError, ValueError):
                conn.socket.sendall(answer)
        if io.ready:
            if registered:
                self._selector.unregister(fd)
            del self._pending[fd]
            conn.last_used = time.time()
            self.server.process_conn(conn)
        elif not registered:
            self._selector.register(fd, selectors.EVENT_READ, data=conn)

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
        self._arrived(fd, conn, early, received, registered=True)

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
        self,
        *args: Any,
        request_timeout: float,
        buffer_bytes: int,
        max_body: int,
        **kwargs: Any,
    ) -> None:
        # cheroot listens with a backlog of 5: a burst of connections (or a client
        # connecting while the accepting thread waits for the GIL) lost SYNs and waited
        # a second for the retransmission
        kwargs.setdefault("request_queue_size", LISTEN_BACKLOG)
        super().__init__(*args, **kwargs)
        self.request_timeout = request_timeout
        self.buffer_bytes = buffer_bytes
        self.max_body = max_body
        self.max_request_header_size = MAX_HEADER_BYTES

    _connections: Any

    def prepare(self) -> None:
        super().prepare()
        plain = self._connections
        self._connections = GatedConnections(
            self,
            request_timeout=self.request_timeout,
            buffer_bytes=self.buffer_bytes,
            max_body=self.max_body,
        )
        plain._selector.close()  # cheroot's own manager, never run
