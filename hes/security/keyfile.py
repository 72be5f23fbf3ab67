"""The key store on disk: one JSON file of ciphertexts, replaced atomically (0600).

A write goes to a temporary file in the same folder, is fsynced, then renamed over
the store, so a crash leaves either the old or the new file, never half of one.
Every write is a new file (a new inode): a reader that keeps the
:class:`FileSignature` (inode, mtime in ns, size) of what it read sees a change with
one ``stat`` (:mod:`hes.security.keywatch`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cim_schemas.errors import ConfigurationError
from hes.security.keystore import KeyStore


@dataclass(frozen=True)
class FileSignature:
    """What tells one version of the file from another without reading it."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSignature:
        return cls(st.st_ino, st.st_mtime_ns, st.st_size)


class KeyStoreUnreadable(ConfigurationError):
    """The key store file cannot be read or parsed; ``cause`` is the error's type only
    (a message could quote key material)."""

    def __init__(self, path: Path, cause: str) -> None:
        super().__init__(f"key store {path}: {cause}")
        self.path = path
        self.cause = cause


class KeyStoreFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyStoreFile({self.path})"

    def load(self, master_key: bytes) -> KeyStore:
        if not self.path.exists():
            raise ConfigurationError(f"key store {self.path} does not exist")
        try:
            text = self.path.read_text(encoding="utf-8")
            return KeyStore.loads(text, master_key)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # the type only: a message could quote key material
            raise ConfigurationError(f"key store {self.path}: {type(exc).__name__}") from None

    def signature(self) -> FileSignature | None:
        """The file's signature now (None: there is no file)."""
        try:
            return FileSignature.of(os.stat(self.path))
        except FileNotFoundError:
            return None

    def read(self, master_key: bytes) -> tuple[KeyStore, FileSignature]:
        """The store and the signature of the very file read (one open file: a file
        replaced meanwhile is either read whole or not at all), every record checked
        under ``master_key`` (:meth:`KeyStore.verify`). Raises
        :class:`KeyStoreUnreadable` (no file, not a key store) or
        :class:`cim_schemas.errors.SecurityViolation` (a record that does not decrypt)."""
        try:
            with open(self.path, "rb") as f:
                signature = FileSignature.of(os.fstat(f.fileno()))
                text = f.read().decode("utf-8")
            store = KeyStore.loads(text, master_key)
        except ConfigurationError as exc:
            raise KeyStoreUnreadable(self.path, str(exc)) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyStoreUnreadable(self.path, type(exc).__name__) from None
        store.verify()
        return store, signature

    def save(self, store: KeyStore) -> None:
        """Write ``store`` (durable when this returns)."""
        text = store.dumps()
        with self._lock:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
