"""A-XDR decoding of COSEM Data, and the GET response framing, for the client.

gurux's client re-parses the whole accumulated buffer after every GET block
(quadratic in the profile size, most of a secured read's CPU); this decoder
runs once over the reassembled data. Pure functions, no IO.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cim_schemas.errors import PermanentError, SecurityViolation
from hes.security.gcm import decode_length

Value = None | bool | int | float | bytes | str | list["Value"]

_FIXED: dict[int, tuple[int, str]] = {
    0x05: (4, ">i"),
    0x06: (4, ">I"),
    0x0F: (1, ">b"),
    0x10: (2, ">h"),
    0x11: (1, ">B"),
    0x12: (2, ">H"),
    0x14: (8, ">q"),
    0x15: (8, ">Q"),
    0x16: (1, ">B"),  # enum
    0x17: (4, ">f"),
    0x18: (8, ">d"),
}


#: the deepest nesting of arrays and structures accepted. COSEM data nests a few levels
#: (a profile: array of structures of values; an activity calendar: four); a hostile
#: answer of 1,000 levels in 2 KB would otherwise exhaust the interpreter's stack.
MAX_DEPTH = 16


class AxdrError(PermanentError):
    """Malformed A-XDR data."""


def _length(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_length(data, pos)
    except SecurityViolation as exc:
        raise AxdrError(str(exc)) from None


def decode(data: bytes, pos: int = 0, depth: int = 0) -> tuple[Value, int]:
    """One Data value at ``pos`` -> (value, position after it)."""
    if pos >= len(data):
        raise AxdrError("truncated data")
    tag = data[pos]
    pos += 1
    if tag in (0x01, 0x02):  # array, structure
        if depth >= MAX_DEPTH:
            raise AxdrError(
                f"arrays and structures nested deeper than {MAX_DEPTH} levels (at byte {pos - 1})"
            )
        count, pos = _length(data, pos)
        items: list[Value] = []
        for _ in range(count):
            item, pos = decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if tag in _FIXED:
        size, fmt = _FIXED[tag]
        if pos + size > len(data):
            raise AxdrError("truncated number")
        return struct.unpack_from(fmt, data, pos)[0], pos + size
    if tag in (0x09, 0x0A, 0x0C):  # octet-string, visible-string, utf8-string
        n, pos = _length(data, pos)
        if pos + n > len(data):
            raise AxdrError("truncated string")
        raw = bytes(data[pos : pos + n])
        return (raw if tag == 0x09 else raw.decode("utf-8", "replace")), pos + n
    if tag == 0x19:  # date-time
        if pos + 12 > len(data):
            raise AxdrError("truncated date-time")
        return bytes(data[pos : pos + 12]), pos + 12
    if tag == 0x03:
        if pos >= len(data):
            raise AxdrError("truncated boolean")
        return data[pos] != 0, pos + 1
    if tag == 0x00:
        return None, pos
    raise AxdrError(f"unsupported A-XDR tag {tag:#04x}")


def decode_all(data: bytes) -> Value:
    value, pos = decode(data, 0)
    if pos != len(data):
        raise AxdrError("trailing bytes after the value")
    return value


@dataclass(frozen=True)
class GetResponse:
    """A parsed GET-Response: either data (complete or one block) or an access error."""

    invoke: int
    data: bytes = b""
    error: int | None = None  # data-access-result when the meter refused
    block: int | None = None  # block number for GET-Response-With-Datablock
    last: bool = True


def parse_get_response(apdu: bytes) -> GetResponse:
    if len(apdu) < 4 or apdu[0] != 0xC4:
        raise AxdrError(f"not a GET response: {apdu[:4].hex()}")
    kind, invoke = apdu[1], apdu[2]
    if kind == 0x01:  # normal: result choice 00 data | 01 data-access-result
        if apdu[3] == 0x00:
            return GetResponse(invoke, apdu[4:])
        if len(apdu) < 5:
            raise AxdrError("truncated GET error")
        return GetResponse(invoke, error=apdu[4])
    if kind == 0x02:  # with datablock: last, block-number, choice 00 raw-data | 01 result
        if len(apdu) < 9:
            raise AxdrError("truncated GET block")
        last = apdu[3] != 0
        block = int.from_bytes(apdu[4:8], "big")
        if apdu[8] == 0x01:
            return GetResponse(invoke, error=apdu[9] if len(apdu) > 9 else 0xFF, block=block)
        n, pos = _length(apdu, 9)
        if pos + n != len(apdu):
            raise AxdrError("GET block length mismatch")
        return GetResponse(invoke, apdu[pos:], block=block, last=last)
    raise AxdrError(f"unsupported GET response type {kind}")


def next_block_request(invoke: int, block: int) -> bytes:
    """GET-Request-Next for the block after ``block``."""
    return bytes([0xC0, 0x02, invoke]) + block.to_bytes(4, "big")
