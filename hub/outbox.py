"""Delivering the transactional outbox: one dispatcher per channel, retries with backoff.

Whatever must leave amihub (async replies, events to subscribers, exports to
partners) is written to the outbox in the same transaction as the change it
reports (:meth:`mdm.ports.OutboxRepository.enqueue`), so nothing is lost
between commit and send, and it survives a restart. A dispatcher claims due
items of its channel, hands each to the adapter's ``send``, and records the
result: sent; or, on :class:`~cim_schemas.errors.RecoverableError`, a retry after an
exponential backoff; or, after ``max_attempts`` or on a permanent error, the
item is marked dead and kept in the dead-letter store for an operator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cim_schemas.errors import AmihubError, ErrorDetail, RecoverableError
from hub.journal import MessageJournal
from mdm.backoff import JITTER, Backoff
from mdm.ports import OutboxItem, UnitOfWorkFactory

log = logging.getLogger("amihub.outbox")

#: Deliver one item, or raise RecoverableError (retry) / another AmihubError (give up).
Send = Callable[[OutboxItem], None]
#: Deliver several items at once (e.g. AMQP publishes with one batch of confirms);
#: returns the ids that failed, each with its exception.
SendBatch = Callable[[Sequence[OutboxItem]], dict[int, Exception]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    first_delay: float = 1.0  # seconds
    max_delay: float = 600.0
    jitter: float = JITTER  # the share of a delay taken off at random (mdm.backoff)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        return Backoff(self.first_delay, self.max_delay, self.jitter).delay(attempt)


class OutboxDispatcher:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        channel: str,
        *,
        send: Send | None = None,
        send_batch: SendBatch | None = None,
        policy: RetryPolicy | None = None,
        batch_size: int = 100,
        poll_interval: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if (send is None) == (send_batch is None):
            raise ValueError("give exactly one of send or send_batch")
        self.uow_factory = uow_factory
        self.channel = channel
        self._send = send
        self._send_batch = send_batch
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one round -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Deliver what is due now; returns how many items were handled."""
        with self.uow_factory() as uow:
            items = uow.outbox.claim_due(self.channel, self.clock(), self.batch_size)
            if not items:
                return 0
            failures = self._deliver(items)
            now = self.clock()
            for item in items:
                error = failures.get(item.id)
                if error is None:
                    uow.outbox.mark_sent(item.id, now)
                    continue
                attempt = item.attempts + 1
                give_up = not isinstance(error, RecoverableError) or (
                    attempt >= self.policy.max_attempts
                )
                retry_at = None if give_up else now + timedelta(seconds=self.policy.delay(attempt))
                uow.outbox.mark_failed(item.id, f"{type(error).__name__}: {error}", retry_at)
                if give_up:
                    log.error(
                        "giving up %s %s to %s after %d attempt(s): %s",
                        item.verb,
                        item.noun,
                        item.destination,
                        attempt,
                        error,
                    )
                    MessageJournal.undeliverable(
                        uow,
                        source=f"outbox:{self.channel}",
                        endpoint=item.destination,
                        received_at=item.created_at,
                        error=ErrorDetail("3001", f"delivery failed {attempt} time(s): {error}"),
                        body=item.body,
                        metadata={
                            "outbox_id": str(item.id),
                            "verb": item.verb,
                            "noun": item.noun,
                            **item.headers,
                        },
                    )
                else:
                    log.warning(
                        "delivery of %s %s to %s failed (attempt %d), retry at %s: %s",
                        item.verb,
                        item.noun,
                        item.destination,
                        attempt,
                        retry_at.isoformat() if retry_at else "-",
                        error,
                    )
            uow.commit()
        return len(items)

    def _deliver(self, items: Sequence[OutboxItem]) -> dict[int, Exception]:
        if self._send_batch is not None:
            return self._send_batch(items)
        assert self._send is not None
        failures: dict[int, Exception] = {}
        for item in items:
            try:
                self._send(item)
            except AmihubError as exc:
                failures[item.id] = exc
            except Exception as exc:  # a driver error the adapter did not map: retry it
                log.exception("unexpected error delivering outbox item %s", item.id)
                failures[item.id] = RecoverableError(f"{type(exc).__name__}: {exc}")
        return failures

    # -- background thread -----------------------------------------------------------------

    def wake(self) -> None:
        """Deliver now rather than at the next poll (after a commit that enqueued)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"outbox-{self.channel}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except RecoverableError as exc:
                log.warning("outbox %s: store unavailable, retrying: %s", self.channel, exc)
                handled = 0
            if handled < self.batch_size:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
