"""Meter keys at rest: encrypted with a master key, never logged.

Each record holds one meter's system title and its suite-0 keys (EK, AK),
encrypted with AES-256-GCM under the master key (random 96-bit nonce per write),
with the meter's mRID and system title as associated data: a record copied onto
another meter does not decrypt. The master key comes from configuration (32 bytes);
:meth:`KeyStore.rotate_master` re-encrypts every record under a new one, and
:meth:`KeyStore.replace_keys` records a meter's new keys (the meter side of a key
change, the security setup's key_transfer method, is not built yet).

Storage here is a JSON document (``dumps`` / ``loads``) holding only ciphertexts;
a database-backed store can keep the same records.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hes.security.gcm import SYSTEM_TITLE_LENGTH, SecurityKeys
from hub.errors import ConfigurationError, SecurityViolation

MASTER_KEY_LENGTH = 32
FORMAT = "amihub-keystore-1"


@dataclass(frozen=True)
class _Record:
    system_title: bytes
    nonce: bytes
    ciphertext: bytes
    version: int


def _check_master(master_key: bytes) -> AESGCM:
    if len(master_key) != MASTER_KEY_LENGTH:
        raise ConfigurationError("the key store master key is 32 bytes")
    return AESGCM(master_key)


def _aad(mrid: str, system_title: bytes, version: int) -> bytes:
    return f"{FORMAT}|{mrid}|{version}|".encode() + system_title


class KeyStore:
    def __init__(self, master_key: bytes) -> None:
        self._aes = _check_master(master_key)
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyStore({len(self._records)} meters)"

    def _seal(self, mrid: str, system_title: bytes, keys: SecurityKeys, version: int) -> _Record:
        nonce = os.urandom(12)
        plaintext = keys.encryption_key + keys.authentication_key
        return _Record(
            system_title,
            nonce,
            self._aes.encrypt(nonce, plaintext, _aad(mrid, system_title, version)),
            version,
        )

    def put(self, mrid: str, system_title: bytes, keys: SecurityKeys) -> None:
        if len(system_title) != SYSTEM_TITLE_LENGTH:
            raise ValueError("a system title is 8 bytes")
        with self._lock:
            self._records[mrid] = self._seal(mrid, system_title, keys, 1)

    def replace_keys(self, mrid: str, keys: SecurityKeys) -> int:
        """Record a meter's new keys; returns the new key version."""
        with self._lock:
            old = self._records[mrid]
            record = self._seal(mrid, old.system_title, keys, old.version + 1)
            self._records[mrid] = record
            return record.version

    def get(self, mrid: str) -> tuple[bytes, SecurityKeys] | None:
        record = self._records.get(mrid)
        if record is None:
            return None
        try:
            plain = self._aes.decrypt(
                record.nonce, record.ciphertext, _aad(mrid, record.system_title, record.version)
            )
        except InvalidTag:
            raise SecurityViolation(
                f"key record of {mrid} does not decrypt (wrong master key or tampered record)"
            ) from None
        return record.system_title, SecurityKeys(plain[:16], plain[16:32])

    def by_system_title(self, system_title: bytes) -> tuple[str, SecurityKeys] | None:
        for mrid, record in list(self._records.items()):
            if record.system_title == system_title:
                found = self.get(mrid)
                return (mrid, found[1]) if found else None
        return None

    def version(self, mrid: str) -> int:
        return self._records[mrid].version

    def meters(self) -> list[tuple[str, bytes, int]]:
        """(mRID, system title, key version) of every meter: never the keys."""
        return [(m, r.system_title, r.version) for m, r in sorted(self._records.items())]

    def rotate_master(self, new_master_key: bytes) -> KeyStore:
        """A new store with every record re-encrypted under ``new_master_key``."""
        rotated = KeyStore(new_master_key)
        for mrid, record in list(self._records.items()):
            found = self.get(mrid)
            assert found is not None
            rotated._records[mrid] = rotated._seal(mrid, found[0], found[1], record.version)
        return rotated

    # --- persistence (ciphertexts only) ---
    def dumps(self) -> str:
        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode()

        return json.dumps(
            {
                "format": FORMAT,
                "meters": {
                    mrid: {
                        "system_title": r.system_title.hex(),
                        "nonce": b64(r.nonce),
                        "ciphertext": b64(r.ciphertext),
                        "version": r.version,
                    }
                    for mrid, r in sorted(self._records.items())
                },
            },
            indent=1,
        )

    @classmethod
    def loads(cls, text: str, master_key: bytes) -> KeyStore:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ConfigurationError("not an amihub key store")
        store = cls(master_key)
        for mrid, r in data["meters"].items():
            store._records[mrid] = _Record(
                bytes.fromhex(r["system_title"]),
                base64.b64decode(r["nonce"]),
                base64.b64decode(r["ciphertext"]),
                int(r["version"]),
            )
        return store
