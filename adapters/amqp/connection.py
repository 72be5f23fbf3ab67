# mypy: disable-error-code="no-untyped-call"
"""Broker connections from settings: URL, credentials, TLS, heartbeats, reconnection backoff."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kombu.connection import Connection

from adapters.amqp.buffered import BufferedTransport
from cim_schemas.errors import ConfigurationError, TransportUnavailable
from hub.settings import AmqpSettings
from mdm.backoff import JITTER
from mdm.backoff import Backoff as RetryBackoff

log = logging.getLogger("amihub.amqp")

#: how often the in-process transport polls its queues (seconds); the default is 1 s
MEMORY_POLLING_INTERVAL = 0.005


def ssl_options(settings: AmqpSettings) -> dict[str, Any] | bool:
    """py-amqp TLS options for an ``amqps://`` URL; the host name is always checked."""
    tls = settings.tls
    if tls is None:
        tls_opts: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED}
        host = urlsplit(settings.url).hostname
        if host:
            tls_opts["server_hostname"] = host
        return tls_opts
    if (tls.certfile is None) != (tls.keyfile is None):
        raise ConfigurationError("[amqp.tls] needs both certfile and keyfile, or neither")
    opts: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE}
    if tls.ca_certs:
        opts["ca_certs"] = tls.ca_certs
    if tls.certfile:
        opts["certfile"] = tls.certfile
        opts["keyfile"] = tls.keyfile
    if tls.verify:
        opts["server_hostname"] = tls.server_hostname or urlsplit(settings.url).hostname
    return opts


def make_connection(settings: AmqpSettings, name: str = "amihub") -> Connection:
    """A kombu connection (not yet connected) for the settings.

    ``name`` is shown as the connection name in RabbitMQ's management UI and
    ``rabbitmqctl list_connections client_properties``, with host and pid.
    """
    url = settings.url
    scheme = urlsplit(url).scheme
    kwargs: dict[str, Any] = {"connect_timeout": settings.connect_timeout}
    if scheme == "memory":
        kwargs["transport_options"] = {"polling_interval": MEMORY_POLLING_INTERVAL}
    else:
        kwargs["heartbeat"] = settings.heartbeat
        label = f"{name} {socket.gethostname()}:{os.getpid()}"
        kwargs["transport_options"] = {"client_properties": {"connection_name": label}}
        if settings.password is not None:
            kwargs["password"] = settings.password.get_secret_value()
        if scheme == "amqps":
            kwargs["ssl"] = ssl_options(settings)
        elif settings.tls is not None:
            raise ConfigurationError("[amqp.tls] is set but the URL is not amqps://")
        if scheme == "amqp" and settings.buffered_reader:
            # frames read in large chunks, served from a buffer (adapters/amqp/buffered.py)
            kwargs["transport"] = BufferedTransport
    return Connection(url, **kwargs)


def safe_url(connection: Connection) -> str:
    """The URL without its password, for logs."""
    return str(connection.as_uri(include_password=False))


class Backoff:
    """Consecutive failures counted against the one backoff policy (:mod:`mdm.backoff`);
    :meth:`wait` returns False once stopped."""

    def __init__(
        self, first: float, maximum: float, stop: threading.Event, jitter: float = JITTER
    ) -> None:
        self.policy = RetryBackoff(first, maximum, jitter)
        self.stop = stop
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return self.policy.delay(self.failures)

    def wait(self) -> bool:
        return not self.stop.wait(self.next_delay())


def retry_backoff(settings: AmqpSettings) -> RetryBackoff:
    """The wait before a recoverably failed message is tried again (``retry_delay``,
    ``retry_max_delay``)."""
    return RetryBackoff(settings.retry_delay, settings.retry_max_delay)


def reconnecting(
    name: str,
    settings: AmqpSettings,
    stop: threading.Event,
    session: Callable[[Connection, Backoff], None],
    cleanup: Callable[[Connection], None],
) -> None:
    """Run ``session`` on a fresh connection until ``stop`` is set, reconnecting with
    backoff when the broker drops or refuses it (and after an unexpected error: a bug
    must not end consumption silently). ``cleanup`` runs after every session; what was
    not acknowledged is delivered again by the broker."""
    backoff = Backoff(settings.reconnect_delay, settings.reconnect_max_delay, stop)
    while not stop.is_set():
        connection = make_connection(settings, name)
        errors = (
            *connection.connection_errors,
            *connection.channel_errors,
            OSError,
            TransportUnavailable,
        )
        try:
            session(connection, backoff)
        except errors as exc:
            delay = backoff.next_delay()
            log.warning(
                "%s: connection to %s lost or refused (%s: %s); reconnecting in %.1f s",
                name,
                safe_url(connection),
                type(exc).__name__,
                exc,
                delay,
            )
            if stop.wait(delay):
                break
        except Exception:
            delay = backoff.next_delay()
            log.exception("%s: unexpected error; reconnecting in %.1f s", name, delay)
            if stop.wait(delay):
                break
        finally:
            cleanup(connection)
            with contextlib.suppress(*errors):
                connection.release()
