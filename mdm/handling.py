"""What every command handler shares: its signature and its context.

Handlers are plain functions ``(command, uow, ctx) -> result`` (mdm/handlers.py,
mdm/group_handlers.py); ``mdm.handlers.HANDLERS`` is the one table of them that the
bootstrap gives the bus. Kept apart so that handler modules can import these without
importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mdm.ports import UnitOfWork


@dataclass(frozen=True)
class HandlerContext:
    actor: str
    now: datetime
    #: where the command came in: soap, amqp, sftp, import, headend, push (validation on
    #: ingest is configured per source, docs/vee.md); '' for anything else
    source: str = ""


Handler = Callable[[Any, UnitOfWork, HandlerContext], Any]


class CommandBus(Protocol):
    """What hands a command to its handler (hub.bus.MessageBus): for callers outside the
    hub, such as the mapped-file importer, that are given the bus."""

    def handle(self, command: object, uow: UnitOfWork, ctx: HandlerContext) -> Any: ...
