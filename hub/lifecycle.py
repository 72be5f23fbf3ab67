"""The lifecycle of one inbound message, as an explicit transition table.

received -> validated -> dispatched -> replied
    any state before replied -> dead_lettered (permanent failure, input kept)
    received -> duplicate (same MessageID and content: the stored reply is returned)
    received|validated|dispatched -> retry (recoverable failure: the adapter redelivers)
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from cim_schemas.errors import AmihubError

if TYPE_CHECKING:
    from mdm.ports import MessageLogRepository


class MessageLifecycle(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    DISPATCHED = "dispatched"
    REPLIED = "replied"
    DEAD_LETTERED = "dead_lettered"
    DUPLICATE = "duplicate"
    RETRY = "retry"


_S = MessageLifecycle

TRANSITIONS: dict[MessageLifecycle, frozenset[MessageLifecycle]] = {
    _S.RECEIVED: frozenset({_S.VALIDATED, _S.DEAD_LETTERED, _S.DUPLICATE, _S.RETRY}),
    _S.VALIDATED: frozenset({_S.DISPATCHED, _S.DEAD_LETTERED, _S.RETRY}),
    _S.DISPATCHED: frozenset({_S.REPLIED, _S.DEAD_LETTERED, _S.RETRY}),
    _S.REPLIED: frozenset(),
    _S.DEAD_LETTERED: frozenset(),
    _S.DUPLICATE: frozenset(),
    _S.RETRY: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(AmihubError):
    """A programming error: the pipeline tried a step the lifecycle does not allow."""


def check_transition(current: MessageLifecycle, new: MessageLifecycle) -> MessageLifecycle:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"message cannot go from {current} to {new}")
    return new


class LifecycleRecorder:
    """Records one message's steps in the message log, refusing illegal transitions.

    ``MessageLogRepository.start`` records *received*; ``finish`` records the
    terminal state; :meth:`advance` records the steps between.
    """

    def __init__(self, log_id: int) -> None:
        self.log_id = log_id
        self.state = MessageLifecycle.RECEIVED

    def advance(
        self, log: MessageLogRepository, new: MessageLifecycle, detail: str | None = None
    ) -> None:
        check_transition(self.state, new)
        log.transition(self.log_id, new, detail)
        self.state = new

    def finish(
        self,
        log: MessageLogRepository,
        new: MessageLifecycle,
        result: str | None,
        reply: bytes | None,
    ) -> None:
        check_transition(self.state, new)
        log.finish(self.log_id, new, result, reply)
        self.state = new

    def rolled_back(self) -> None:
        """The transaction that held the steps after *received* was rolled back."""
        self.state = MessageLifecycle.RECEIVED

    def plan(self, new: MessageLifecycle) -> MessageLifecycle:
        """Check and take a step the caller writes itself, in bulk with other messages'."""
        check_transition(self.state, new)
        self.state = new
        return new
