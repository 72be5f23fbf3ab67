"""``amihub serve`` with ``[hes.push] enabled = true``: the DLMS push listener.

The composition root builds it (``hub.bootstrap.push_service``, which ``hub/serve.py``
names for ``[hes.push]``). Meters push DataNotifications (plain or general-glo-ciphered)
to ``host:port`` over WRAPPER; :class:`hes.push.PushDecoder` checks them against the head-end's own
:class:`adapters.dlms.directory.MeterDirectory` (the ``[hes]`` manifest and key store:
the same object the head-end uses, which follows a changed key store file), and
:class:`adapters.dlms.push_writer.PushWriter` stores them in batches through
:class:`hub.push_store.MdmPushSink` with the head-end's outbox publisher: readings as
``created MeterReadings``, alarms and refused pushes (security events) as ``created
EndDeviceEvents``, in the transaction that stores them.

::

    [hes]
    manifest = "var/fleet.json"
    keystore = "var/keys.json"      # master_key from AMIHUB_HES__MASTER_KEY

    [hes.push]
    enabled = true
    host = "0.0.0.0"
    port = 4059
    max_frame_bytes = 4096
    idle_timeout = 120

Stopped (SIGTERM, SIGINT) it closes the port, then writes what it has received.
"""

from __future__ import annotations

import logging

from adapters.dlms.push_writer import PushWriter
from cim_schemas.errors import ConfigurationError, RecoverableError
from hes.push import PushDecoder, PushListener
from hub.push_store import MdmPushSink
from hub.settings import HesPushSettings

log = logging.getLogger("amihub.hes.push")


class PushService:
    """The listener and its writer as one :class:`hub.serve.Service`."""

    name = "hes.push"

    def __init__(
        self,
        settings: HesPushSettings,
        decoder: PushDecoder,
        sink: MdmPushSink,
        *,
        meters: int | None = None,
    ) -> None:
        self.settings = settings
        self.meters = meters
        self.sink = sink
        self.decoder = decoder
        self.writer = PushWriter(
            sink,
            batch_size=settings.batch_size,
            batch_wait=settings.batch_wait,
            queue_size=settings.queue_size,
        )
        self.listener = PushListener(
            decoder,
            self.writer.submit,
            self.writer.submit,
            settings.host,
            settings.port,
            max_frame_bytes=settings.max_frame_bytes,
            idle_timeout=settings.idle_timeout,
        )

    @property
    def port(self) -> int:
        """The port listened on (the one bound when ``port = 0``)."""
        return self.listener.port

    def seed_counters(self) -> int:
        """Load the push counters the store accepted into the decoder's tracker (the fast
        first check); the store still decides each batch. Returns how many."""
        try:
            counters = self.sink.stored_counters()
        except RecoverableError as exc:
            log.warning(
                "push counters not read from the store (%s: %s): the store still checks "
                "every push when it is stored",
                type(exc).__name__,
                exc,
            )
            return 0
        self.decoder.tracker.seed(counters)
        return len(counters)

    def start(self) -> None:
        s = self.settings
        seeded = self.seed_counters()
        self.writer.start()
        try:
            self.listener.start()
        except OSError as exc:
            self.writer.stop()
            raise ConfigurationError(
                f"[hes.push] cannot listen on {s.host}:{s.port}: {exc.strerror or exc}"
            ) from None
        log.info(
            "push listener on %s:%d (%s meters in the directory, %d stored counters, frames "
            "up to %d bytes, idle connections closed after %gs)",
            s.host,
            self.port,
            "?" if self.meters is None else self.meters,
            seeded,
            s.max_frame_bytes,
            s.idle_timeout,
        )

    def stop(self) -> None:
        self.listener.stop()
        self.writer.stop()
        t = self.writer.totals
        log.info(
            "push listener stopped: %d push(es) stored, %d refused, %d reading(s) stored, "
            "%d new event(s)%s",
            t.pushes,
            t.refused,
            t.readings_stored,
            t.events_new,
            f", {t.dropped} dropped (see the errors above)" if t.dropped else "",
        )
