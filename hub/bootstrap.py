"""The one place where amihub is wired together.

``bootstrap(settings)`` builds the engine, the unit-of-work factory, the bus
with the domain handlers, the route table and the pipeline. Adapters receive
the resulting :class:`App`; nothing connects at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from adapters.sql.engine import store_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.schemas import message_schema
from hub.bus import MessageBus
from hub.forwarding import EventForwarder
from hub.headend import ControlJournal, EventPublisher, HeadEnd, HeadEndOutbox
from hub.headend_jobs import JobDispatch
from hub.nouns import build_routes
from hub.pipeline import Pipeline
from hub.routing import RouteTable
from hub.settings import Settings, load_settings
from hub.variants import cim_variants
from mdm.handlers import HANDLERS
from mdm.model import Utility
from mdm.ports import UnitOfWorkFactory

if TYPE_CHECKING:
    from hes.engine import MeterTarget

log = logging.getLogger("amihub")


@dataclass
class App:
    settings: Settings
    engine: Engine
    uow_factory: UnitOfWorkFactory
    bus: MessageBus
    routes: RouteTable
    pipeline: Pipeline
    #: the DLMS head-end (None without a [hes] manifest) and the control job records
    headend: HeadEnd | None = None
    journal: ControlJournal | None = None

    def close(self) -> None:
        if self.headend is not None:
            self.headend.close()
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


def headend_dispatch(settings: Settings) -> JobDispatch | None:
    """The AMQP adapter of the head-end's job dispatch for ``[hes] dispatch = "amqp"``;
    None: jobs run in the head-end's process (:class:`hub.headend_jobs.InProcessJobs`)."""
    if settings.hes.dispatch != "amqp":
        return None
    from adapters.dlms.dispatch import AmqpJobs  # imports kombu

    return AmqpJobs(settings.hes, settings.amqp)


def bootstrap(
    settings: Settings | None = None,
    *,
    migrate: bool = False,
    meters: Mapping[str, MeterTarget] | None = None,
) -> App:
    """``meters`` (mRID -> address and keys) overrides ``[hes] manifest`` (tests, demo)."""
    settings = settings or load_settings()
    # compile the message schema here, in the bootstrapping (main) thread: an lxml
    # schema first compiled in a worker thread while others validate can refuse
    # every valid message afterwards (lxml's per-thread dictionaries)
    message_schema()
    if migrate:
        upgrade(settings.database_url)
    engine = store_engine(settings.database_url, settings.store)
    uow_factory = SqlUnitOfWorkFactory(engine, staging_batch_size=settings.limits.ingest_batch_rows)
    bus = MessageBus(HANDLERS)
    journal = ControlJournal(uow_factory, EventPublisher(settings))
    headend: HeadEnd | None = None
    jobs: JobDispatch | None = None
    if meters is not None or settings.hes.manifest is not None:
        from adapters.dlms import MeterDirectory, headend_from_settings  # imports gurux

        directory = MeterDirectory(meters) if meters is not None else None
        dlms = headend_from_settings(
            settings.hes,
            journal,
            directory,
            runner=headend_dispatch(settings),
            publisher=HeadEndOutbox(settings),  # reads publish events and readings
            bus=bus,
        )
        if dlms is not None:
            headend, jobs = dlms, dlms.jobs
    routes = build_routes(
        settings, headend=headend, journal=journal, jobs=jobs, uow_factory=uow_factory
    )
    pipeline = Pipeline(
        uow_factory,
        bus,
        routes,
        settings.limits,
        settings.default_utility,
        forwarder=EventForwarder.from_settings(settings),
    )
    pipeline.variants = cim_variants(settings)  # the specs are read at first use
    if migrate:
        ensure_utility(uow_factory, settings.default_utility, settings.default_utility_name)
    return App(settings, engine, uow_factory, bus, routes, pipeline, headend, journal)
