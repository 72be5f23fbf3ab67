"""What the adapters' services use of the bootstrapped hub, as a protocol.

The composition root (hub/bootstrap.py) builds the :class:`hub.bootstrap.App` and
hands it to the services it wires; an adapter types it as :class:`HubApp`, so that
it never imports the root (``.importlinter``). No driver is named here: an adapter
that needs the store's engine adds it in its own protocol (adapters/web/hub_app.py).
"""

from __future__ import annotations

from typing import Protocol

from hub.bus import MessageBus
from hub.journal import MessageJournal
from hub.pipeline import Pipeline
from hub.routing import RouteTable
from hub.settings import Settings
from mdm.ports import UnitOfWorkFactory


class HubApp(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def uow_factory(self) -> UnitOfWorkFactory: ...
    @property
    def bus(self) -> MessageBus: ...
    @property
    def routes(self) -> RouteTable: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def message_journal(self) -> MessageJournal: ...
