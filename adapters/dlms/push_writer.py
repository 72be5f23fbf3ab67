"""Pushes from the listener to the store in batches: one thread, one transaction a batch.

The push listener hands every accepted push and every refused one to :meth:`PushWriter.submit`
(a bounded queue: when it is full ``submit`` blocks, so the listener stops reading and
TCP slows the meters down). The writer thread takes what has arrived, up to
``batch_size`` items or ``batch_wait`` seconds after the first, and writes it with
:meth:`hub.push_store.MdmPushSink.write` (one transaction: readings, events, security events
and their EventMessages).

A batch the store cannot take now (:class:`cim_schemas.errors.RecoverableError`) is kept and
tried again with a doubling delay, so nothing is lost while the database is away. A
batch refused for good (any other error) is written again push by push, so that one
bad push does not take the others with it; a push that fails alone is logged (meter,
time, reason) and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cim_schemas.errors import RecoverableError
from hes.push import PushedData, SecurityEvent
from hub.push_store import PushWrite
from mdm.backoff import Backoff

log = logging.getLogger("amihub.hes.push")

PushItem = PushedData | SecurityEvent


class PushBatchSink(Protocol):
    def write(self, items: Sequence[PushItem]) -> PushWrite: ...


@dataclass
class PushTotals:
    """What the writer stored since it started."""

    pushes: int = 0
    refused: int = 0
    readings_stored: int = 0
    readings_published: int = 0
    events_new: int = 0
    batches: int = 0
    dropped: int = 0  # pushes refused by the store for good (logged one by one)

    def add(self, result: PushWrite) -> None:
        self.pushes += result.pushes
        self.refused += result.refused
        self.readings_stored += result.readings_stored
        self.readings_published += result.readings_published
        self.events_new += result.events_new
        self.batches += 1


def describe(item: PushItem) -> str:
    """One push in a log line (never its frame or keys)."""
    if isinstance(item, PushedData):
        return f"push of {item.mrid or item.logical_device_name} at {item.ts.isoformat()}"
    sender = item.mrid or (item.system_title.hex() if item.system_title else "-")
    return f"refused push of {sender} at {item.at.isoformat()}"


class PushWriter:
    def __init__(
        self,
        sink: PushBatchSink,
        *,
        batch_size: int = 500,
        batch_wait: float = 0.2,
        queue_size: int = 20_000,
        retry_delay: float = 0.5,
        retry_max_delay: float = 30.0,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.totals = PushTotals()
        self._queue: queue.Queue[PushItem] = queue.Queue(queue_size)
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="dlms-push-writer", daemon=True)

    def submit(self, item: PushItem) -> None:
        """Queue one push (blocks while the queue is full)."""
        self._queue.put(item)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop. If the store does not take it within
        ``timeout`` seconds the rest is given up (logged with its count)."""
        self._stopping.set()
        if not self._thread.is_alive():
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            lost = self._queue.qsize() + self._in_flight
            log.error(
                "push writer stopped with %d push(es) not stored: the store did not answer", lost
            )
            self._thread.join(5)

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._abandon.is_set():
            batch = self._next_batch()
            if batch:
                self._in_flight = len(batch)
                self._write(batch)
                self._in_flight = 0
            elif self._stopping.is_set():
                return

    def _next_batch(self) -> list[PushItem]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[PushItem]) -> None:
        backoff = Backoff(self.retry_delay, self.retry_max_delay)
        failures = 0
        while not self._abandon.is_set():
            try:
                self.totals.add(self.sink.write(batch))
                return
            except RecoverableError as exc:
                failures += 1
                delay = backoff.delay(failures)
                log.warning(
                    "%d push(es) not stored yet (%s: %s); trying again in %.1fs",
                    len(batch),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                self._abandon.wait(delay)
            except Exception as exc:  # refused for good (or a bug): keep the others
                if len(batch) > 1:
                    log.warning(
                        "a batch of %d pushes was refused (%s: %s): writing them one by one",
                        len(batch),
                        type(exc).__name__,
                        exc,
                    )
                    for item in batch:
                        self._write([item])
                    return
                self.totals.dropped += 1
                log.error("%s not stored: %s: %s", describe(batch[0]), type(exc).__name__, exc)
                return
