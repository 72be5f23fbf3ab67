"""Invocation counters accepted from each meter, kept in the store (replay protection).

DLMS security suite 0 puts the sender's invocation counter in every ciphered frame
(the GCM nonce is system title || counter): a counter that does not go forward is a
replayed frame, or a meter that reuses nonces. The head-end keeps, per meter system
title and per *channel*, the last counter it accepted, so that a restart, or a second
process on the same store, cannot accept an old frame again.

Channels are kept apart because one meter counter serves both: a push queued in the
listener may carry a lower counter than an answer the meter gave a read meanwhile,
and neither is a replay of the other (a DataNotification cannot stand in for a GET
response).

:meth:`InvocationCounterRepository.advance` is the decision: it runs in the caller's
transaction (the one that stores what the frames carried), locks the rows of the
system titles it is given until that transaction ends, and says for each claim
whether its counter goes forward. Two transactions given the same counter: the second
waits for the first and is refused once the first commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

SYSTEM_TITLE_BYTES = 8
MAX_COUNTER = 0xFFFFFFFF  # 4 bytes in the security header


class CounterChannel(StrEnum):
    PUSH = "push"  # DataNotifications the meter pushed (hes.push)
    RESPONSE = "response"  # the meter's answers in the head-end's associations


@dataclass(frozen=True)
class CounterClaim:
    """A frame's sender and counter, to be accepted only if the counter goes forward."""

    system_title: bytes
    invocation_counter: int

    def __post_init__(self) -> None:
        if len(self.system_title) != SYSTEM_TITLE_BYTES:
            raise ValueError(
                f"counter claim: system title {self.system_title.hex() or '(empty)'} is "
                f"{len(self.system_title)} bytes, not {SYSTEM_TITLE_BYTES}"
            )
        if not 0 <= self.invocation_counter <= MAX_COUNTER:
            raise ValueError(
                f"counter claim of {self.system_title.hex()}: invocation counter "
                f"{self.invocation_counter} is outside 0..{MAX_COUNTER}"
            )


@dataclass(frozen=True)
class CounterDecision:
    """What :meth:`InvocationCounterRepository.advance` decided for one claim."""

    accepted: bool
    #: the last counter accepted before this claim (stored, or earlier in the same call);
    #: None when the system title had none
    last: int | None


class InvocationCounterRepository(Protocol):
    """``uow.invocation_counters``: the last accepted counter per (system title, channel)."""

    def last(
        self,
        channel: CounterChannel,
        system_titles: Sequence[bytes] | None = None,
        *,
        changed_since: datetime | None = None,
    ) -> dict[bytes, int]:
        """The stored counters of ``system_titles`` (every system title when None);
        with ``changed_since``, only those stored at or after that instant."""
        ...

    def advance(
        self, channel: CounterChannel, claims: Sequence[CounterClaim], at: datetime
    ) -> list[CounterDecision]:
        """One decision per claim, in order: accepted when its counter is above the stored
        one and above every claim of the same system title accepted before it in
        ``claims``; the stored counter becomes the highest accepted. The rows concerned
        stay locked until the caller's transaction ends (set-based: a few statements
        for the whole sequence, whatever its length)."""
        ...
