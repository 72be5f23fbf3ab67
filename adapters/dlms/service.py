"""``amihub serve`` with ``[hes] enabled = true``: the control-job scheduler.

On start, the scheduled jobs recorded in the last ``recover_days`` that neither
finished nor were cancelled are taken up again (:meth:`hub.headend.ControlJournal.pending`);
then a thread runs :meth:`DlmsHeadEnd.run_due` every ``tick_seconds``.

(``hub/serve.py`` starts the sections it lists; it needs ``"hes":
"adapters.dlms.service:build"`` in ``SERVICE_ALIASES`` and ``"hes"`` in its loop.)
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from adapters.dlms.headend import DlmsHeadEnd, JobExists
from hub.errors import AmihubError, ConfigurationError
from hub.headend import ControlJournal, UnknownJob

if TYPE_CHECKING:
    from hub.bootstrap import App

log = logging.getLogger("amihub.hes")


def recover(headend: DlmsHeadEnd, journal: ControlJournal, days: int) -> int:
    """Hold again the jobs still scheduled in the store; returns how many."""
    taken = 0
    for request in journal.pending(datetime.now(UTC) - timedelta(days=days)):
        try:
            headend.submit(request)
        except JobExists:
            continue
        except UnknownJob as exc:
            log.warning("scheduled control job %s not taken up: %s", request.job_id, exc)
            continue
        taken += 1
    if taken:
        log.info("took up %d scheduled control job(s) recorded before the restart", taken)
    return taken


class HesService:
    name = "hes"

    def __init__(self, app: App) -> None:
        if not isinstance(app.headend, DlmsHeadEnd) or app.journal is None:
            raise ConfigurationError("[hes] is enabled but no [hes] manifest is configured")
        self.headend = app.headend
        self.journal = app.journal
        self.days = app.settings.hes.recover_days

    def start(self) -> None:
        try:
            recover(self.headend, self.journal, self.days)
        except AmihubError:
            log.exception("could not take up the scheduled control jobs")
        self.headend.start()

    def stop(self) -> None:
        self.headend.close()


def build(app: App) -> HesService:
    return HesService(app)
