"""The lifecycle of one inbound message, as an explicit transition table.

received -> validated -> dispatched -> replied
    any state before replied -> dead_lettered (permanent failure, input kept)
    received -> duplicate (same MessageID and content: the stored reply is returned)
    received|validated|dispatched -> retry (recoverable failure: the adapter redelivers)
"""

from __future__ import annotations

from enum import StrEnum

from cim_schemas.errors import AmihubError


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
    """One message's place in the lifecycle: its message-log row and its state.

    It refuses an illegal step (:meth:`plan`); the message journal
    (:mod:`hub.journal`) writes the steps it takes, alone or in bulk with other
    messages'.
    """

    def __init__(self, log_id: int) -> None:
        self.log_id = log_id
        self.state = MessageLifecycle.RECEIVED

    def rolled_back(self) -> None:
        """The transaction that held the steps after *received* was rolled back."""
        self.state = MessageLifecycle.RECEIVED

    def plan(self, new: MessageLifecycle) -> MessageLifecycle:
        """Check and take a step (the journal writes it)."""
        check_transition(self.state, new)
        self.state = new
        return new
