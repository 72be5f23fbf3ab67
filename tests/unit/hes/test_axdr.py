"""hes.dlms.axdr: A-XDR decoding and GET response framing."""

from __future__ import annotations

import pytest

from hes.dlms import axdr


def test_decode_profile_rows() -> None:
    stamp = bytes.fromhex("07ea0b18020d0f0000000000")
    row = b"\x02\x04\x09\x0c" + stamp + bytes.fromhex("11000600112afc0600000000")
    value = axdr.decode_all(bytes.fromhex("0102") + row + row)
    assert isinstance(value, list)
    assert value[0] == [stamp, 0, 0x112AFC, 0]
    assert len(value) == 2


@pytest.mark.parametrize(
    ("hex_", "expected"),
    [
        ("0f ff", -1),
        ("10 fffe", -2),
        ("12 0102", 0x0102),
        ("05 ffffffff", -1),
        ("14 0000000000000001", 1),
        ("15 0000000000000002", 2),
        ("16 1e", 30),
        ("03 01", True),
        ("00", None),
        ("0a 03 616263", "abc"),
        ("0202 0fff 161e", [-1, 30]),
    ],
)
def test_decode_types(hex_: str, expected: axdr.Value) -> None:
    assert axdr.decode_all(bytes.fromhex(hex_.replace(" ", ""))) == expected


@pytest.mark.parametrize("hex_", ["06 0000", "09 05 00", "0102 1100", "7f", "", "1100 00"])
def test_malformed(hex_: str) -> None:
    with pytest.raises(axdr.AxdrError):
        axdr.decode_all(bytes.fromhex(hex_.replace(" ", "")))


def test_get_responses() -> None:
    normal = axdr.parse_get_response(bytes.fromhex("c401c100060000000a"))
    assert (normal.invoke, normal.data, normal.error, normal.block) == (
        0xC1,
        b"\x06\x00\x00\x00\x0a",
        None,
        None,
    )
    refused = axdr.parse_get_response(bytes.fromhex("c401c10104"))
    assert refused.error == 4
    block = axdr.parse_get_response(bytes.fromhex("c402c100000000010003010203"))
    assert (block.block, block.last, block.data) == (1, False, b"\x01\x02\x03")
    last = axdr.parse_get_response(bytes.fromhex("c402c101000000020001ff"))
    assert last.last
    with pytest.raises(axdr.AxdrError):
        axdr.parse_get_response(bytes.fromhex("c402c100000000010005010203"))
    assert axdr.next_block_request(0xC1, 1) == bytes.fromhex("c002c100000001")


def test_nesting_is_bounded() -> None:
    """COSEM data nests a few levels; 1,000 levels in 2 KB are refused with the project's
    own error (a RecursionError before), and so is one level past the bound."""
    from cim_schemas.errors import AmihubError

    def nested(levels: int) -> bytes:
        return b"\x01\x01" * levels + b"\x00"

    value = axdr.decode_all(nested(axdr.MAX_DEPTH))
    for _ in range(axdr.MAX_DEPTH):
        assert isinstance(value, list)
        (value,) = value
    assert value is None
    for levels in (axdr.MAX_DEPTH + 1, 1000):
        with pytest.raises(axdr.AxdrError, match="nested deeper than 16 levels") as error:
            axdr.decode_all(nested(levels))
        assert isinstance(error.value, AmihubError)
