"""Security setup (class 64) global_key_transfer: keys wrapped with the meter's KEK.

Pure functions, no IO. Green Book / IDIS: the management client changes a meter's
global keys with method 2 (``global_key_transfer``) of the security setup object
(0.0.43.0.0.255 for the management client association in IDIS). Its parameter is::

    key_data ::= array of structure {
        key_id       enum (0 global unicast encryption key, 1 global broadcast
                          encryption key, 2 authentication key, 3 master key (KEK)),
        key_wrapped  octet-string   -- the new key, AES key wrap (RFC 3394) under the
                                    -- meter's CURRENT master key (KEK)
    }

(the layout gurux-dlms' ``GXDLMSSecuritySetup.globalKeyTransfer`` sends). A 16-byte
key wraps to 24 bytes; unwrapping checks RFC 3394's integrity value, so a key wrapped
under another KEK is detected and refused (:class:`cim_schemas.errors.SecurityViolation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from cim_schemas.errors import SecurityViolation
from hes.security.gcm import KEY_LENGTH, encode_length

SECURITY_SETUP_CLASS = 64
SECURITY_SETUP = "0.0.43.0.0.255"  # the management client association's security setup (IDIS)
GLOBAL_KEY_TRANSFER = 2  # method
WRAPPED_LENGTH = KEY_LENGTH + 8


class KeyId(IntEnum):
    """key_id of global_key_transfer."""

    GLOBAL_UNICAST_ENCRYPTION = 0
    GLOBAL_BROADCAST_ENCRYPTION = 1
    AUTHENTICATION = 2
    MASTER = 3  # the key encryption key (KEK)


class KeyTransferError(SecurityViolation):
    """A global_key_transfer parameter the meter must refuse (bad structure or wrap)."""


def wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 AES key wrap of one 16-byte key under a 16-byte KEK."""
    if len(kek) != KEY_LENGTH or len(key) != KEY_LENGTH:
        raise ValueError("suite 0 keys and KEKs are 16 bytes")
    return aes_key_wrap(kek, key)


def unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """The key inside ``wrapped``; KeyTransferError if it was not wrapped under ``kek``."""
    if len(kek) != KEY_LENGTH:
        raise ValueError("a KEK is 16 bytes")
    if len(wrapped) != WRAPPED_LENGTH:
        raise KeyTransferError(f"a wrapped key is {WRAPPED_LENGTH} bytes, got {len(wrapped)}")
    try:
        return aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap:
        raise KeyTransferError("key unwrap failed (not wrapped under this KEK)") from None


def encode_key_transfer(kek: bytes, keys: Mapping[KeyId, bytes]) -> bytes:
    """The A-XDR parameter of global_key_transfer: every key wrapped under ``kek``."""
    if not keys:
        raise ValueError("no key to transfer")
    items = b"".join(
        b"\x02\x02\x16"
        + bytes([int(key_id)])
        + b"\x09"
        + encode_length(WRAPPED_LENGTH)
        + wrap(kek, key)
        for key_id, key in sorted(keys.items())
    )
    return b"\x01" + encode_length(len(keys)) + items


def decode_key_transfer(kek: bytes, parameters: Any) -> dict[KeyId, bytes]:
    """The meter's side: the decoded parameter (a list of [key_id, key_wrapped]) ->
    the new keys. All or nothing: any bad item refuses the whole transfer."""
    if not isinstance(parameters, list) or not parameters:
        raise KeyTransferError("key_data is not a non-empty array")
    out: dict[KeyId, bytes] = {}
    for n, item in enumerate(parameters, start=1):
        if not isinstance(item, list) or len(item) != 2:
            raise KeyTransferError(f"key_data item {n} is not a structure of 2")
        raw_id, wrapped = item
        try:
            key_id = KeyId(int(raw_id))
        except (TypeError, ValueError):
            raise KeyTransferError(f"key_data item {n}: unknown key_id {raw_id!r}") from None
        if key_id is KeyId.GLOBAL_BROADCAST_ENCRYPTION:
            raise KeyTransferError(f"key_data item {n}: no broadcast key in security suite 0 here")
        if key_id in out:
            raise KeyTransferError(f"key_data item {n}: key_id {key_id.name} repeated")
        if not isinstance(wrapped, bytes | bytearray):
            raise KeyTransferError(f"key_data item {n}: key_wrapped is not an octet-string")
        out[key_id] = unwrap(kek, bytes(wrapped))
    return out
