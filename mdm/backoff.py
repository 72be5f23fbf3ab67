"""The one retry backoff: exponential, capped, with one jitter rule.

Every retry in amihub waits :meth:`Backoff.delay` after its ``n``-th consecutive failure
(1-based): ``first`` x 2^(n - 1) seconds, at most ``maximum``, less a random part of
up to ``jitter`` of it ("equal jitter": with the default 0.5 a wait lies between half
the nominal delay and all of it, so retries of many clients spread out and never wait
longer than the cap). ``jitter = 0`` gives the nominal delays (tests).

Used by the outbox dispatcher, the AMQP reconnects and redeliveries, the head-end
engine's job redeliveries, the push writer, the SFTP push and inbox, and the head-end's
meter reads, controls and key changes; each keeps its own ``first`` / ``maximum`` (and
attempts) where they are configured today. It lives in the lowest layer that all of
them import (no hub, adapter or driver import here).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

#: the share of a nominal delay that may be taken off at random
JITTER: Final = 0.5


@dataclass(frozen=True)
class Backoff:
    """Exponential delays: ``first``, doubling, capped at ``maximum``; jittered."""

    first: float
    maximum: float
    jitter: float = JITTER

    def __post_init__(self) -> None:
        if self.first < 0 or self.maximum < 0:
            raise ValueError(f"backoff delays must not be negative ({self.first}, {self.maximum})")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter {self.jitter} is not between 0 and 1")

    def nominal(self, failures: int) -> float:
        """The delay after the ``failures``-th consecutive failure, before jitter."""
        if failures < 1:
            raise ValueError(f"failures must be at least 1, not {failures}")
        # the exponent is bounded so a long outage cannot overflow the float
        return float(min(self.maximum, self.first * 2.0 ** min(failures - 1, 64)))

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        nominal = self.nominal(failures)
        return nominal * (1.0 - self.jitter * random.random()) if self.jitter else nominal
