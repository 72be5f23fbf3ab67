"""hes.security.keystore: meter keys encrypted at rest."""

from __future__ import annotations

import json

import pytest

from hes.security.gcm import SecurityKeys
from hes.security.keystore import KeyStore
from hub.errors import ConfigurationError, SecurityViolation

MASTER = bytes(range(32))
KEYS = SecurityKeys(
    bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
    bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"),
)
ST = b"AMH\x00\x00\x00\x00\x01"


def test_round_trip_and_nothing_in_clear() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS)
    assert store.get("M1") == (ST, KEYS)
    assert store.by_system_title(ST) == ("M1", KEYS)
    assert store.get("nope") is None
    text = store.dumps()
    for secret in (KEYS.encryption_key.hex(), KEYS.authentication_key.hex()):
        assert secret not in text
    assert "0001020304" not in repr(store)
    again = KeyStore.loads(text, MASTER)
    assert again.get("M1") == (ST, KEYS)


def test_wrong_master_or_tampering_refused() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS)
    store.put("M2", ST[:-1] + b"\x02", KEYS)
    text = store.dumps()
    with pytest.raises(SecurityViolation):
        KeyStore.loads(text, bytes(32)).get("M1")
    data = json.loads(text)
    data["meters"]["M2"] = dict(data["meters"]["M1"])  # M1's record copied onto M2
    with pytest.raises(SecurityViolation):
        KeyStore.loads(json.dumps(data), MASTER).get("M2")
    with pytest.raises(ConfigurationError):
        KeyStore(b"short")
    with pytest.raises(ConfigurationError):
        KeyStore.loads('{"format": "other"}', MASTER)


def test_master_rotation_and_key_replacement() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS)
    new_keys = SecurityKeys(bytes(16), bytes(range(16)))
    assert store.replace_keys("M1", new_keys) == 2
    rotated = store.rotate_master(bytes(range(1, 33)))
    assert rotated.get("M1") == (ST, new_keys)
    assert rotated.version("M1") == 2
    with pytest.raises(SecurityViolation):
        KeyStore.loads(rotated.dumps(), MASTER).get("M1")
