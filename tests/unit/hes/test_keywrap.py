"""hes.security.keywrap: RFC 3394 key wrap and the global_key_transfer parameter."""

from __future__ import annotations

import pytest
from gurux_dlms.secure.GXDLMSSecureClient import GXDLMSSecureClient

from cim_schemas.errors import SecurityViolation
from hes.dlms import axdr
from hes.security.keywrap import (
    KeyId,
    KeyTransferError,
    decode_key_transfer,
    encode_key_transfer,
    unwrap,
    wrap,
)

# RFC 3394 section 4.1: wrap 128 bits of key data with a 128-bit KEK
RFC_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
RFC_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
RFC_WRAPPED = bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")


def test_rfc3394_vector_and_gurux_agree() -> None:
    assert wrap(RFC_KEK, RFC_KEY) == RFC_WRAPPED
    assert unwrap(RFC_KEK, RFC_WRAPPED) == RFC_KEY
    # what gurux-dlms' globalKeyTransfer sends is the same wrap
    assert bytes(GXDLMSSecureClient.encrypt(RFC_KEK, RFC_KEY)) == RFC_WRAPPED


def test_wrong_kek_and_damaged_wrap_are_refused() -> None:
    with pytest.raises(KeyTransferError, match="not wrapped under this KEK"):
        unwrap(bytes(16), RFC_WRAPPED)
    damaged = bytearray(RFC_WRAPPED)
    damaged[5] ^= 0x40
    with pytest.raises(KeyTransferError):
        unwrap(RFC_KEK, bytes(damaged))
    with pytest.raises(KeyTransferError, match="24 bytes, got 16"):
        unwrap(RFC_KEK, RFC_KEY)
    assert issubclass(KeyTransferError, SecurityViolation)


def test_key_data_round_trip_through_axdr() -> None:
    ek, ak, kek2 = bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48))
    raw = encode_key_transfer(
        RFC_KEK, {KeyId.AUTHENTICATION: ak, KeyId.GLOBAL_UNICAST_ENCRYPTION: ek, KeyId.MASTER: kek2}
    )
    value = axdr.decode_all(raw)
    assert isinstance(value, list)
    assert [item[0] for item in value if isinstance(item, list)] == [0, 2, 3]
    for key in (ek, ak, kek2):
        assert key.hex() not in raw.hex()  # only wrapped keys travel
    assert decode_key_transfer(RFC_KEK, value) == {
        KeyId.GLOBAL_UNICAST_ENCRYPTION: ek,
        KeyId.AUTHENTICATION: ak,
        KeyId.MASTER: kek2,
    }


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ([], "non-empty array"),
        ("x", "non-empty array"),
        ([[0]], "item 1 is not a structure of 2"),
        ([[9, RFC_WRAPPED]], "item 1: unknown key_id 9"),
        ([[1, RFC_WRAPPED]], "item 1: no broadcast key"),
        ([[0, RFC_WRAPPED], [0, RFC_WRAPPED]], "item 2: key_id GLOBAL_UNICAST_ENCRYPTION repeated"),
        ([[2, 5]], "item 1: key_wrapped is not an octet-string"),
        ([[0, RFC_WRAPPED], [2, bytes(24)]], "not wrapped under this KEK"),
    ],
)
def test_bad_key_data_is_refused_whole(parameters: object, message: str) -> None:
    with pytest.raises(KeyTransferError, match=message):
        decode_key_transfer(RFC_KEK, parameters)
