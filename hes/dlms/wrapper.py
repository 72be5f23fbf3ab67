"""The DLMS/COSEM TCP WRAPPER (IEC 62056-47, IANA port 4059).

Every APDU travels behind an 8-byte header: version (0x0001), source wPort,
destination wPort, APDU length (all 16-bit big-endian). Pure framing: no IO.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cim_schemas.errors import PermanentError

WRAPPER_VERSION = 1
HEADER = struct.Struct(">HHHH")
HEADER_SIZE = HEADER.size
MAX_APDU = 0xFFFF

PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1
MANAGEMENT_LOGICAL_DEVICE = 1


class FrameError(PermanentError):
    """A malformed WRAPPER header (wrong version or impossible length)."""


@dataclass(frozen=True)
class WrapperFrame:
    source: int
    destination: int
    apdu: bytes

    def encode(self) -> bytes:
        if len(self.apdu) > MAX_APDU:
            raise FrameError("APDU too long for one WRAPPER frame")
        return HEADER.pack(WRAPPER_VERSION, self.source, self.destination, len(self.apdu)) + (
            self.apdu
        )


def parse_header(header: bytes) -> tuple[int, int, int]:
    """(source, destination, APDU length) of an 8-byte header."""
    if len(header) != HEADER_SIZE:
        raise FrameError("truncated WRAPPER header")
    version, source, destination, length = HEADER.unpack(header)
    if version != WRAPPER_VERSION:
        raise FrameError(f"WRAPPER version {version} is not 1")
    return source, destination, length


def decode(data: bytes) -> WrapperFrame:
    """One complete frame (header + APDU) -> WrapperFrame."""
    source, destination, length = parse_header(data[:HEADER_SIZE])
    if len(data) != HEADER_SIZE + length:
        raise FrameError("WRAPPER length does not match the frame")
    return WrapperFrame(source, destination, bytes(data[HEADER_SIZE:]))
