"""KeyStoreWatch: a changed key store file is re-read (rate-limited, or forced), an
unusable one is logged without key material and the previous keys stay in use."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest

from adapters.dlms.directory import MeterDirectory
from cim_schemas.errors import ConfigurationError, SecurityViolation
from hes.cli import fleet_manifest
from hes.security.gcm import SecurityKeys
from hes.security.keyfile import FileSignature, KeyStoreFile, KeyStoreUnreadable
from hes.security.keystore import KeyStore
from hes.security.keywatch import KeyStoreSource, KeyStoreWatch
from hes.simulator.fleet import Fleet

MASTER = bytes(range(32))
TITLE = b"SIM00001"
OLD = SecurityKeys(bytes([1]) * 16, bytes([2]) * 16)
NEW = SecurityKeys(bytes([3]) * 16, bytes([4]) * 16)
KEK = bytes([5]) * 16


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _keys(store: KeyStore) -> SecurityKeys | None:
    entry = store.entry("MTR-1")
    return None if entry is None else entry.keys


def _secrets() -> list[str]:
    return [k.hex() for k in (*_parts(OLD), *_parts(NEW), KEK, MASTER)]


def _parts(keys: SecurityKeys) -> tuple[bytes, bytes]:
    return keys.encryption_key, keys.authentication_key


@pytest.fixture
def file(tmp_path: Path) -> KeyStoreFile:
    store = KeyStore(MASTER)
    store.put("MTR-1", TITLE, OLD, KEK)
    f = KeyStoreFile(tmp_path / "keys.json")
    f.save(store)
    return f


def _changed(file: KeyStoreFile) -> None:
    """What `amihub keys change` leaves: the meter's new keys, written atomically."""
    store = file.load(MASTER)
    store.stage("MTR-1", NEW, None)
    store.promote("MTR-1")
    file.save(store)


def _watch(file: KeyStoreFile, clock: Clock) -> KeyStoreWatch[SecurityKeys | None]:
    return KeyStoreWatch(KeyStoreSource(file, MASTER), _keys, clock=clock)


def test_a_changed_file_is_read_at_most_once_per_interval(file: KeyStoreFile) -> None:
    clock = Clock()
    watch = _watch(file, clock)
    assert watch.current() == OLD
    _changed(file)
    clock.now += 0.5  # within the interval: the file is not looked at
    assert watch.current() == OLD
    assert watch.reloads == 0
    clock.now += 0.6
    assert watch.current() == NEW
    assert watch.reloads == 1
    clock.now += 5  # looked at again, unchanged: not read again
    assert watch.current() == NEW
    assert watch.reloads == 1


def test_force_looks_at_once(file: KeyStoreFile) -> None:
    clock = Clock()
    watch = _watch(file, clock)
    _changed(file)
    assert watch.view == OLD
    assert watch.check(force=True) is True
    assert watch.view == NEW
    assert watch.check(force=True) is False  # nothing changed since


def test_the_signature_is_the_file_read(file: KeyStoreFile) -> None:
    store, signature = file.read(MASTER)
    assert _keys(store) == OLD
    st = os.stat(file.path)
    assert signature == FileSignature(st.st_ino, st.st_mtime_ns, st.st_size)
    assert file.signature() == signature
    _changed(file)  # an atomic write is a new file
    assert file.signature() != signature


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("not json", "JSONDecodeError"),
        ('{"format": "something else"}', "not an amihub key store"),
        ('{"format": "amihub-keystore-1", "meters": []}', "AttributeError"),
        ("tampered", "key record of MTR-1 does not decrypt"),
        ("other master", "key record of MTR-1 does not decrypt"),
    ],
)
def test_an_unusable_file_keeps_the_previous_keys_with_an_error(
    file: KeyStoreFile, caplog: pytest.LogCaptureFixture, damage: str, reason: str
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    watch = _watch(file, clock)
    if damage == "tampered":  # valid JSON, one ciphertext bit flipped
        data = json.loads(file.path.read_text())
        blob = bytearray(base64.b64decode(data["meters"]["MTR-1"]["ciphertext"]))
        blob[3] ^= 1
        data["meters"]["MTR-1"]["ciphertext"] = base64.b64encode(bytes(blob)).decode()
        file.path.write_text(json.dumps(data))
    elif damage == "other master":
        other = KeyStore(bytes(32))
        other.put("MTR-1", TITLE, NEW, KEK)
        file.path.write_text(other.dumps())
    else:  # written in place, not atomically: a broken editor, a full disk ...
        file.path.write_text(damage)
    clock.now += 1.5
    assert watch.current() == OLD
    assert (watch.reloads, watch.failures) == (0, 1)
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert reason in error.getMessage()
    assert "the previous keys stay in use" in error.getMessage()
    assert str(file.path) in error.getMessage()
    clock.now += 1.5  # the same broken file: not read, not logged again
    assert watch.current() == OLD
    assert watch.failures == 1
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    _changed_from(file, OLD)  # a good file again
    clock.now += 1.5
    assert watch.current() == NEW
    assert watch.reloads == 1
    for secret in _secrets():
        assert secret not in caplog.text


def _changed_from(file: KeyStoreFile, active: SecurityKeys) -> None:
    store = KeyStore(MASTER)
    store.put("MTR-1", TITLE, active, KEK)
    store.stage("MTR-1", NEW, None)
    store.promote("MTR-1")
    file.save(store)


def test_a_missing_file_keeps_the_previous_keys(
    file: KeyStoreFile, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    watch = _watch(file, clock)
    file.path.unlink()
    clock.now += 1.5
    assert watch.current() == OLD
    assert "the file is missing" in caplog.text
    clock.now += 1.5
    assert watch.current() == OLD
    assert watch.failures == 1  # logged once
    _changed_from(file, OLD)
    clock.now += 1.5
    assert watch.current() == NEW


def test_a_view_the_caller_refuses_keeps_the_previous_one(
    file: KeyStoreFile, caplog: pytest.LogCaptureFixture
) -> None:
    def build(store: KeyStore) -> SecurityKeys:
        keys = _keys(store)
        if keys is None:
            raise ConfigurationError("no keys for MTR-1")
        return keys

    clock = Clock()
    watch = KeyStoreWatch(KeyStoreSource(file, MASTER), build, clock=clock)
    empty = KeyStore(MASTER)
    empty.put("MTR-2", TITLE, NEW, KEK)
    file.save(empty)
    assert watch.check(force=True) is False
    assert watch.view == OLD
    assert "no keys for MTR-1" in caplog.text


def test_the_first_read_fails_loudly(file: KeyStoreFile) -> None:
    with pytest.raises(SecurityViolation, match="does not decrypt"):
        KeyStoreWatch(KeyStoreSource(file, bytes(32)), _keys)
    file.path.write_text("[]")
    with pytest.raises(KeyStoreUnreadable, match="not an amihub key store"):
        KeyStoreWatch(KeyStoreSource(file, MASTER), _keys)
    assert MASTER.hex() not in repr(KeyStoreSource(file, MASTER))


def test_verify_names_the_pending_record_too(file: KeyStoreFile) -> None:
    store = file.load(MASTER)
    store.stage("MTR-1", NEW, None)
    data = json.loads(store.dumps())
    data["pending"]["MTR-1"]["version"] = 7  # bound to its version: no longer decrypts
    file.path.write_text(json.dumps(data))
    with pytest.raises(SecurityViolation, match="pending key record of MTR-1"):
        file.read(MASTER)


def test_a_directory_following_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MeterDirectory over the key store file: pending keys for sessions and pushes, a
    store missing a meter of the manifest refused (the previous keys kept)."""
    fleet = Fleet.build(2, 4059, seed=5)
    (tmp_path / "fleet.json").write_text(json.dumps(fleet_manifest(fleet)))
    store = KeyStore(MASTER)
    for m in fleet.meters:
        store.put(f"MTR-{m.serial}", m.system_title, m.keys, m.kek)
    file = KeyStoreFile(tmp_path / "keys.json")
    file.save(store)
    directory = MeterDirectory.from_manifest(
        tmp_path / "fleet.json", keystore=KeyStoreSource(file, MASTER)
    )
    first, second = (f"MTR-{m.serial}" for m in fleet.meters)
    store.stage(first, NEW, None)
    file.save(store)
    assert directory.refresh() is True
    creds = directory[first].credentials
    assert (creds.keys, creds.pending_keys) == (fleet.meters[0].keys, NEW)
    known = directory.by_system_title(fleet.meters[0].system_title)
    assert known is not None
    assert (known.mrid, known.keys, known.pending_keys) == (first, fleet.meters[0].keys, NEW)
    assert directory.by_logical_device_name(fleet.meters[1].logical_device_name) is not None
    assert NEW.encryption_key.hex() not in repr(known) + repr(directory)
    smaller = KeyStore(MASTER)
    smaller.put(first, fleet.meters[0].system_title, NEW, KEK)
    file.save(smaller)
    assert directory.refresh() is False
    assert directory[second].credentials.keys == fleet.meters[1].keys
    assert f"no keys for {second}" in caplog.text
