"""The in-process adapter: hands messages to the pipeline without any network.

Two ways in, like the real transports: :meth:`MemoryAdapter.request` is a
synchronous call (as SOAP), :meth:`MemoryAdapter.post` queues a message for a
worker thread and the reply arrives on :meth:`MemoryAdapter.replies` (as AMQP
with reply_to). Tests and the embedded default drive the hub through it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cim_schemas.errors import RecoverableError
from hub.messages import InboundMessage, Outcome
from hub.pipeline import Pipeline
from mdm.backoff import Backoff

log = logging.getLogger("amihub.adapters.memory")


@dataclass
class MemoryAdapter:
    pipeline: Pipeline
    name: str = "memory"
    max_attempts: int = 3
    #: the wait between attempts of a queued message (mdm.backoff: doubling, capped)
    retry_delay: float = 0.05
    retry_max_delay: float = 1.0
    _inbox: queue.Queue[InboundMessage | None] = field(default_factory=queue.Queue)
    _replies: queue.Queue[Outcome] = field(default_factory=queue.Queue)
    _worker: threading.Thread | None = None

    def request(
        self,
        body: bytes,
        *,
        source: str = "memory",
        utility: str | None = None,
        endpoint: str | None = None,
    ) -> Outcome:
        return self.pipeline.process(
            InboundMessage(
                source=source,
                endpoint=endpoint or f"{self.name}:request",
                body=body,
                utility=utility,
            )
        )

    def request_file(
        self, path: Path, *, source: str = "memory", utility: str | None = None
    ) -> Outcome:
        return self.pipeline.process(
            InboundMessage(source=source, endpoint=f"{self.name}:file", path=path, utility=utility)
        )

    # -- queued mode ---------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="memory-adapter", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._worker is not None:
            self._inbox.put(None)
            self._worker.join(timeout)
            self._worker = None

    def post(self, body: bytes, *, source: str = "memory", utility: str | None = None) -> None:
        self._inbox.put(
            InboundMessage(source=source, endpoint=f"{self.name}:queue", body=body, utility=utility)
        )

    def replies(self, timeout: float = 10.0) -> Outcome:
        return self._replies.get(timeout=timeout)

    def _run(self) -> None:
        while (msg := self._inbox.get()) is not None:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    self._replies.put(self.pipeline.process(msg))
                    break
                except RecoverableError as exc:
                    log.warning(
                        "attempt %d of %d failed, retrying: %s", attempt, self.max_attempts, exc
                    )
                    if attempt < self.max_attempts:
                        time.sleep(Backoff(self.retry_delay, self.retry_max_delay).delay(attempt))
            else:
                log.error(
                    "giving up on a message from %s after %d attempts",
                    msg.source,
                    self.max_attempts,
                )
