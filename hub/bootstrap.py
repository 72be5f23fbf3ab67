"""The one place where amihub is wired together.

``bootstrap(settings)`` builds the engine, the unit-of-work factory, the bus
with the domain handlers, the route table and the pipeline. Adapters receive
the resulting :class:`App`; nothing connects at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from adapters.sql.engine import store_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.errors import ConfigurationError
from cim_schemas.schemas import message_schema
from hub.bus import MessageBus
from hub.forwarding import EventForwarder
from hub.headend import ControlJournal, EventPublisher, HeadEnd, HeadEndOutbox
from hub.headend_jobs import JobDispatch
from hub.journal import MessageJournal
from hub.nouns import build_routes
from hub.pipeline import Pipeline
from hub.routing import RouteTable
from hub.settings import Settings, load_settings
from hub.variants import cim_variants
from mdm.commands import StoreMeterReadings
from mdm.handlers import HANDLERS, store_meter_readings
from mdm.model import Utility
from mdm.ports import UnitOfWorkFactory

if TYPE_CHECKING:
    from adapters.dlms.engine_worker import EngineWorker
    from adapters.dlms.headend import DlmsHeadEnd
    from adapters.dlms.push_service import PushService
    from adapters.dlms.service import HesService
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
    #: the one writer of the message log, lifecycle, dead letters and audit (the pipeline's)
    message_journal: MessageJournal = field(init=False)

    def __post_init__(self) -> None:
        self.message_journal = self.pipeline.journal

    def close(self) -> None:
        if self.headend is not None:
            self.headend.close()
        self.engine.dispose()


def ensure_utility(uow_factory: UnitOfWorkFactory, code: str, name: str) -> Utility:
    with uow_factory() as uow:
        utility = uow.utilities.get(code)
        if utility is None:
            utility = uow.utilities.add(Utility(code=code, name=name))
            MessageJournal.audit(uow, "amihub", "create", "Utility", code)
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
    if settings.vee.on_ingest or any(r.on_ingest for r in settings.vee.rules):
        bus.register(
            StoreMeterReadings,
            partial(store_meter_readings, ingest_rules=settings.vee.ingest_rules),
        )
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


# -- the services and commands of the head-end: their wiring, here and nowhere else ---------


@contextmanager
def open_store(settings: Settings) -> Iterator[UnitOfWorkFactory]:
    """The store alone (engine and unit-of-work factory), for the commands that need no
    pipeline (``amihub engine``, ``amihub engine read``, ``amihub keys``); disposed
    when the block ends."""
    engine = store_engine(settings.database_url, settings.store)
    try:
        yield SqlUnitOfWorkFactory(engine, staging_batch_size=settings.limits.ingest_batch_rows)
    finally:
        engine.dispose()


def _dlms_headend(app: App, section: str) -> DlmsHeadEnd:
    from adapters.dlms.headend import DlmsHeadEnd  # imports gurux: only when enabled

    if not isinstance(app.headend, DlmsHeadEnd):
        raise ConfigurationError(
            f"[{section}] is enabled but no [hes] manifest is configured"
            + (
                ": the push listener finds the pushing meters and their keys in the "
                "head-end's directory"
                if section == "hes.push"
                else ""
            )
        )
    return app.headend


def hes_service(app: App) -> HesService:
    """``amihub serve`` ``[hes]``: the head-end scheduler (adapters/dlms/service.py)."""
    from adapters.dlms.service import HesService

    return HesService(_dlms_headend(app, "hes"), app.uow_factory, app.settings)


def push_service(app: App) -> PushService:
    """``amihub serve`` ``[hes.push]``: the push listener and its writer, storing through
    :class:`hub.push_store.MdmPushSink` with the head-end's outbox publisher."""
    from adapters.dlms.push_service import PushService
    from hes.push import PushDecoder
    from hub.push_store import MdmPushSink

    directory = _dlms_headend(app, "hes.push").directory
    push = app.settings.hes.push
    decoder = PushDecoder(
        directory, refresh=directory.refresh, accept_unauthenticated=push.accept_unauthenticated
    )
    sink = MdmPushSink(
        app.uow_factory,
        app.settings.default_utility,
        HeadEndOutbox(app.settings),
        register_unknown=push.register_unknown,
        bus=app.bus,
    )
    return PushService(push, decoder, sink, meters=len(directory))


@contextmanager
def engine_worker(
    settings: Settings, *, concurrency: int | None = None, prefetch: int | None = None
) -> Iterator[EngineWorker]:
    """``amihub engine``: a head-end engine over the store (the store disposed after)."""
    from adapters.dlms.engine_worker import EngineWorker
    from adapters.dlms.headend import directory_from_settings

    directory = directory_from_settings(settings.hes)
    if directory is None:
        raise ConfigurationError("amihub engine needs [hes] manifest")
    with open_store(settings) as factory:
        yield EngineWorker(settings, factory, directory, concurrency=concurrency, prefetch=prefetch)
