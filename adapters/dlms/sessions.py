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
from collections.abc import Sequence
from datetime import datetime

from hes.client.session import MeterEvent, MeterSession, Profile, RegisterValue
from hes.dlms.axdr import Value
from hes.engine import MeterTarget, SessionFactory
from hub.errors import MeterUnreachable


class _Locked:
    """A MeterSession that releases its meter's lock when closed."""

    def __init__(self, inner: MeterSession, lock: threading.Lock) -> None:
        self._inner = inner
        self._lock: threading.Lock | None = lock

    def associate(self) -> None:
        self._inner.associate()

    def read_clock(self) -> datetime:
        return self._inner.read_clock()

    def read_registers(self, obis: Sequence[str]) -> list[RegisterValue]:
        return self._inner.read_registers(obis)

    def read_profile(self, start: datetime, end: datetime) -> Profile:
        return self._inner.read_profile(start, end)

    def read_event_log(self) -> list[MeterEvent]:
        return self._inner.read_event_log()

    def read_control_state(self) -> int:
        return self._inner.read_control_state()

    def set_clock(self, ts: datetime) -> None:
        self._inner.set_clock(ts)

    def disconnect(self) -> None:
        self._inner.disconnect()

    def reconnect(self) -> None:
        self._inner.reconnect()

    def get_attribute(self, class_id: int, obis: str, attribute: int) -> Value:
        return self._inner.get_attribute(class_id, obis, attribute)

    def set_attribute(self, class_id: int, obis: str, attribute: int, value: bytes) -> None:
        self._inner.set_attribute(class_id, obis, attribute, value)

    def invoke(self, class_id: int, obis: str, method: int, parameters: bytes) -> None:
        self._inner.invoke(class_id, obis, method, parameters)

    def release(self) -> None:
        self._inner.release()

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
