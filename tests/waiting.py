"""Waiting for the thing a test waits for, never a fixed sleep.

``wait_until`` polls a predicate (a row, a broker count, a flag) until it holds or
the timeout passes, then fails naming what it waited for. A ``threading.Event`` or
``Barrier`` is better still where the code under test can set one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.02
) -> T:
    """The first truthy value of ``predicate()`` within ``timeout`` seconds; else an
    AssertionError naming ``what`` (and the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {value!r})"
            )
        time.sleep(interval)
