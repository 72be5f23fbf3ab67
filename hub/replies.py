"""A reply written once and read once: in memory up to a limit, then in a temp file.

The read path (get) writes its reply here while the store streams the rows, so a
meter-year reply never sits whole in memory; the size and SHA-256 are taken while
writing, for the message log (reads log a digest, not the reply).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from typing import IO, Final

#: replies up to this size stay in memory; larger ones spill to a temporary file
SPOOL_MEMORY_BYTES: Final = 1 << 20
CHUNK_BYTES: Final = 64 * 1024


class ReplySpool:
    """Write the reply (``write``), then hand it on as bytes or as chunks."""

    def __init__(self, memory_bytes: int = SPOOL_MEMORY_BYTES) -> None:
        # closed by getvalue(), the end of chunks() or close(): it outlives this call
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=memory_bytes)  # noqa: SIM115
        self._sha = hashlib.sha256()
        self._memory_bytes = memory_bytes
        self.size = 0

    # -- writing (a file-like sink for lxml's xmlfile) -----------------------------------

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the spool is read back by the same process."""

    # -- reading ---------------------------------------------------------------------------

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()

    @property
    def in_memory(self) -> bool:
        return self.size <= self._memory_bytes

    def getvalue(self) -> bytes:
        """The whole reply (and the spool is closed)."""
        try:
            self._file.seek(0)
            return self._file.read()
        finally:
            self.close()

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The reply in chunks from the start; the spool is closed at the end."""
        try:
            self._file.seek(0)
            while chunk := self._file.read(size):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()
