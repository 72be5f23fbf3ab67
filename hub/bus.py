"""The command bus: commands go in, the handler registered for their type runs.

Adapters never call the domain directly: they hand the hub a message, the
hub's translators build commands, and the bus finds the handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mdm.handlers import Handler, HandlerContext
from mdm.ports import UnitOfWork


class MessageBus:
    def __init__(self, handlers: Mapping[type[Any], Handler]) -> None:
        self._handlers = dict(handlers)

    def handle(self, command: object, uow: UnitOfWork, ctx: HandlerContext) -> Any:
        try:
            handler = self._handlers[type(command)]
        except KeyError:
            raise LookupError(f"no handler for {type(command).__name__}") from None
        return handler(command, uow, ctx)

    def register(self, command_type: type[Any], handler: Handler) -> None:
        self._handlers[command_type] = handler
