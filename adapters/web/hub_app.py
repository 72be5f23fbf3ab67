"""What the operator interface uses of the bootstrapped hub (``hub.bootstrap.App``),
as a protocol: adapters never import the composition root (.importlinter)."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from hub.bus import MessageBus
from hub.journal import MessageJournal
from hub.pipeline import Pipeline
from hub.settings import Settings
from mdm.ports import UnitOfWorkFactory


class HubApp(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def uow_factory(self) -> UnitOfWorkFactory: ...
    @property
    def bus(self) -> MessageBus: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def message_journal(self) -> MessageJournal: ...
