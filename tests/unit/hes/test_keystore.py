"""hes.security.keystore: meter keys encrypted at rest."""

from __future__ import annotations

import json

import pytest

from cim_schemas.errors import ConfigurationError, SecurityViolation
from hes.security.gcm import SecurityKeys
from hes.security.keystore import KeyStateError, KeyStore

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


KEK = bytes(range(100, 116))


def test_pending_keys_stage_promote_drop_and_survive_a_reload() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS, KEK)
    new_keys, new_kek = SecurityKeys(bytes(range(16)), bytes(range(1, 17))), bytes(16)
    assert store.stage("M1", new_keys, new_kek) == 2
    with pytest.raises(KeyStateError, match="M1 already has pending keys"):
        store.stage("M1", new_keys, None)
    again = KeyStore.loads(store.dumps(), MASTER)  # what a crash leaves on disk
    active, pending = again.entry("M1"), again.pending("M1")
    assert active is not None
    assert pending is not None
    assert (active.keys, active.kek, active.version) == (KEYS, KEK, 1)
    assert (pending.keys, pending.kek, pending.version) == (new_keys, new_kek, 2)
    assert again.pending_meters() == ["M1"]
    assert again.promote("M1") == 2
    promoted = again.entry("M1")
    assert promoted is not None
    assert (promoted.keys, promoted.kek, promoted.version) == (new_keys, new_kek, 2)
    assert again.pending("M1") is None
    with pytest.raises(KeyStateError, match="M1 has no pending keys"):
        again.promote("M1")
    store.drop_pending("M1")
    assert store.pending("M1") is None
    assert store.get("M1") == (ST, KEYS)
    with pytest.raises(KeyStateError, match="NOPE is not in the key store"):
        store.stage("NOPE", new_keys, None)
    text = store.dumps() + again.dumps()
    for secret in (KEK, new_kek, new_keys.encryption_key, new_keys.authentication_key):
        assert secret.hex() not in text
    assert KEK.hex() not in repr(again.entry("M1"))


def test_a_pending_record_cannot_pass_for_the_active_one() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS, KEK)
    store.stage("M1", SecurityKeys(bytes(16), bytes(16)), None)
    data = json.loads(store.dumps())
    data["meters"]["M1"] = data["pending"]["M1"]
    with pytest.raises(SecurityViolation, match="key record of M1 does not decrypt"):
        KeyStore.loads(json.dumps(data), MASTER).entry("M1")


def test_rotation_keeps_pending_keys_and_kek() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS, KEK)
    new_keys = SecurityKeys(bytes(16), bytes(range(16)))
    store.stage("M1", new_keys, None)
    rotated = KeyStore.loads(store.rotate_master(bytes(range(1, 33))).dumps(), bytes(range(1, 33)))
    pending = rotated.pending("M1")
    assert pending is not None
    assert (pending.keys, pending.kek) == (new_keys, KEK)


def test_a_store_written_before_keks_existed_still_loads() -> None:
    store = KeyStore(MASTER)
    store.put("M1", ST, KEYS)  # no KEK: a 32-byte record, as older stores hold
    data = json.loads(store.dumps())
    del data["pending"]
    old = KeyStore.loads(json.dumps(data), MASTER)
    entry = old.entry("M1")
    assert entry is not None
    assert (entry.keys, entry.kek) == (KEYS, None)
