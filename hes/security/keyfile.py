"""The key store on disk: one JSON file of ciphertexts, replaced atomically (0600).

A write goes to a temporary file in the same folder, is fsynced, then renamed over
the store, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hes.security.keystore import KeyStore
from hub.errors import ConfigurationError


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
