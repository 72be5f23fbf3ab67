"""The request gate's reading of an arriving request (adapters/soap/front.py)."""

from __future__ import annotations

import socket

from adapters.soap.front import CONTINUE, _BufferedSocketIO, arrived

HEAD = b"POST /ws/GetMeterReadings HTTP/1.1\r\nHost: x\r\n"


def feed(parts: list[bytes], memory: int = 1 << 20, max_body: int = 1 << 20) -> list[bool]:
    a, b = socket.socketpair()
    try:
        io = _BufferedSocketIO(a)
        ready = []
        for part in parts:
            arrived(io, part, memory_bytes=memory, max_body=max_body)
            ready.append(io.ready)
        return ready
    finally:
        a.close()
        b.close()


def read_all(parts: list[bytes], memory: int) -> bytes:
    """What the worker reads: the parts as sent (memory, then the file)."""
    a, b = socket.socketpair()
    try:
        io = _BufferedSocketIO(a)
        for part in parts:
            arrived(io, part, memory_bytes=memory, max_body=1 << 20)
        assert io.ready
        assert io.spill is not None  # the body outgrew the memory
        out = b""
        buffer = bytearray(7)
        while len(out) < sum(len(p) for p in parts):
            n = io.readinto(buffer) or 0
            out += bytes(buffer[:n])
        return out
    finally:
        a.close()
        b.close()


def test_headers_byte_by_byte_then_ready() -> None:
    request = HEAD + b"\r\n"
    assert feed([bytes([c]) for c in request]) == [False] * (len(request) - 1) + [True]


def test_a_content_length_body_is_waited_for() -> None:
    head = HEAD + b"Content-Length: 10\r\n\r\n"
    assert feed([head, b"01234", b"56789"]) == [False, False, True]
    assert feed([head + b"0123456789"]) == [True]


def test_a_body_over_the_memory_buffer_waits_in_a_file() -> None:
    head = HEAD + b"Content-Length: 30\r\n\r\n"
    parts = [head, b"a" * 10, b"b" * 10, b"c" * 10]
    assert read_all(parts, memory=len(head) + 5) == b"".join(parts)


def test_a_chunked_body_is_followed_to_its_end() -> None:
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    ready = feed([head] + [bytes([c]) for c in body])
    assert ready[-1] is True
    assert not any(ready[:-1])


def test_a_chunked_body_over_the_limit_goes_to_the_worker() -> None:
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert feed([head, b"100\r\n"], max_body=100) == [False, True]


def test_expect_is_answered_by_the_gate_and_taken_out() -> None:
    a, b = socket.socketpair()
    try:
        io = _BufferedSocketIO(a)
        head = HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        assert arrived(io, head, memory_bytes=1000, max_body=1000) == CONTINUE
        assert not io.ready
        assert arrived(io, b"abc", memory_bytes=1000, max_body=1000) == b""
        assert io.ready
        assert bytes(io.early) == HEAD + b"Content-Length: 3\r\n\r\nabc"
    finally:
        a.close()
        b.close()


def test_nothing_to_wait_for_goes_at_once() -> None:
    assert feed([HEAD + b"Content-Length: -5\r\n\r\n"]) == [True]  # the worker refuses it
    assert feed([HEAD + b"Content-Length: 5000\r\n\r\n"], max_body=100) == [True]  # 413
    assert feed([b"GET /ws/GetMeterReadings?wsdl HTTP/1.1\r\nHost: x\r\n\r\n"]) == [True]
