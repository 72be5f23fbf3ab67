"""The key store file as a running service sees it: re-read when it changes.

``amihub keys change`` (another process) rewrites the key store file atomically
(:mod:`hes.security.keyfile`). A :class:`KeyStoreWatch` holds what a service built
from the file (its meter directory's credentials, say) and replaces it when the file
changed:

* :meth:`KeyStoreWatch.check` looks at the file's signature (inode, mtime in ns,
  size: one ``stat``) at most once per ``interval`` seconds, or at once with
  ``force=True`` (a meter refused our keys: the file may have changed within the
  interval);
* a changed file is read, every record is checked under the master key, and the
  caller's ``build`` turns the store into its view; only then is the view swapped in
  (one reference assignment: readers see the old view or the new one, never half);
* a file that cannot be read, does not parse, has a record that fails its tag
  under the master key, or that ``build`` refuses is logged as an error, without key
  material, once per version of the file; the previous view stays in use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cim_schemas.errors import AmihubError
from hes.security.keyfile import FileSignature, KeyStoreFile
from hes.security.keystore import KeyStore

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, repr=False)
class KeyStoreSource:
    """Where a service reads its meter keys: the file, its master key, and how often
    (seconds) it looks for a change."""

    file: KeyStoreFile
    master_key: bytes
    interval: float = 1.0

    def __repr__(self) -> str:  # never the master key
        return f"KeyStoreSource({self.file.path}, every {self.interval} s)"


class KeyStoreWatch(Generic[T]):
    def __init__(
        self,
        source: KeyStoreSource,
        build: Callable[[KeyStore], T],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the file and build the first view now: errors here are the caller's
        (a service does not start on a key store it cannot use)."""
        self.source = source
        self._build = build
        self._clock = clock
        store, signature = source.file.read(source.master_key)
        self._view = build(store)
        #: the file last looked at (used or refused; None: it was missing)
        self._seen: FileSignature | None = signature
        self._checked = clock()
        self._lock = threading.Lock()
        #: how many times a changed file was taken into use
        self.reloads = 0
        #: how many changed files were refused (the previous view kept)
        self.failures = 0

    def __repr__(self) -> str:
        return f"KeyStoreWatch({self.source.file.path}, {self.reloads} reloads)"

    @property
    def view(self) -> T:
        """The current view, without looking at the file."""
        return self._view

    def current(self) -> T:
        """The current view, after a (rate-limited) look at the file."""
        self.check()
        return self._view

    def check(self, force: bool = False) -> bool:
        """Look at the file (unless looked at less than ``interval`` ago and not
        ``force``); True when a changed file was read and its view swapped in."""
        if not force:
            if self._clock() - self._checked < self.source.interval:
                return False
            if not self._lock.acquire(blocking=False):
                return False  # another thread is looking: use the view it leaves
        else:
            self._lock.acquire()
        try:
            self._checked = self._clock()
            signature = self.source.file.signature()
            if signature is None:
                if self._seen is not None:
                    self._refused(None, "the file is missing")
                return False
            if signature == self._seen:
                return False
            return self._reload(signature)
        finally:
            self._lock.release()

    def _reload(self, looked_at: FileSignature) -> bool:
        # a refused file is remembered by the signature seen before reading: if it was
        # replaced in between, the next look sees another signature and reads again
        path = self.source.file.path
        try:
            store, signature = self.source.file.read(self.source.master_key)
        except AmihubError as exc:  # our messages carry no key material
            self._refused(looked_at, str(exc))
            return False
        except Exception as exc:  # anything else: its type only
            self._refused(looked_at, type(exc).__name__)
            return False
        try:
            view = self._build(store)
        except AmihubError as exc:
            self._refused(signature, str(exc))
            return False
        except Exception as exc:
            self._refused(signature, type(exc).__name__)
            return False
        self._view = view
        self._seen = signature
        self.reloads += 1
        log.info(
            "key store %s changed: re-read (%d meters, %d with pending keys)",
            path,
            len(store.meters()),
            len(store.pending_meters()),
        )
        return True

    def _refused(self, signature: FileSignature | None, reason: str) -> None:
        self._seen = signature
        self.failures += 1
        log.error(
            "key store %s changed but cannot be used (%s): the previous keys stay in use",
            self.source.file.path,
            reason,
        )
