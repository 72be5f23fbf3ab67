"""Replaying a dead letter: its kept input goes through the pipeline again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cim_schemas.errors import ConfigurationError
from hub.journal import NOT_REPLAYABLE
from hub.messages import InboundMessage, Outcome

if TYPE_CHECKING:
    from hub.app import HubApp


def replay(app: HubApp, dead_letter_id: int) -> Outcome:
    """Process a dead letter's input again; it is marked resolved when the result is OK.

    The replay does not claim the original MessageID again (the first attempt
    holds it), so the sender's idempotency record stays as it was.
    """
    with app.uow_factory() as uow:
        dead_letter = uow.dead_letters.get(dead_letter_id)
    if dead_letter is None:
        raise ConfigurationError(f"no dead letter {dead_letter_id}")
    why = dead_letter.metadata.get(NOT_REPLAYABLE)
    if why:
        raise ConfigurationError(f"dead letter {dead_letter_id} cannot be replayed: {why}")
    if dead_letter.truncated:
        where = dead_letter.metadata.get("path", "the sender")
        raise ConfigurationError(
            f"dead letter {dead_letter_id} kept only the head of a larger input; "
            f"replay the original from {where}"
        )
    return app.pipeline.process(
        InboundMessage(
            source=dead_letter.source,
            endpoint=dead_letter.endpoint,
            body=dead_letter.body,
            utility=dead_letter.metadata.get("utility"),
            metadata=dict(dead_letter.metadata),
            replay_of=dead_letter_id,
        )
    )
