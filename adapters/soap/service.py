"""``amihub serve`` with ``[soap] enabled = true``: the services on cheroot, plus delivery.

The composition root builds it (``hub.bootstrap.soap_service``, which
:data:`hub.serve.SERVICE_ALIASES` names). The service runs the WSGI gateway on
cheroot's thread pool (``threads`` workers), behind the request gate of
:mod:`adapters.soap.front` (a worker gets a request only once it has arrived,
``request_timeout``; HTTPS when ``tls_cert``/``tls_key`` are set, the handshake done
by the gate too) and one outbox dispatcher for the ``soap`` channel
(async replies and subscriber events, retried with backoff, dead-lettered after
``delivery_max_attempts``). With ``[soap] processes > 1`` it starts the extra server
processes (spawned) with the root's entry point for them (``hub.bootstrap.soap_worker``,
a module-level function: what spawn can pickle), which bootstraps the process's own
app and serves with :func:`serve_until_terminated`.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from sqlalchemy import Engine

from adapters.soap.auth import Authenticator
from adapters.soap.client import CHANNEL, SoapSender
from adapters.soap.front import GatedServer, GatedTLSAdapter
from adapters.soap.gateway import AccessLog, SoapGateway
from cim_schemas import schemas
from cim_schemas.errors import ConfigurationError
from hub.app import HubApp
from hub.outbox import OutboxDispatcher, RetryPolicy
from hub.security import UserDirectory, address_allowed
from hub.settings import Settings, SoapSettings


class SoapApp(HubApp, Protocol):
    """What the SOAP service uses of the bootstrapped hub: the hub's, and the store's
    engine (its pool size is checked against ``threads``)."""

    @property
    def engine(self) -> Engine: ...


#: the entry point of an extra server process (``[soap] processes``): module-level, so
#: that spawn can pickle it; it takes the settings and serves until SIGTERM
WorkerMain = Callable[[Settings], None]

log = logging.getLogger("amihub.soap")

#: seconds a stop waits for running requests (cheroot's shutdown_timeout of 5 s
#: included) before it leaves them to end with the process
STOP_GRACE: Final = 8.0


class SoapService:
    name = "soap"

    def __init__(
        self,
        app: SoapApp,
        settings: SoapSettings | None = None,
        *,
        worker: bool = False,
        worker_main: WorkerMain | None = None,
    ) -> None:
        """``worker``: this is an extra server process (serves, does not deliver);
        ``worker_main``: the entry point of the extra processes, required for
        ``[soap] processes > 1`` (the composition root's ``hub.bootstrap.soap_worker``)."""
        self.app = app
        self.settings = settings or app.settings.soap
        self.worker = worker
        self.worker_main = worker_main
        self._children: list[Any] = []
        s = self.settings
        if (s.tls_cert is None) != (s.tls_key is None):
            raise ConfigurationError("[soap] needs both tls_cert and tls_key, or neither")
        if s.processes > 1 and s.port == 0:
            raise ConfigurationError("[soap] processes > 1 needs a fixed port")
        if s.processes > 1 and not worker and worker_main is None:
            raise ConfigurationError(
                "[soap] processes > 1: the service needs the entry point of its extra "
                "processes (built by hub.bootstrap.soap_service)"
            )
        users = UserDirectory(app.settings.users)
        allowed = [pattern for user in app.settings.users for pattern in user.reply_addresses]
        for noun, urls in s.subscribers.items():
            for url in urls:
                if not address_allowed(allowed, url):
                    raise ConfigurationError(
                        f"[soap.subscribers] {noun}: {url!r} matches no user's reply_addresses "
                        "([[users]] reply_addresses lists where amihub may call)"
                    )
        if not users and not s.allow_anonymous:
            log.warning("[soap] no [[users]] configured: every call will be refused")
        pool_size = getattr(app.engine.pool, "size", None)
        if callable(pool_size) and pool_size() < s.threads:
            log.warning(
                "[soap] threads = %d but the database pool keeps %d connections: under load "
                "connections are opened and closed all the time (adapters/sql/engine.py)",
                s.threads,
                pool_size(),
            )
        self.authenticator = Authenticator(
            users, token_max_age=s.token_max_age, allow_anonymous=s.allow_anonymous
        )
        self.sender = SoapSender(timeout=s.delivery_timeout)
        self.dispatcher = OutboxDispatcher(
            app.uow_factory,
            CHANNEL,
            send=self.sender.send,
            policy=RetryPolicy(
                max_attempts=s.delivery_max_attempts,
                first_delay=s.delivery_first_delay,
                max_delay=s.delivery_max_delay,
            ),
            poll_interval=s.delivery_poll_interval,
        )
        self.gateway = SoapGateway(
            app.pipeline,
            app.uow_factory,
            self.authenticator,
            max_body_bytes=s.max_body_bytes,
            public_url=s.public_url,
            enqueue=self._enqueue,
            journal=app.message_journal,
        )
        wsgi_app: Any = AccessLog(self.gateway) if s.access_log else self.gateway
        self.server = GatedServer(  # workers get whole requests only (adapters/soap/front.py)
            (s.host, s.port),
            wsgi_app,
            numthreads=s.threads,
            timeout=int(max(1, s.socket_timeout)),
            server_name="amihub",
            reuse_port=s.processes > 1,
            request_timeout=s.request_timeout,
            buffer_bytes=min(s.request_buffer_bytes, s.max_body_bytes),
            max_body=s.max_body_bytes,
        )
        if s.tls_cert is not None and s.tls_key is not None:
            self.server.ssl_adapter = GatedTLSAdapter(str(s.tls_cert), str(s.tls_key))
        self._thread: threading.Thread | None = None

    # -- outbox --------------------------------------------------------------------------

    def _enqueue(
        self,
        destination: str,
        verb: str,
        noun: str,
        service: str,
        body: bytes,
        headers: dict[str, str],
        correlation_id: str | None,
    ) -> None:
        with self.app.uow_factory() as uow:
            uow.outbox.enqueue(
                channel=CHANNEL,
                destination=destination,
                verb=verb,
                noun=noun,
                body=body,
                headers=headers,
                correlation_id=correlation_id,
            )
            uow.commit()
        self.dispatcher.wake()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.server.ssl_adapter is not None else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    def start(self) -> None:
        # Compile the message schema here, in the starting thread, before any worker
        # thread validates: a first compile inside a worker under concurrent load was
        # seen to leave a schema that refused every valid message ("No matching global
        # declaration available for the validation root") for the life of the process.
        schemas.message_schema()
        _in_daemon_thread(self.server.prepare)
        self._thread = threading.Thread(target=self.server.serve, name="soap-server", daemon=True)
        self._thread.start()
        if self.worker:
            return
        self.dispatcher.start()
        context = multiprocessing.get_context("spawn")
        for n in range(1, self.settings.processes):
            child = context.Process(
                target=self.worker_main, args=(self.app.settings,), name=f"soap-{n}", daemon=True
            )
            child.start()
            self._children.append(child)
        log.info("SOAP services at %s/ws/ (%d threads)", self.url, self.settings.threads)

    def stop(self) -> None:
        for child in self._children:
            child.terminate()
        for child in self._children:
            child.join(10)
        self._children.clear()
        if not self.worker:
            self.dispatcher.stop()
        # cheroot gives running requests shutdown_timeout, then closes their sockets and
        # waits for them without a bound: a request waiting for the database would hold
        # the stop (and SIGTERM) until its statement ends. Wait STOP_GRACE at most; the
        # worker threads are daemons and end with the process.
        stopper = threading.Thread(target=self.server.stop, name="soap-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_GRACE)
        if stopper.is_alive():
            log.warning(
                "SOAP requests still running %.0f s after the stop: not waiting for them",
                STOP_GRACE,
            )
        if self._thread is not None:
            self._thread.join(1)
            self._thread = None


def _in_daemon_thread(prepare: Callable[[], None]) -> None:
    """Run cheroot's ``prepare`` (bind, start the worker threads) in a daemon thread,
    so that its worker threads are daemons too (a thread inherits it): a request stuck
    in the database cannot keep the process alive after a stop. Errors (the port in
    use) are raised here."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            prepare()
        except BaseException as exc:  # handed to the caller
            failures.append(exc)

    thread = threading.Thread(target=run, name="soap-prepare", daemon=True)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


def serve_until_terminated(service: SoapService) -> None:
    """An extra server process's life (``[soap] processes``): serve until SIGTERM, then
    stop. The process's app is the caller's (hub.bootstrap.soap_worker)."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    stop.wait()
    service.stop()
