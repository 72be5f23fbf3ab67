"""``amihub serve`` with ``[hes] enabled = true``: the head-end scheduler.

A thread runs :meth:`DlmsHeadEnd.run_due` every ``tick_seconds``: it claims the due
jobs of the head-end job table (control jobs, read schedules) with a lease, runs them
in this process or publishes them to ``amihub engine`` processes (``[hes] dispatch =
"amqp"``), and records their outcomes. Nothing is taken up "after a restart": the
job table is the source of truth, and a job whose scheduler died is claimed again
once its lease (``[hes] lease_seconds``) expired. Several hub processes may run the
scheduler on one PostgreSQL store: a job is claimed by one of them.

Before the first tick, ``[[hes.read_schedules]]`` are written to the job table
(:func:`hub.configured_schedules.sync_read_schedules`: new ones inserted,
changed ones updated, removed ones cancelled, hub schedules untouched); an entry that
cannot be applied stops the start with a :class:`ConfigurationError` naming it.

The composition root builds it (``hub.bootstrap.hes_service``, which ``hub/serve.py``
names for ``[hes]``).
"""

from __future__ import annotations

import logging

from adapters.dlms.headend import DlmsHeadEnd
from hub.configured_schedules import sync_read_schedules
from hub.settings import Settings
from mdm.ports import UnitOfWorkFactory

log = logging.getLogger("amihub.hes")


class HesService:
    name = "hes"

    def __init__(
        self, headend: DlmsHeadEnd, uow_factory: UnitOfWorkFactory, settings: Settings
    ) -> None:
        self.headend = headend
        self.uow_factory = uow_factory
        self.settings = settings

    def start(self) -> None:
        settings = self.settings
        sync_read_schedules(
            self.uow_factory,
            settings.hes.read_schedules,
            default_utility=settings.default_utility,
            addressable=self.headend.addressable,
            now=self.headend.clock(),
        )
        log.info("head-end scheduler %s started", self.headend.scheduler.owner)
        self.headend.start()

    def stop(self) -> None:
        self.headend.close()
