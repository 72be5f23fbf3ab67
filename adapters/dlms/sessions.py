"""One association at a time per meter.

A meter accepts a management-client invocation counter only if it goes forward;
the client reads the meter's last accepted counter before it associates. Two
associations to one meter at once (a control job of the scheduler and an
on-demand read of a route) would both take the same counter and the second would
be refused. :func:`one_at_a_time` wraps a session factory so that a session holds
its meter's lock from connection to ``close()``; a meter still busy after
``wait`` seconds counts as unreachable (recoverable: a read retries it).
"""

from __future__ import annotations

import threading

from cim_schemas.errors import MeterUnreachable
from hes.client.session import DelegatingSession, MeterSession
from hes.engine import MeterTarget, SessionFactory


class _Locked(DelegatingSession):
    """A MeterSession that releases its meter's lock when closed."""

    def __init__(self, inner: MeterSession, lock: threading.Lock) -> None:
        super().__init__(inner)
        self._lock: threading.Lock | None = lock

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def one_at_a_time(sessions: SessionFactory, wait: float) -> SessionFactory:
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def factory(target: MeterTarget, timeout: float) -> MeterSession:
        with guard:
            lock = locks.setdefault(target.mrid, threading.Lock())
        if not lock.acquire(timeout=wait):
            raise MeterUnreachable(f"{target.mrid} is busy with another association")
        try:
            inner = sessions(target, timeout)
        except BaseException:
            lock.release()
            raise
        return _Locked(inner, lock)

    return factory
