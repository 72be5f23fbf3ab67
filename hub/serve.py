"""``amihub serve``: start the adapters enabled in the settings and wait for a signal.

Each adapter is a :class:`Service`. :data:`SERVICE_ALIASES` maps a settings
section (``[soap]``, ``[amqp]``, ``[sftp]``, ``[hes]``, ``[hes.push]``, ``[web]``) to the import
path of the factory that builds it from the bootstrapped app, as kombu maps transport
aliases; every factory is the composition root's (hub/bootstrap.py), which imports an
adapter only when it is enabled.
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from cim_schemas.errors import ConfigurationError

if TYPE_CHECKING:
    from hub.bootstrap import App

log = logging.getLogger("amihub.serve")


class Service(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


#: settings section -> "module:factory"; the factory takes the App and returns a Service
SERVICE_ALIASES: dict[str, str] = {
    "amqp": "hub.bootstrap:amqp_service",
    "soap": "hub.bootstrap:soap_service",
    "sftp": "hub.bootstrap:sftp_service",
    "hes": "hub.bootstrap:hes_service",
    "hes.push": "hub.bootstrap:push_service",
    "web": "hub.bootstrap:web_service",
}


def _load(path: str) -> Callable[[App], Service]:
    module, _, attr = path.partition(":")
    return cast("Callable[[App], Service]", getattr(importlib.import_module(module), attr))


def enabled_services(app: App) -> list[Service]:
    services: list[Service] = []
    for section in ("soap", "amqp", "sftp", "hes", "hes.push", "web"):
        settings: object = app.settings
        for part in section.split("."):  # "hes.push": the [hes.push] subsection
            settings = getattr(settings, part, None)
        if settings is None or not getattr(settings, "enabled", False):
            continue
        path = SERVICE_ALIASES.get(section)
        if path is None:
            raise ConfigurationError(
                f"[{section}] is enabled but this release has no {section} adapter"
            )
        services.append(_load(path)(app))
    return services


def run_services(app: App, stop_event: threading.Event | None = None) -> None:
    stop = stop_event or threading.Event()
    services = enabled_services(app)
    if not services:
        log.warning(
            "no adapter is enabled: set e.g. [amqp] enabled = true in amihub.toml "
            "(or AMIHUB_AMQP__ENABLED=true); nothing to serve"
        )
        return
    # what bootstrap built lives as long as the process: keep it out of the collector's
    # generations (measured: 13-33 % less CPU on bulk imports)
    gc.collect()
    gc.freeze()
    # larger, rarer young collections for a process that handles messages in rounds
    # ([gc_thresholds] in Settings); restored when the services stop (tests run them)
    thresholds = gc.get_threshold()
    gc.set_threshold(*app.settings.gc_thresholds)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    started: list[Service] = []
    try:
        for service in services:
            try:
                service.start()
            except OSError as exc:  # e.g. the port is in use: one clear line, no traceback
                raise ConfigurationError(
                    f"{service.name} cannot start: {exc.strerror or exc}"
                    + (f" ({exc.filename})" if exc.filename else "")
                ) from exc
            started.append(service)
            log.info("started %s", service.name)
        stop.wait()
    finally:
        for service in reversed(started):
            service.stop()
            log.info("stopped %s", service.name)
        gc.set_threshold(*thresholds)
