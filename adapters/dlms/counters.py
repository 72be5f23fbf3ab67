"""The meters' response counters kept in the store (``hes.client.session.MeterCounterStore``).

The head-end's :class:`hes.client.session.ClientIdentity` checks the first counter of an
association against :meth:`StoredMeterCounters.last` and hands the highest counter it
saw to :meth:`StoredMeterCounters.record` when it releases the association. Neither
touches the store: an association must never wait for a database lock (an on-demand
read runs inside the hub's transaction, which on SQLite holds the write lock). A
thread of its own (``meter-counters``, started at the first use) does, every
``interval`` seconds, in one transaction on the ``invocation_counter`` rows of channel
``response`` (mdm/security_counters.py):

* writes the counters recorded since the last round (set-based, never lowering one);
* reads the rows changed since its last round (all of them the first time), so what
  other processes on the store recorded (``amihub serve``, engines) is checked too.

The first :meth:`last` of the process waits up to ``load_wait`` seconds for the first
round to have read the store (once: a store that cannot answer then, such as SQLite
locked by the transaction of the on-demand read asking, is not waited for again);
until that round is done :meth:`last` knows only what this process recorded. A store
that does not answer keeps the recorded counters for the next round (logged); the
counters recorded in the last ``interval`` are lost if the process dies without
:meth:`close`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cim_schemas.errors import AmihubError
from mdm.ports import UnitOfWorkFactory
from mdm.security_counters import CounterChannel, CounterClaim

log = logging.getLogger("amihub.hes.counters")

#: rows changed this long before the last round are read again (clocks of other hosts)
CLOCK_MARGIN = timedelta(seconds=60)
RESPONSE = CounterChannel.RESPONSE


def _raise(into: dict[bytes, int], counters: dict[bytes, int]) -> None:
    for system_title, counter in counters.items():
        if counter > into.get(system_title, -1):
            into[system_title] = counter


class StoredMeterCounters:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        interval: float = 2.0,
        load_wait: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.uow_factory = uow_factory
        self.interval = interval
        self.load_wait = load_wait
        self.clock = clock
        self._waited = False
        self._known: dict[bytes, int] = {}  # recorded here or read from the store
        self._pending: dict[bytes, int] = {}  # recorded here, not written yet
        self._read_at: datetime | None = None
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: set once a round has read the store
        self.loaded = threading.Event()

    # -- hes.client.session.MeterCounterStore ----------------------------------------------

    def last(self, system_title: bytes) -> int | None:
        self.start()
        if not self._waited:
            if not self.loaded.wait(self.load_wait):
                log.warning(
                    "meter counters not read from the store within %gs: associations are "
                    "checked against what this process recorded until they are",
                    self.load_wait,
                )
            self._waited = True
        with self._lock:
            return self._known.get(system_title)

    def record(self, system_title: bytes, counter: int) -> None:
        self.start()
        with self._lock:
            _raise(self._pending, {system_title: counter})
            _raise(self._known, {system_title: counter})

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (its first round reads the store); also done at first use."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="meter-counters", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.flush()
            except AmihubError as exc:
                log.warning(
                    "meter counters not exchanged with the store (%s: %s); trying again in %gs",
                    type(exc).__name__,
                    exc,
                    self.interval,
                )
            if self._stop.wait(self.interval):
                return

    def flush(self) -> None:
        """One round: write the recorded counters, read what changed in the store."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
            now = self.clock()
            since = None if self._read_at is None else self._read_at - CLOCK_MARGIN
            try:
                with self.uow_factory() as uow:
                    if pending:
                        claims = [CounterClaim(st, c) for st, c in sorted(pending.items())]
                        uow.invocation_counters.advance(RESPONSE, claims, now)
                    stored = uow.invocation_counters.last(RESPONSE, changed_since=since)
                    uow.commit()
            except BaseException:
                with self._lock:  # kept for the next round
                    _raise(self._pending, pending)
                raise
            with self._lock:
                _raise(self._known, stored)
            self._read_at = now
            self.loaded.set()

    def close(self) -> None:
        """Stop the thread and write what is recorded (one last round)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(30)
        if self._pending:
            try:
                self.flush()
            except AmihubError as exc:
                log.error(
                    "%d meter counter(s) not recorded in the store at stop (%s: %s)",
                    len(self._pending),
                    type(exc).__name__,
                    exc,
                )
