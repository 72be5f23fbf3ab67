"""The one place where amihub is wired together.

``bootstrap(settings)`` builds the engine, the unit-of-work factory, the bus
with the domain handlers, the route table and the pipeline. Adapters receive
the resulting :class:`App`; nothing connects at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from hub.bus import MessageBus
from hub.nouns import build_routes
from hub.pipeline import Pipeline
from hub.routing import RouteTable
from hub.settings import Settings, load_settings
from mdm.handlers import HANDLERS
from mdm.model import Utility
from mdm.ports import UnitOfWorkFactory

log = logging.getLogger("amihub")


@dataclass
class App:
    settings: Settings
    engine: Engine
    uow_factory: UnitOfWorkFactory
    bus: MessageBus
    routes: RouteTable
    pipeline: Pipeline

    def close(self) -> None:
        self.engine.dispose()


def ensure_utility(uow_factory: UnitOfWorkFactory, code: str, name: str) -> Utility:
    with uow_factory() as uow:
        utility = uow.utilities.get(code)
        if utility is None:
            utility = uow.utilities.add(Utility(code=code, name=name))
            uow.audit.record("amihub", "create", "Utility", code)
            uow.commit()
            log.info("created utility %s (%s)", code, name)
        return utility


def bootstrap(settings: Settings | None = None, *, migrate: bool = False) -> App:
    settings = settings or load_settings()
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    uow_factory = SqlUnitOfWorkFactory(engine, staging_batch_size=settings.limits.ingest_batch_rows)
    bus = MessageBus(HANDLERS)
    routes = build_routes(settings)
    pipeline = Pipeline(uow_factory, bus, routes, settings.limits, settings.default_utility)
    if migrate:
        ensure_utility(uow_factory, settings.default_utility, settings.default_utility_name)
    return App(settings, engine, uow_factory, bus, routes, pipeline)
