"""The one place where amihub is wired together: the composition root, the only
module of the hub that imports adapters (``.importlinter``).

``bootstrap(settings)`` builds the engine, the unit-of-work factory, the bus
with the domain handlers, the route table and the pipeline. The services of
``amihub serve`` (:data:`hub.serve.SERVICE_ALIASES`), the head-end's commands and the
command line's uses of an adapter (migrations, pushes, worker processes, the demo's
in-process client and simulated meters) are built by the functions below; adapters
receive the resulting :class:`App` (typed :class:`hub.app.HubApp`) and never import
this module. Adapters are imported when used; nothing connects at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import click
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
    from pathlib import Path

    from adapters.amqp.service import AmqpService
    from adapters.dlms.engine_worker import EngineWorker
    from adapters.dlms.headend import DlmsHeadEnd
    from adapters.dlms.push_service import PushService
    from adapters.dlms.service import HesService
    from adapters.memory import MemoryAdapter
    from adapters.sftp.client import PushReceipt
    from adapters.sftp.service import SftpService
    from adapters.soap.service import SoapService
    from adapters.web.service import WebService
    from hes.engine import MeterTarget
    from hes.simulator.fleet import Fleet
    from hub.settings import SftpPushTargetSettings

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


# -- the services of `amihub serve` (hub/serve.py SERVICE_ALIASES) -----------------------


def soap_service(app: App, *, worker: bool = False) -> SoapService:
    """``[soap]``: the SOAP services; with ``[soap] processes > 1`` the first process
    starts the others with :func:`soap_worker`."""
    from adapters.soap.service import SoapService

    return SoapService(app, worker=worker, worker_main=soap_worker)


def soap_worker(settings: Settings) -> None:
    """An extra SOAP server process (``[soap] processes``, started by spawn: a module-level
    function, so picklable): its own app and store connections, the same port
    (SO_REUSEPORT); outbox delivery stays with the first process."""
    from adapters.soap.service import serve_until_terminated
    from hub.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    app = bootstrap(settings)
    try:
        serve_until_terminated(soap_service(app, worker=True))
    finally:
        app.close()


def amqp_service(app: App) -> AmqpService:
    """``[amqp]``: the consumer and the outbox publisher, with the mapping importer for
    the ``amihub-mapping`` header (the mappings of ``[amqp] mappings_dir``)."""
    from adapters.amqp.service import AmqpService
    from hub.mapped import mapping_importer
    from mappings.load import BUILTIN_DIR, load_dir

    catalog = load_dir(app.settings.amqp.mappings_dir or BUILTIN_DIR)
    return AmqpService(app, importer=mapping_importer(app.pipeline, catalog))


def sftp_service(app: App) -> SftpService:
    """``[sftp]``: the embedded server and the inbox watcher."""
    from adapters.sftp.service import SftpService

    return SftpService(
        app.settings.sftp,
        app.uow_factory,
        bus=app.bus,
        default_utility=app.settings.default_utility,
        process=app.pipeline.process,
        journal=app.message_journal,
    )


def web_service(app: App) -> WebService:
    """``[web]``: the operator interface."""
    from adapters.web.service import WebService

    return WebService(app)


# -- what the command line uses of the adapters ---------------------------------------------


def store_revision(settings: Settings) -> str | None:
    """The migration revision the store is at (None: not migrated): ``amihub db upgrade``."""
    from adapters.sql.migrate import current_revision

    return current_revision(settings.database_url)


def push_export(target: SftpPushTargetSettings, path: Path) -> PushReceipt:
    """Push a file to a partner's SFTP server (``amihub export --push``)."""
    from adapters.sftp.push import push

    return push(target, path)


def serve_workers(count: int, env: dict[str, str]) -> int:
    """``amihub serve --workers N``: N serve processes, supervised until SIGINT/SIGTERM;
    returns the exit code."""
    from adapters.amqp.workers import run_workers

    return run_workers(count, env)


def memory_adapter(app: App) -> MemoryAdapter:
    """The in-process client of the pipeline (``amihub demo``)."""
    from adapters.memory import MemoryAdapter

    return MemoryAdapter(app.pipeline)


def fleet_directory(fleet: Fleet) -> Mapping[str, MeterTarget]:
    """The meters of a simulated fleet, for ``bootstrap(meters=...)`` (``amihub demo``)."""
    from adapters.dlms import MeterDirectory  # imports gurux

    return MeterDirectory.from_fleet(fleet)


# -- the services and commands of the head-end: their wiring, here and nowhere else ---------


def engine_command() -> click.Command:
    """``amihub engine`` (adapters/dlms/engine_worker.py), for hub/cli.py LAZY_COMMANDS."""
    from adapters.dlms.engine_worker import engine

    return engine


def keys_command() -> click.Command:
    """``amihub keys`` (adapters/dlms/keys_cli.py), for hub/cli.py LAZY_COMMANDS."""
    from adapters.dlms.keys_cli import keys

    return keys


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
