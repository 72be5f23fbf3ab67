"""Meter keys at rest: encrypted with a master key, never logged.

Each record holds one meter's system title and its suite-0 keys (EK, AK) and, when
known, its own master key (KEK: what new keys are wrapped with in a security setup
key transfer, :mod:`hes.security.keywrap`). Records are encrypted with AES-256-GCM
under the store's master key (random 96-bit nonce per write), with the meter's mRID,
key version and system title as associated data: a record copied onto another meter
does not decrypt. The store's master key comes from configuration (32 bytes) and is
a different thing from the meters' KEKs; :meth:`KeyStore.rotate_master` re-encrypts
every record under a new one.

A meter key change (:mod:`hes.security.keychange`) records the new keys as *pending*
(:meth:`KeyStore.stage`, version + 1) before it touches the meter, then
:meth:`KeyStore.promote` makes them the active keys once the meter was seen using
them, or :meth:`KeyStore.drop_pending` forgets them when the meter kept the old
ones. Pending records are bound to their role too (a pending record copied over the
active one does not decrypt).

Storage here is a JSON document (``dumps`` / ``loads``) holding only ciphertexts;
:mod:`hes.security.keyfile` writes it to disk atomically.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cim_schemas.errors import ConfigurationError, PermanentError, SecurityViolation
from hes.security.gcm import KEY_LENGTH, SYSTEM_TITLE_LENGTH, SecurityKeys

MASTER_KEY_LENGTH = 32
FORMAT = "amihub-keystore-1"


class KeyStateError(PermanentError):
    """A key store operation the meter's record does not allow (unknown meter, keys
    already pending, nothing pending)."""


@dataclass(frozen=True, repr=False)
class StoredKeys:
    """One meter's keys as the store holds them (active or pending)."""

    system_title: bytes
    keys: SecurityKeys
    kek: bytes | None  # the meter's master key (key encryption key), if known
    version: int

    def __repr__(self) -> str:  # keys are never logged
        return f"StoredKeys({self.system_title.hex()}, version {self.version}, <hidden>)"


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


def _aad(mrid: str, system_title: bytes, version: int, pending: bool) -> bytes:
    role = "pending|" if pending else ""
    return f"{FORMAT}|{mrid}|{version}|{role}".encode() + system_title


class KeyStore:
    def __init__(self, master_key: bytes) -> None:
        self._aes = _check_master(master_key)
        self._records: dict[str, _Record] = {}
        self._pending: dict[str, _Record] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"KeyStore({len(self._records)} meters, {len(self._pending)} pending)"

    def _seal(
        self,
        mrid: str,
        system_title: bytes,
        keys: SecurityKeys,
        kek: bytes | None,
        version: int,
        pending: bool = False,
    ) -> _Record:
        if kek is not None and len(kek) != KEY_LENGTH:
            raise ValueError("a meter master key (KEK) is 16 bytes")
        nonce = os.urandom(12)
        plaintext = keys.encryption_key + keys.authentication_key + (kek or b"")
        return _Record(
            system_title,
            nonce,
            self._aes.encrypt(nonce, plaintext, _aad(mrid, system_title, version, pending)),
            version,
        )

    def _open(self, mrid: str, record: _Record, pending: bool) -> StoredKeys:
        try:
            plain = self._aes.decrypt(
                record.nonce,
                record.ciphertext,
                _aad(mrid, record.system_title, record.version, pending),
            )
        except InvalidTag:
            what = "pending key record" if pending else "key record"
            raise SecurityViolation(
                f"{what} of {mrid} does not decrypt (wrong master key or tampered record)"
            ) from None
        kek = plain[32:48] if len(plain) == 48 else None
        return StoredKeys(
            record.system_title, SecurityKeys(plain[:16], plain[16:32]), kek, record.version
        )

    def put(
        self, mrid: str, system_title: bytes, keys: SecurityKeys, kek: bytes | None = None
    ) -> None:
        """A meter's keys (version 1), e.g. from the manufacturer's shipment file."""
        if len(system_title) != SYSTEM_TITLE_LENGTH:
            raise ValueError("a system title is 8 bytes")
        with self._lock:
            self._records[mrid] = self._seal(mrid, system_title, keys, kek, 1)
            self._pending.pop(mrid, None)

    def replace_keys(self, mrid: str, keys: SecurityKeys) -> int:
        """Record a meter's new keys directly (its KEK kept); returns the new key version.
        A key change on the meter goes through :meth:`stage` / :meth:`promote` instead."""
        with self._lock:
            current = self._entry(mrid)
            record = self._seal(mrid, current.system_title, keys, current.kek, current.version + 1)
            self._records[mrid] = record
            return record.version

    def _entry(self, mrid: str) -> StoredKeys:
        record = self._records.get(mrid)
        if record is None:
            raise KeyStateError(f"{mrid} is not in the key store")
        return self._open(mrid, record, False)

    def get(self, mrid: str) -> tuple[bytes, SecurityKeys] | None:
        found = self.entry(mrid)
        return None if found is None else (found.system_title, found.keys)

    def entry(self, mrid: str) -> StoredKeys | None:
        """The active keys of ``mrid`` (None: not in the store)."""
        with self._lock:
            record = self._records.get(mrid)
            return None if record is None else self._open(mrid, record, False)

    def pending(self, mrid: str) -> StoredKeys | None:
        """Keys sent (or about to be sent) to the meter and not yet seen in use."""
        with self._lock:
            record = self._pending.get(mrid)
            return None if record is None else self._open(mrid, record, True)

    def stage(self, mrid: str, keys: SecurityKeys, kek: bytes | None) -> int:
        """Record new keys for ``mrid`` as pending (version + 1); the active keys stay.
        ``kek`` None keeps the meter's KEK. Refused while keys are already pending."""
        with self._lock:
            current = self._entry(mrid)
            if mrid in self._pending:
                raise KeyStateError(f"{mrid} already has pending keys: settle them first")
            version = current.version + 1
            self._pending[mrid] = self._seal(
                mrid, current.system_title, keys, kek or current.kek, version, pending=True
            )
            return version

    def promote(self, mrid: str) -> int:
        """The pending keys become the active keys (the old ones are gone); the version."""
        with self._lock:
            pending = self.pending(mrid)
            if pending is None:
                raise KeyStateError(f"{mrid} has no pending keys")
            self._records[mrid] = self._seal(
                mrid, pending.system_title, pending.keys, pending.kek, pending.version
            )
            del self._pending[mrid]
            return pending.version

    def drop_pending(self, mrid: str) -> None:
        with self._lock:
            self._pending.pop(mrid, None)

    def by_system_title(self, system_title: bytes) -> tuple[str, SecurityKeys] | None:
        for mrid, record in list(self._records.items()):
            if record.system_title == system_title:
                found = self.get(mrid)
                return (mrid, found[1]) if found else None
        return None

    def verify(self) -> None:
        """Open every record (active and pending) under the master key: a store with a
        record that does not decrypt (wrong master key, tampered or moved record) raises
        :class:`SecurityViolation` naming the meter, never a key."""
        with self._lock:
            for mrid, record in self._records.items():
                self._open(mrid, record, False)
            for mrid, record in self._pending.items():
                self._open(mrid, record, True)

    def version(self, mrid: str) -> int:
        return self._records[mrid].version

    def meters(self) -> list[tuple[str, bytes, int]]:
        """(mRID, system title, key version) of every meter: never the keys."""
        with self._lock:
            return [(m, r.system_title, r.version) for m, r in sorted(self._records.items())]

    def pending_meters(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)

    def rotate_master(self, new_master_key: bytes) -> KeyStore:
        """A new store with every record (pending ones too) re-encrypted under
        ``new_master_key``."""
        rotated = KeyStore(new_master_key)
        with self._lock:
            for mrid in list(self._records):
                e = self._entry(mrid)
                rotated._records[mrid] = rotated._seal(
                    mrid, e.system_title, e.keys, e.kek, e.version
                )
            for mrid in list(self._pending):
                p = self.pending(mrid)
                assert p is not None
                rotated._pending[mrid] = rotated._seal(
                    mrid, p.system_title, p.keys, p.kek, p.version, pending=True
                )
        return rotated

    # --- persistence (ciphertexts only) ---
    def dumps(self) -> str:
        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode()

        def records(source: dict[str, _Record]) -> dict[str, dict[str, object]]:
            return {
                mrid: {
                    "system_title": r.system_title.hex(),
                    "nonce": b64(r.nonce),
                    "ciphertext": b64(r.ciphertext),
                    "version": r.version,
                }
                for mrid, r in sorted(source.items())
            }

        with self._lock:
            return json.dumps(
                {
                    "format": FORMAT,
                    "meters": records(self._records),
                    "pending": records(self._pending),
                },
                indent=1,
            )

    @classmethod
    def loads(cls, text: str, master_key: bytes) -> KeyStore:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigurationError("not an amihub key store")
        store = cls(master_key)
        for section, target in (("meters", store._records), ("pending", store._pending)):
            for mrid, r in data.get(section, {}).items():
                target[mrid] = _Record(
                    bytes.fromhex(r["system_title"]),
                    base64.b64decode(r["nonce"]),
                    base64.b64decode(r["ciphertext"]),
                    int(r["version"]),
                )
        return store
