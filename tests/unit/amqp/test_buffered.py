# mypy: disable-error-code="no-untyped-call"
"""The buffered AMQP frame reader over a real socket pair (no broker)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from amqp.exceptions import UnexpectedFrame
from kombu.transport import pyamqp

from adapters.amqp.buffered import CHUNK, BufferedTCPTransport, BufferedTransport
from adapters.amqp.connection import make_connection
from hub.settings import AmqpSettings


def frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


@pytest.fixture
def pair() -> Iterator[tuple[BufferedTCPTransport, socket.socket]]:
    ours, peer = socket.socketpair()
    transport = BufferedTCPTransport("127.0.0.1:1")  # never connects: the socket is given
    transport.sock = ours
    transport._setup_transport()
    transport.connected = True
    yield transport, peer
    ours.close()
    peer.close()


def test_several_frames_in_one_chunk_are_served_from_the_buffer(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    frames = [frame(1, 1, b"method"), frame(2, 1, b"header" * 3), frame(3, 1, b"x" * 12_000)]
    peer.sendall(b"".join(frames))
    assert transport.read_frame() == (1, 1, b"method")
    assert transport.buffered() == len(frames[1]) + len(frames[2])
    peer.close()  # the rest must come from the buffer, not the (closed) socket
    assert transport.buffered_frame() == (2, 1, b"header" * 3)
    assert transport.read_frame() == (3, 1, b"x" * 12_000)
    assert transport.buffered() == 0
    assert transport.buffered_frame() is None


def test_frame_split_across_reads_and_a_timeout_keeps_the_partial_frame(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    data = frame(3, 2, bytes(range(256)) * 40)
    peer.sendall(data[:5])  # not even a whole header
    transport.sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        transport.read_frame()
    assert transport.buffered() == 5
    assert transport.buffered_frame() is None
    peer.sendall(data[5:3000])
    with pytest.raises(TimeoutError):
        transport.read_frame()
    assert transport.buffered() == 3000
    peer.sendall(data[3000:] + frame(8, 0, b""))
    assert transport.read_frame() == (3, 2, bytes(range(256)) * 40)
    assert transport.read_frame() == (8, 0, b"")
    assert transport.connected


def test_frames_across_the_end_of_the_buffer_are_compacted(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    transport.sock.settimeout(2.0)
    payloads = [bytes([i % 251]) * (12_000 + i) for i in range(60)]  # ~730 KB, > CHUNK
    stream = b"".join(frame(3, 1, p) for p in payloads)

    def send() -> None:
        for i in range(0, len(stream), 7_777):  # odd pieces: frames straddle every boundary
            peer.sendall(stream[i : i + 7_777])

    sender = threading.Thread(target=send)
    sender.start()
    received = [transport.read_frame()[2] for _ in payloads]
    sender.join()
    assert received == payloads
    assert len(transport._buf) == CHUNK  # compacted, not grown


def test_a_frame_larger_than_the_buffer_grows_it(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    big = b"b" * (CHUNK + 10)
    peer.sendall(frame(3, 1, big[:1]))
    assert transport.read_frame() == (3, 1, b"b")
    sender = threading.Thread(target=peer.sendall, args=(frame(3, 1, big),))
    sender.start()
    assert transport.read_frame() == (3, 1, big)
    sender.join()


def test_socket_closed_mid_frame_raises_and_marks_disconnected(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    peer.sendall(frame(3, 1, b"y" * 100)[:50])
    peer.close()
    with pytest.raises(OSError, match="unexpectedly closed"):
        transport.read_frame()
    assert not transport.connected


def test_a_bad_frame_end_is_refused_with_what_was_wrong(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    peer.sendall(frame(1, 7, b"abc", end=0x00))
    with pytest.raises(UnexpectedFrame, match=r"0x00.*channel 7, size 3"):
        transport.read_frame()
    assert not transport.connected


def test_plain_amqp_urls_use_the_buffered_transport_and_tls_does_not() -> None:
    plain = make_connection(AmqpSettings(url="amqp://guest@127.0.0.1:5672//"))
    assert plain.get_transport_cls() is BufferedTransport
    secure = make_connection(AmqpSettings(url="amqps://guest@127.0.0.1:5671//"))
    assert secure.get_transport_cls() is not BufferedTransport
    memory = make_connection(AmqpSettings(url="memory://"))
    assert memory.get_transport_cls() is not BufferedTransport
    # the setting switches back to py-amqp's own frame reader
    stock = make_connection(
        AmqpSettings(url="amqp://guest@127.0.0.1:5672//", buffered_reader=False)
    )
    assert stock.get_transport_cls() is pyamqp.Transport
